"""Timing: contenders run on identical models, data, batch sizes and sequence lengths; after a warm-up they are run in
alternation (A, B, C, then B, C, A, ...: the order rotates every round), and medians and min-max are reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    synchronize()
    start = time.perf_counter()
    out = fn()
    synchronize()
    return time.perf_counter() - start, out


def alternate(contenders: dict[str, Callable[[int], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every contender `warmup` times, then `repeats` rounds in alternation, the order rotating each round.

    Each contender is called with the round index (`-1 - w` during warm-up). Returns the seconds of every timed call.
    """
    names = list(contenders)
    for w in range(warmup):
        for name in names:
            contenders[name](-1 - w)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, _ = timed(lambda name=name, r=r: contenders[name](r))
            times[name].append(seconds)
    return times


@dataclass
class Summary:
    median: float
    low: float
    high: float
    n: int
    values: list[float] = field(default_factory=list)

    def fmt(self, scale: float = 1.0, digits: int = 1) -> str:
        return f"{self.median * scale:.{digits}f} ({self.low * scale:.{digits}f}-{self.high * scale:.{digits}f})"

    def to_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n, "values": self.values}


def summarize(values: Sequence[float]) -> Summary:
    values = list(values)
    return Summary(statistics.median(values), min(values), max(values), len(values), values)


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> Summary:
    """Ratios of paired measurements (round by round), so slow phases of a noisy machine cancel out."""
    return summarize([a / b for a, b in zip(numerator, denominator)])
