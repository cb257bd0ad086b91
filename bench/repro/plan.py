"""Which runs the reproduction makes, in which order, decided by rules fixed before the run (stated on the page).

A run is one row (`runs.METHODS`) at one learning rate with one seed; a warm start is one seed's model before any
row. Learning rates live on a ladder of factor 3 anchored at 1e-4 ([`rate`]: index k is 1e-4 x 3^k), so "3x a
row's chosen rate" is the next rung. The planner hands out the runs whose inputs are known, highest priority first,
and learns from each finished run:

0. **Warm starts**, one per seed (every run of a seed waits for its warm start).
1. **The preconditions' rows** (SFT 25% and SFT 100%): their grids, then every seed at the chosen rate. Then the
   preconditions are measured (`gate`, from `analysis.preconditions`) and printed; if one fails, nothing else runs
   and the page says the claims are untestable, and why.
2. **The other grid rows' grids**, with the first `grid_seeds` seeds.
3. **Every grid row at its chosen rate** with its seeds (`Setting.seeds_of`: 5 or 3).
4. **The stray rate**: SPIN and T-SPIN at 3x their chosen rates, every seed.
5. **Beyond the paper**: prompt selection at T-SPIN's chosen rate; the annealed rows at their base row's chosen
   rate and at its stray rate; each with its seeds (paired with its base row).

The grid rule ([`extension`]): a row's rate is the one with the lowest mean validation forward KL after the last
iteration over the grid seeds (ties: the lower rate; NaN never). If it is the lowest rate of the row's grid and that
rate *does not train* (its mean validation KL is within `flat_kl` of the warm starts'), the grid ends and the row is
inconclusive; otherwise the next rate beyond the edge is added, at most `extend_limit` times per side; a row still at
an edge after that is inconclusive too. Nothing here imports torch: the rules are testable on their own.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


ANCHOR = 1e-4
FLAT_KL = 0.05  # nats: a row whose validation KL stays this close to the warm start's does not train
PRIORITY = {"warm": 0, "precondition grid": 1, "precondition seeds": 2, "grid": 3, "seeds": 4, "stray": 5,
            "selection": 6, "anneal": 7}  # fmt: skip
PRECONDITION_ROWS = ("sft_sub", "sft_full")


def rate(k: int) -> float:
    """The learning rate of ladder index `k`: 1e-4 x 3^k, to 3 significant digits (so 3 x rate(k) is rate(k + 1))."""
    return float(f"{ANCHOR * 3.0**k:.3g}")


@dataclass(frozen=True, order=True)
class Job:
    """One run to make: `method` at ladder index `k` with `seed` (`method == "warm"`: seed's warm start)."""

    priority: int
    order: int
    method: str = field(compare=False)
    k: int | None = field(compare=False)
    seed: int = field(compare=False)
    reason: str = field(compare=False)

    @property
    def key(self) -> tuple[str, int | None, int]:
        return (self.method, self.k, self.seed)

    @property
    def lr(self) -> float | None:
        return None if self.k is None else rate(self.k)


def choose(grid: Mapping[int, float]) -> int | None:
    """The index with the lowest validation KL (ties: the lower rate); NaN results are never chosen."""
    options = {k: kl for k, kl in grid.items() if kl == kl}
    return min(options, key=lambda k: (options[k], k)) if options else None


def extension(grid: Mapping[int, float], initial: Sequence[int], warm_kl: float, limit: int,
              flat_kl: float = FLAT_KL) -> tuple[int | None, str, bool]:  # fmt: skip
    """The index to add to a row's grid (None when the grid is final), why a final grid is final, and whether the row
    is conclusive (its choice interior).

    Args:
        grid: `{k: mean validation KL over the grid seeds}` of the row's finished rates.
        initial: the row's starting grid (indices).
        warm_kl: the warm starts' mean validation KL (over the same seeds).
        limit: the most indices that may be added beyond each end of the starting grid.
        flat_kl: a lowest rate whose KL is within this of the warm start's does not train.
    """
    chosen = choose(grid)
    if chosen is None:
        return None, "no finished run", False
    ks = sorted(grid)
    if len(ks) == 1:
        return None, "one rate only (no grid)", False
    if chosen == ks[0]:
        if warm_kl - grid[chosen] < flat_kl:
            return None, (f"the lowest rate is chosen and it does not train (validation KL within {flat_kl:g} nats "
                          "of the warm start's): inconclusive"), False  # fmt: skip
        if min(initial) - ks[0] >= limit:
            return None, f"the lowest rate is chosen after {limit} extensions down, the limit: inconclusive", False
        return ks[0] - 1, "", False
    if chosen == ks[-1]:
        if ks[-1] - max(initial) >= limit:
            return None, f"the highest rate is chosen after {limit} extensions up, the limit: inconclusive", False
        return ks[-1] + 1, "", False
    return None, "interior", True


@dataclass
class RowState:
    """Where one grid row stands: its starting grid, the indices asked for so far, and once final its choice."""

    initial: list[int]
    ks: list[int] = field(default_factory=list)
    final: bool = False
    conclusive: bool = False
    status: str = ""
    chosen: int | None = None


class Planner:
    """The runs to make for `setting` (a `runs.Setting` or its dict), given the rows that can run.

    Args:
        setting: the setting (its `seeds`, `few_seeds`, `grid_seeds`, grids, `extend_limit`).
        methods: `{key: runs.Method}` of every row.
        rows: the keys of the rows that run (available and not switched off), in the page's order.
        gate: `gate(results) -> (holds, text)`: the preconditions, from the finished runs and warm starts
            (`{"runs": [...], "warm_starts": {seed: record}, "chosen": {row: k}}`); called once the preconditions'
            rows have run at their chosen rates with every seed.
        past_failed_gate: make every run even when a precondition fails (`--ignore-preconditions`; the verdicts are
            still marked untestable).
    """

    def __init__(self, setting: Any, methods: Mapping[str, Any], rows: Sequence[str],
                 gate: Callable[[dict], tuple[bool, str]] | None = None, past_failed_gate: bool = False):  # fmt: skip
        self.s = setting if isinstance(setting, dict) else setting.to_dict()
        self.methods = methods
        self.rows = list(rows)
        self.gate = gate
        self.past_failed_gate = past_failed_gate
        self.gate_result: tuple[bool, str] | None = None
        self.results: dict[tuple, dict] = {}
        self.warm: dict[int, dict] = {}
        self.started: set[tuple] = set()
        self.skipped: dict[tuple, str] = {}
        self.reasons: dict[tuple, str] = {}
        self._order: dict[tuple, int] = {}
        self.state = {m: RowState(initial=list(self._initial(m))) for m in self.rows
                      if methods[m].rate == "grid"}  # fmt: skip

    def _initial(self, m: str) -> list[int]:
        method = self.methods[m]
        if method.kind == "sft":
            return self.s["sft_grid"]
        return self.s["rms_grid"] if method.optim == "rmsprop" else self.s["selfplay_grid"]

    @property
    def seeds(self) -> list[int]:
        return list(self.s["seeds"])

    @property
    def grid_seeds(self) -> list[int]:
        return self.seeds[: self.s["grid_seeds"]]

    def seeds_of(self, m: str) -> list[int]:
        return self.seeds if self.methods[m].seeds == "many" else self.seeds[: self.s["few_seeds"]]

    # ---- bookkeeping -------------------------------------------------------------------------------------------------

    def record(self, run: dict) -> None:
        """Learn a finished run (or warm start: `method == "warm"`), also one loaded from a resumed work folder."""
        key = (run["method"], run.get("k"), run["seed"])
        if run["method"] == "warm":
            self.warm[run["seed"]] = run
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

    def chosen(self, m: str) -> int | None:
        """A grid row's chosen index once its grid is final, else None."""
        st = self.state.get(m)
        return st.chosen if st is not None and st.final else None

    def _done(self, key: tuple) -> bool:
        return key in self.results or key in self.skipped

    # ---- the rules ---------------------------------------------------------------------------------------------------

    def _update_rows(self) -> None:
        for m, st in self.state.items():
            if st.final:
                continue
            if not st.ks:
                st.ks = list(st.initial)
            mine = [(m, k, s) for k in st.ks for s in self.grid_seeds]
            if not all(key in self.started and self._done(key) for key in mine):
                continue  # its grid has not all run
            skipped = [key for key in mine if key in self.skipped]
            grid = {}
            for k in st.ks:
                values = [
                    self.results[(m, k, s)]["validation_kl"] for s in self.grid_seeds if (m, k, s) in self.results
                ]
                if values:
                    grid[k] = statistics.fmean(values)
            if skipped:
                st.final, st.chosen, st.conclusive = True, choose(grid), False
                st.status = f"grid incomplete ({self.skipped[skipped[0]]}): inconclusive"
                continue
            warm = [self.warm[s]["validation_kl"] for s in self.grid_seeds if s in self.warm]
            nxt, why, conclusive = extension(grid, st.initial, statistics.fmean(warm), self.s["extend_limit"])
            if nxt is None:
                st.final, st.chosen, st.status, st.conclusive = True, choose(grid), why, conclusive
            else:
                st.ks.append(nxt)

    def _update_gate(self) -> None:
        if self.gate_result is not None or self.gate is None:
            return
        needed = [m for m in PRECONDITION_ROWS if m in self.rows]
        if len(needed) < len(PRECONDITION_ROWS):
            self.gate_result = (False, "a precondition row does not run: " + ", ".join(
                m for m in PRECONDITION_ROWS if m not in self.rows))  # fmt: skip
            return
        if any(self.chosen(m) is None and not self.state[m].final for m in needed):
            return
        keys = [(m, self.chosen(m), s) for m in needed for s in self.seeds_of(m)]
        if any(self.chosen(m) is None for m in needed):
            self.gate_result = (False, "a precondition row has no chosen rate")
            return
        if not all(self._done(k) for k in keys):
            return
        self.gate_result = self.gate(
            {
                "runs": [r for r in self.results.values() if r["method"] != "warm"],
                "warm_starts": dict(self.warm),
                "chosen": {m: self.chosen(m) for m in needed},
            }
        )

    @property
    def gate_open(self) -> bool:
        return self.gate is None or (self.gate_result is not None and (self.gate_result[0] or self.past_failed_gate))

    def _wanted(self) -> Iterable[tuple[str, int | None, int, str]]:
        for s in self.seeds:
            yield "warm", None, s, "warm"
        pre = [m for m in self.state if m in PRECONDITION_ROWS]
        other = [m for m in self.state if m not in PRECONDITION_ROWS]
        for group, (grid_reason, seed_reason) in ((pre, ("precondition grid", "precondition seeds")),
                                                  (other, ("grid", "seeds"))):  # fmt: skip
            if group is other and not self.gate_open:
                continue
            for m in group:
                st = self.state[m]
                for k in st.ks or st.initial:
                    for s in self.grid_seeds:
                        yield m, k, s, grid_reason
            for m in group:
                if self.chosen(m) is not None:
                    for s in self.seeds_of(m):
                        yield m, self.chosen(m), s, seed_reason
        if not self.gate_open:
            return
        for m in ("spin", "tspin"):
            if m in self.rows and self.chosen(m) is not None:
                for s in self.seeds:
                    yield m, self.chosen(m) + 1, s, "stray"
        for m in self.rows:
            method = self.methods[m]
            if method.rate != "base" or method.base not in self.rows or self.chosen(method.base) is None:
                continue
            base_k = self.chosen(method.base)
            ks = [base_k, base_k + 1] if method.at_stray else [base_k]
            reason = "anneal" if method.schedule else "selection"
            for k in ks:
                for s in self.seeds_of(m):
                    yield m, k, s, reason
                    yield method.base, k, s, reason  # the comparison run (already made when it is a chosen/stray run)

    def ready(self) -> list[Job]:
        """The runs that can start now and have not started, highest priority first."""
        self._update_rows()
        self._update_gate()
        self._update_rows()
        jobs = {}
        for m, k, seed, reason in self._wanted():
            key = (m, k, seed)
            if key in self.started or key in jobs:
                continue
            if m != "warm" and seed not in self.warm:
                continue  # its warm start is not there yet
            self.reasons.setdefault(key, reason)
            order = self._order.setdefault(key, len(self._order))
            jobs[key] = Job(PRIORITY[self.reasons[key]], order, m, k, seed, self.reasons[key])
        return sorted(jobs.values())

    def pending(self) -> list[tuple]:
        """Runs wanted but waiting (for a warm start), not started."""
        return [(m, k, s) for m, k, s, _ in self._wanted() if (m, k, s) not in self.started]

    def finished(self) -> bool:
        """No run is going and none can start."""
        going = any(not self._done(k) for k in self.started)
        return not going and not self.ready()

    def summary(self) -> dict[str, Any]:
        """Per grid row: its indices and rates, the chosen one and why its grid ended; every run's reason; the
        skipped runs and why; the preconditions' gate."""
        self._update_rows()
        return {
            "rows": {
                m: {
                    "initial": st.initial,
                    "ks": sorted(st.ks),
                    "rates": [rate(k) for k in sorted(st.ks)],
                    "chosen_k": st.chosen,
                    "chosen": rate(st.chosen) if st.chosen is not None else None,
                    "final": st.final,
                    "conclusive": st.conclusive,
                    "status": st.status,
                }
                for m, st in self.state.items()
            },  # fmt: skip
            "reasons": [{"method": k[0], "k": k[1], "seed": k[2], "reason": r} for k, r in self.reasons.items()],
            "skipped": [{"method": k[0], "k": k[1], "seed": k[2], "why": w} for k, w in self.skipped.items()],
            "gate": None
            if self.gate_result is None
            else {
                "holds": self.gate_result[0],
                "text": self.gate_result[1],
                "past_failed_gate": self.past_failed_gate,
            },
        }
