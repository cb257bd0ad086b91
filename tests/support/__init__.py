"""What the tests share: builders of small self-play runs (`builders.py`: sorting rows, a fast CPU configuration of the
tiny preset, a self-play trainer, a tiny Mixture-of-Experts model, `StopAfter`, a `RunContext` from real parts, a
run's iteration files), DPO's metric names, tool-call data and tokenizers (`tools.py`), local HTTP servers where a vLLM
server is expected (`servers.py`), the docs' code blocks (`docs.py`), pairwise covering arrays (`covering.py`, for the
matrix) and the scripts that launches run as subprocesses (`scripts/`). The fault campaign (`tests/faults/`) builds its
runs with the same builders and servers.

Tests import them as `from tests.support import make_config, ...`."""

from pathlib import Path

from .builders import (
    SELF_PLAY_SETTINGS,
    CountGenerate,
    StopAfter,
    iteration_rows,
    make_config,
    make_context,
    model_logps,
    self_play_trainer,
    sorting_rows,
    tiny_moe,
)


ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder."""
SCRIPTS = ROOT / "tests" / "support" / "scripts"
"""The scripts tests run as subprocesses."""
DPO_METRIC_NAMES = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
"""DPO's metric names, which T-SPIN logs too (chosen: the real response, rejected: the synthetic one)."""

__all__ = [
    "DPO_METRIC_NAMES",
    "ROOT",
    "SCRIPTS",
    "SELF_PLAY_SETTINGS",
    "CountGenerate",
    "StopAfter",
    "iteration_rows",
    "make_config",
    "make_context",
    "model_logps",
    "self_play_trainer",
    "sorting_rows",
    "tiny_moe",
]
