"""The tests of tspin-trl, by layer: `unit/` (one file per product module, named after it), `runs/` (in-process
training runs), `launches/` (subprocesses: the CLI, accelerate launches, engines, the matrix), `faults/` (the fault
campaign), and `support/` (the builders and scripts they share). A package, so that every test module has a unique
name (`tests.unit.test_data`) and any one file runs alone: `pytest tests/unit/test_data.py`."""
