"""From the runs to the numbers of the page: the learning-rate choice, per-iteration curves, the claims' verdicts.

Rules (written before the full run, stated on the page): every comparison is paired by seed, and a difference is
beyond noise when its mean exceeds `max(std over seeds of the per-seed differences, KL_FLOOR)`.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


KL_FLOOR = 0.02  # nats: differences below this are never called real (the KL estimate's common noise is below it)
SHARE_FLOOR = 0.02  # shares (validity, inversion): the same rule with this floor


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    vals = _finite(values)
    if not vals:
        return float("nan"), float("nan"), 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def paired(a: Sequence[float], b: Sequence[float], floor: float = KL_FLOOR) -> tuple[float, float]:
    """Mean over seeds of `a - b` and its noise `max(std of the per-seed differences, floor)`."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), max(std, floor)


def index_runs(runs: list[dict]) -> dict[tuple[str, float, int], dict]:
    return {(r["method"], r["lr"], r["seed"]): r for r in runs}


def choose_lrs(runs: list[dict], methods: Sequence[str], grid_seed: int) -> tuple[dict[str, float], dict]:
    """Per method, the rate whose grid run (seed `grid_seed`) ends with the lowest validation forward KL."""
    grid: dict[str, dict[float, dict[str, float]]] = defaultdict(dict)
    for r in runs:
        if r["seed"] == grid_seed:
            kls = [p["forward_kl"] for p in r["points"]]
            grid[r["method"]][r["lr"]] = {
                "validation_kl": r["validation_kl"],
                "held_out_kl": kls[-1],
                "held_out_worst": max(kls),
            }
    chosen = {}
    for m in methods:
        options = {
            lr: v["validation_kl"] for lr, v in grid.get(m, {}).items() if v["validation_kl"] == v["validation_kl"]
        }
        if options:
            chosen[m] = min(options, key=options.get)
    return chosen, grid


def series(run: dict, start: dict, key: str) -> list[float]:
    """A held-out metric at the start (the warm start) and after every iteration."""
    return [start.get(key, float("nan"))] + [p.get(key, float("nan")) for p in run["points"]]


def rows_at(runs_by_key, method: str, lr: float, seeds: Sequence[int]) -> list[dict]:
    return [runs_by_key[(method, lr, s)] for s in seeds if (method, lr, s) in runs_by_key]


def trajectory(group: list[dict], start: dict, key: str = "forward_kl", floor: float = KL_FLOOR,
               lower_is_better: bool = True) -> dict[str, Any]:  # fmt: skip
    """Worsenings between consecutive points beyond noise, and the change from the start."""
    curves = [series(r, start, key) for r in group]
    length = min(len(c) for c in curves)
    sign = 1 if lower_is_better else -1
    worse, rises = [], []
    for i in range(1, length):
        mean, tol = paired([sign * c[i] for c in curves], [sign * c[i - 1] for c in curves], floor)
        rises.append(sign * mean)
        if mean > tol:
            worse.append(i)
    change, tol = paired([sign * c[length - 1] for c in curves], [sign * c[0] for c in curves], floor)
    best = [min(sign * v for v in c[1:length]) for c in curves]
    return {
        "worse_at": worse,  # point indices (1 = after iteration 0) that worsened beyond noise from the previous one
        "steps": rises,
        "change": sign * change,
        "tolerance": tol,
        "improved": change < -tol,
        "monotone": change < -tol and not worse,
        "final_minus_best": statistics.fmean(sign * c[length - 1] - b for c, b in zip(curves, best)),
    }


def _at(indices: list[int]) -> str:
    return ", ".join(f"after it{i - 1}" for i in indices)


def train_log_curve(group: list[dict], key: str) -> list[tuple[float, float, int]]:
    if not group or not group[0]["train_logs"].get(key):
        return []
    length = min(len(r["train_logs"][key]) for r in group)
    return [mean_std([r["train_logs"][key][i] for r in group]) for i in range(length)]


def evaluate_claims(runs_by_key, chosen: dict[str, float], seeds: Sequence[int], start: dict) -> dict[str, dict]:
    """The paper's three claims and the stabiliser question, each at every method's chosen rate, by the page's rules."""
    group = {m: rows_at(runs_by_key, m, lr, seeds) for m, lr in chosen.items()}
    traj = {m: trajectory(g, start) for m, g in group.items() if g}
    final = {m: [r["points"][-1]["forward_kl"] for r in g] for m, g in group.items() if g}
    claims: dict[str, dict] = {}

    # 1. T-SPIN improves steadily where SPIN oscillates.
    if "tspin" in traj and "spin" in traj:
        t, s = traj["tspin"], traj["spin"]
        spin_text = (f"SPIN's KL rises beyond noise {_at(s['worse_at'])}" if s["worse_at"]
                     else "SPIN's KL never rises beyond noise")  # fmt: skip
        if not t["monotone"]:
            parts = [f"rises beyond noise {_at(t['worse_at'])}"] if t["worse_at"] else []
            parts.append(f"changes by {t['change']:+.3f} nats from the warm start (noise {t['tolerance']:.3f})")
            verdict, why = "not shown", "T-SPIN's held-out KL " + " and ".join(parts) + f"; {spin_text}."
        elif s["worse_at"]:
            verdict = "shown"
            why = f"T-SPIN's held-out KL falls by {-t['change']:.3f} nats without a rise beyond noise; {spin_text}."
        else:
            verdict = "inconclusive"
            why = (f"T-SPIN's held-out KL falls by {-t['change']:.3f} nats without a rise, but {spin_text} "
                   f"(SPIN changes by {s['change']:+.3f}): no oscillation to contrast with.")  # fmt: skip
        claims["stability"] = {"verdict": verdict, "why": why}

    # 2. T-SPIN on 25% matches SFT on 100%.
    if all(m in final for m in ("tspin", "sft_full", "sft_quarter")):
        gap, gap_tol = paired(final["sft_quarter"], final["sft_full"])
        diff, tol = paired(final["tspin"], final["sft_full"])
        f = {m: statistics.fmean(v) for m, v in final.items()}
        numbers = (f"T-SPIN ends at {f['tspin']:.3f} nats, SFT on 100% at {f['sft_full']:.3f}, SFT on 25% at "
                   f"{f['sft_quarter']:.3f} (T-SPIN - SFT 100%: {diff:+.3f}, noise {tol:.3f})")  # fmt: skip
        if gap <= gap_tol:
            verdict, why = (
                "inconclusive",
                f"SFT on 100% does not beat SFT on 25% beyond noise ({gap:+.3f}, noise {gap_tol:.3f}), so the setting cannot test it. {numbers}.",
            )
        elif diff <= tol:
            verdict, why = "shown", numbers + "."
        else:
            verdict, why = "not shown", numbers + ": T-SPIN is worse beyond noise."
        claims["data_efficiency"] = {"verdict": verdict, "why": why}

    # 3. T-SPIN keeps logp(real) > logp(synthetic); SPIN inverts it after iteration 0.
    if group.get("tspin") and group.get("spin"):

        def order(g):
            return [[(r["train_logs"]["logps/real"][i] or 0) - (r["train_logs"]["logps/synthetic"][i] or 0)
                     for i in range(len(r["train_logs"]["logps/real"]))] for r in g]  # fmt: skip

        t_keeps = all(v > 0 for run in order(group["tspin"]) for v in run)
        s_inverts = any(v < 0 for run in order(group["spin"]) for v in run[1:])
        t_min = min(v for run in order(group["tspin"]) for v in run)
        s_min = (
            min(v for run in order(group["spin"]) for v in run[1:])
            if len(order(group["spin"])[0]) > 1
            else float("nan")
        )
        inv = {m: statistics.fmean(r["points"][-1]["inversion"] for r in group[m]) for m in ("tspin", "spin")}
        numbers = (f"smallest per-iteration mean logp(real) - logp(synthetic): T-SPIN {t_min:+.2f}, SPIN after "
                   f"iteration 0 {s_min:+.2f}; held-out inversion after the last iteration: T-SPIN {inv['tspin']:.2f}, "
                   f"SPIN {inv['spin']:.2f}")  # fmt: skip
        if t_keeps and s_inverts:
            verdict = "shown"
        elif t_keeps:
            verdict = "half shown"
            numbers += " (SPIN keeps the order too)"
        else:
            verdict = "not shown"
        claims["likelihood_order"] = {"verdict": verdict, "why": numbers + "."}

    # 4. Which component stabilises: each ablation against T-SPIN alpha 1.
    if "tspin" in traj:
        parts, stabilisers = [], []
        for m, component in (("tspin_a01", "the saturating alpha=1 loss"), ("tspin_no_ha", "the historical term"),
                             ("tspin_ref", "the reference-free reward")):  # fmt: skip
            if m not in traj:
                continue
            diff, tol = paired(final[m], final["tspin"])
            worse = diff > tol
            extra_rises = bool(traj[m]["worse_at"]) and not traj["tspin"]["worse_at"]
            if worse or extra_rises:
                stabilisers.append(component)
            parts.append(
                f"without {component} ({m}): final KL {diff:+.3f} vs T-SPIN (noise {tol:.3f}), rises beyond noise "
                f"{_at(traj[m]['worse_at']) or 'nowhere'}, final - best {traj[m]['final_minus_best']:+.3f}"
            )
        parts.append(f"T-SPIN alpha 1 rises beyond noise {_at(traj['tspin']['worse_at']) or 'nowhere'}, "
                     f"final - best {traj['tspin']['final_minus_best']:+.3f}")  # fmt: skip
        verdict = ", ".join(stabilisers) if stabilisers else "none shown"
        claims["stabiliser"] = {"verdict": verdict, "why": "; ".join(parts) + "."}
    return claims


def summarize(results: dict) -> dict[str, Any]:
    """Everything the page needs for one setting, computed from `results` (the runs and the warm start)."""
    setting = results["setting"]
    runs = results["runs"]
    by_key = index_runs(runs)
    chosen, grid = choose_lrs(runs, setting["methods"], setting["seeds"][0])
    start = results["warm_start"]["held_out"]
    claims = evaluate_claims(by_key, chosen, setting["seeds"], start)
    per_method = {}
    for m, lr in chosen.items():
        g = rows_at(by_key, m, lr, setting["seeds"])
        per_method[m] = {
            "lr": lr,
            "seeds": [r["seed"] for r in g],
            "curves": {
                k: [mean_std(col) for col in zip(*(series(r, start, k) for r in g))]
                for k in ("forward_kl", "validity", "inversion", "reverse_kl_valid", "logp_real")
            },  # fmt: skip
            "margins": [
                statistics.fmean(r["points"][i]["margin_quantiles"][2] for r in g) for i in range(len(g[0]["points"]))
            ],  # fmt: skip
            "train": {
                k: train_log_curve(g, k)
                for k in (
                    "advantage/saturated",
                    "rewards/disagreement",
                    "rewards/ties",
                    "logps/real",
                    "logps/synthetic",
                    "likelihood_inversion",
                    "loss/clamped",
                )
            },  # fmt: skip
            "train_margins": [
                [statistics.fmean(r["train_logs"]["margins"][i]["scaled"][q] for r in g) for q in range(5)]
                for i in range(len(g[0]["train_logs"].get("margins", [])))
                if all(r["train_logs"]["margins"][i] for r in g)
            ],
            "trajectory": trajectory(g, start),
        }
    return {"chosen": chosen, "grid": grid, "claims": claims, "per_method": per_method}
