"""Unit tests: `test_<module>.py` tests the module `tspin_trl/<module>.py` (a subpackage's module with its prefix:
`test_self_play_identity.py` for `tspin_trl/self_play/identity.py`) directly, without a training step (a `train()` here
stops before its first step; `test_plot.py` plots a small run it trains); plus the repository-wide checks
(`test_structure.py`, `test_doctests.py`, `test_docs.py`)."""
