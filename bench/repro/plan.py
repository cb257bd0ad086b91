"""Which runs the reproduction makes, in which order, decided by rules fixed before the run (stated on the page).

A run is one row (`runs.METHODS`) at one learning rate with one seed. The planner hands out the runs whose inputs are
known, highest priority first, and learns from each finished run:

1. **The grid** (priority 0): every grid row at every rate of its kind's starting grid, with the first seed. When a
   row's grid is complete, its rate is the one with the lowest validation forward KL after the last iteration
   ([`choose`]); if that rate is at an edge of the row's grid, the next rate of the 1-3 ladder beyond that edge is
   added ([`extension`]), at most `extend_down` times downwards and `extend_up` times upwards, and not downwards
   once the lowest rate's run ends within `flat_kl` nats of the warm start on the validation split (a still lower
   rate moves the model less, and cannot be told from not training).
2. **The chosen rate with every seed** (priority 1), once a row's grid is final.
3. **Equal rates** (priority 2): the rows of `equal_rows` at every rate of `equal_lrs`, with every seed.
4. **Annealed rows** (priority 3): at `anneal_lr` with every seed, and the row each is compared with at that rate.
5. **Prompt selection** (priority 4): at its base row's chosen rate with every seed, once that rate is final.

Rows whose `TSPINConfig` fields are missing, or that are switched off, are never planned; the page says which and why.
Nothing here imports torch: the rules are testable on their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


KL_FLOOR = 0.02  # nats: the noise floor of the page's rules (also in analysis.py)
PRIORITY = {"grid": 0, "extension": 0, "seeds": 1, "equal": 2, "anneal": 3, "selection": 4}


@dataclass(frozen=True, order=True)
class Job:
    """One run to make: `method` at learning rate `lr` with `seed`; `reason` says which rule asked for it."""

    priority: int
    order: int
    method: str = field(compare=False)
    lr: float = field(compare=False)
    seed: int = field(compare=False)
    reason: str = field(compare=False)

    @property
    def key(self) -> tuple[str, float, int]:
        return (self.method, self.lr, self.seed)


def ladder(lr: float, direction: int) -> float:
    """The next rate of the 1-3 ladder (..., 1e-5, 3e-5, 1e-4, 3e-4, ...) below (`direction` -1) or above (+1) `lr`."""
    exponent = math.floor(math.log10(lr))
    candidates = sorted(float(f"{m}e{e}") for e in range(exponent - 2, exponent + 3) for m in (1, 3))
    if direction < 0:
        return max(c for c in candidates if c < lr * (1 - 1e-9))
    return min(c for c in candidates if c > lr * (1 + 1e-9))


def choose(grid: Mapping[float, float]) -> float | None:
    """The rate with the lowest validation KL (ties: the lower rate); NaN results are never chosen."""
    options = {lr: kl for lr, kl in grid.items() if kl == kl}
    return min(options, key=lambda lr: (options[lr], lr)) if options else None


def extension(grid: Mapping[float, float], initial: Sequence[float], warm_kl: float, extend_down: int, extend_up: int,
              flat_kl: float = KL_FLOOR) -> tuple[float | None, str]:  # fmt: skip
    """The rate to add to a row's grid (None when the grid is final) and, for a final grid, why it is final.

    Args:
        grid: `{lr: validation KL after the last iteration}` of the row's runs with the first seed.
        initial: the row's starting grid (rates below its minimum are downward extensions, above its maximum upward).
        warm_kl: the warm start's validation KL.
        extend_down, extend_up: the most rates that may be added below and above the starting grid.
        flat_kl: no downward extension once the lowest rate's run ends within this many nats of the warm start.
    """
    chosen = choose(grid)
    if chosen is None:
        return None, "no finished run"
    rates = sorted(grid)
    down = sum(lr < min(initial) * (1 - 1e-9) for lr in rates)
    up = sum(lr > max(initial) * (1 + 1e-9) for lr in rates)
    if len(rates) == 1:
        return None, "one rate only (no grid)"
    if chosen == rates[0]:
        if abs(grid[chosen] - warm_kl) <= flat_kl:
            return None, (f"lowest rate; its run ends within {flat_kl:g} nats of the warm start, so lower rates "
                          "cannot be told from not training")  # fmt: skip
        if down >= extend_down:
            return None, f"lowest rate after {down} downward extension(s), the limit"
        return ladder(chosen, -1), ""
    if chosen == rates[-1]:
        if up >= extend_up:
            return None, f"highest rate after {up} upward extension(s), the limit"
        return ladder(chosen, +1), ""
    return None, "interior"


@dataclass
class RowState:
    """Where one grid row stands: its starting grid, the rates asked for so far, and once final its rate and why."""

    initial: list[float]
    rates: list[float] = field(default_factory=list)  # the starting grid and the extensions asked for so far
    final: bool = False
    status: str = ""
    chosen: float | None = None


class Planner:
    """The runs to make for `setting` (a `runs.Setting` or its dict), given the rows that can run.

    Args:
        setting: the setting (`sft_lrs`, `selfplay_lrs`, `seeds`, `extend_down`, `extend_up`, `equal_rows`,
            `equal_lrs`, `anneal_lr`).
        methods: `{key: runs.Method}` of every row.
        rows: the keys of the rows that run (available and not switched off), in the page's order.
        warm_validation_kl: the warm start's validation forward KL (the flat-stop rule).
    """

    def __init__(self, setting: Any, methods: Mapping[str, Any], rows: Sequence[str], warm_validation_kl: float):
        self.s = setting if isinstance(setting, dict) else setting.to_dict()
        self.methods = methods
        self.rows = list(rows)
        self.warm_kl = warm_validation_kl
        self.results: dict[tuple[str, float, int], dict] = {}
        self.started: set[tuple[str, float, int]] = set()
        self.skipped: dict[tuple[str, float, int], str] = {}
        self.reasons: dict[tuple[str, float, int], str] = {}
        self._order: dict[tuple[str, float, int], int] = {}
        self.state = {
            m: RowState(initial=list(self.s["sft_lrs"] if methods[m].kind == "sft" else self.s["selfplay_lrs"]))
            for m in self.rows
            if methods[m].rate_rule == "grid"
        }

    @property
    def seed0(self) -> int:
        return self.s["seeds"][0]

    # ---- bookkeeping -------------------------------------------------------------------------------------------------

    def record(self, run: dict) -> None:
        """Learn a finished run (or one loaded from an earlier, resumed work folder)."""
        key = (run["method"], run["lr"], run["seed"])
        self.results[key] = run
        self.started.add(key)

    def start(self, job: Job) -> None:
        self.started.add(job.key)

    def skip(self, job: Job, why: str) -> None:
        """`job` will not run (`why`: e.g. the deadline); rows waiting for it end their grid without it."""
        self.started.add(job.key)
        self.skipped[job.key] = why

    def abandon(self, why: str) -> None:
        """Stop: every started run without a result, and every run that could still start, is skipped for `why`."""
        for key in self.started:
            if key not in self.results and key not in self.skipped:
                self.skipped[key] = why
        while ready := self.ready():  # skipping can finalize rows, which ready more jobs
            for job in ready:
                self.skip(job, why)

    def chosen(self, m: str) -> float | None:
        """A grid row's rate once its grid is final, else None."""
        st = self.state.get(m)
        return st.chosen if st is not None and st.final else None

    # ---- the rules ---------------------------------------------------------------------------------------------------

    def _update_rows(self) -> None:
        for m, st in self.state.items():
            if st.final:
                continue
            if not st.rates:
                st.rates = list(st.initial)
            mine = {(m, lr, self.seed0) for lr in st.rates}
            if any(k not in self.started for k in mine):
                continue  # its grid has not all started
            if any(k not in self.results and k not in self.skipped for k in mine):
                continue  # a run of its grid is still going
            grid = {k[1]: self.results[k]["validation_kl"] for k in mine if k in self.results}
            skipped = sorted(k for k in mine if k in self.skipped)
            if skipped:
                st.final, st.chosen = True, choose(grid)
                st.status = f"grid incomplete ({self.skipped[skipped[0]]})"
                continue
            nxt, why = extension(grid, st.initial, self.warm_kl, self.s["extend_down"], self.s["extend_up"])
            if nxt is None:
                st.final, st.chosen, st.status = True, choose(grid), why
            else:
                st.rates.append(nxt)

    def _wanted(self) -> Iterable[tuple[str, float, int, str]]:
        seeds = self.s["seeds"]
        for m, st in self.state.items():
            for lr in st.rates or st.initial:
                yield m, lr, self.seed0, "grid" if lr in st.initial else "extension"
        for m, st in self.state.items():
            if st.final and st.chosen is not None:
                for seed in seeds:
                    yield m, st.chosen, seed, "seeds"
        for m in self.s["equal_rows"]:
            if m in self.rows:
                for lr in self.s["equal_lrs"]:
                    for seed in seeds:
                        yield m, lr, seed, "equal"
        for m in self.rows:
            method = self.methods[m]
            if method.rate_rule == "anneal":
                for seed in seeds:
                    yield m, self.s["anneal_lr"], seed, "anneal"
                    if method.compare_with in self.rows:
                        yield method.compare_with, self.s["anneal_lr"], seed, "anneal"
            elif method.rate_rule == "chosen" and self.chosen(method.compare_with) is not None:
                for seed in seeds:
                    yield m, self.chosen(method.compare_with), seed, "selection"

    def ready(self) -> list[Job]:
        """The runs that can start now and have not started, highest priority first."""
        self._update_rows()
        jobs = {}
        for m, lr, seed, reason in self._wanted():
            key = (m, lr, seed)
            if key in self.started or key in jobs:
                continue
            self.reasons.setdefault(key, reason)
            order = self._order.setdefault(key, len(self._order))
            jobs[key] = Job(PRIORITY[self.reasons[key]], order, m, lr, seed, self.reasons[key])
        return sorted(jobs.values())

    def finished(self) -> bool:
        """No run is going and none can start."""
        going = any(k not in self.results and k not in self.skipped for k in self.started)
        return not going and not self.ready()

    def summary(self) -> dict[str, Any]:
        """Per grid row: the chosen rate and why its grid ended there; every run's reason; the skipped runs and why."""
        self._update_rows()
        return {
            "rows": {
                m: {
                    "initial": st.initial,
                    "rates": sorted(st.rates),
                    "chosen": st.chosen,
                    "final": st.final,
                    "status": st.status,
                }
                for m, st in self.state.items()
            },  # fmt: skip
            "reasons": [{"method": k[0], "lr": k[1], "seed": k[2], "reason": r} for k, r in self.reasons.items()],
            "skipped": [{"method": k[0], "lr": k[1], "seed": k[2], "why": w} for k, w in self.skipped.items()],
        }
