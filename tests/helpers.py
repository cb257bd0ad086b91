"""Builders the tests share: small sorting rows, a fast CPU configuration of the tiny preset, a self-play trainer on
them, a callback that stops training after a given step, and a `RunContext` from real parts. They live in
`tspin_trl.demo.builders` (the fault campaign, `bench/faults/`, builds the same runs) and are re-exported here, so
tests import them `from helpers import ...`."""

from tspin_trl.demo.builders import (
    SELF_PLAY_SETTINGS,
    StopAfter,
    make_config,
    make_context,
    model_logps,
    self_play_trainer,
    sorting_rows,
)


__all__ = [
    "SELF_PLAY_SETTINGS",
    "StopAfter",
    "make_config",
    "make_context",
    "model_logps",
    "self_play_trainer",
    "sorting_rows",
]
