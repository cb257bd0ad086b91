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

from .plan import KL_FLOOR  # nats: differences below this are never called real (the KL estimate's noise is below it)


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


def choose_lrs(runs: list[dict], methods: Sequence[str], grid_seed: int,
               grid_rates: dict[str, Sequence[float]] | None = None) -> tuple[dict[str, float], dict]:  # fmt: skip
    """Per method, the rate whose grid run (seed `grid_seed`, a rate of `grid_rates[method]` when given) ends with
    the lowest validation forward KL (ties: the lower rate)."""
    grid: dict[str, dict[float, dict[str, float]]] = defaultdict(dict)
    for r in runs:
        if r["method"] not in methods:
            continue
        if grid_rates is not None and r["lr"] not in grid_rates.get(r["method"], ()):
            continue
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
            chosen[m] = min(options, key=lambda lr: (options[lr], lr))
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


def worst(run: dict) -> float:
    """The largest held-out KL after any iteration."""
    return max(p["forward_kl"] for p in run["points"])


def final(run: dict) -> float:
    return run["points"][-1]["forward_kl"]


def paired_groups(by_key, a: str, lr_a: float, b: str, lr_b: float, seeds: Sequence[int]):
    """Runs of `a` and `b` with the seeds both have, in seed order."""
    common = [s for s in seeds if (a, lr_a, s) in by_key and (b, lr_b, s) in by_key]
    return [by_key[(a, lr_a, s)] for s in common], [by_key[(b, lr_b, s)] for s in common]


def compare(ga: list[dict], gb: list[dict]) -> dict[str, Any]:
    """`a - b` paired by seed: final and worst held-out KL, with their noise; `n` seeds."""
    if not ga:
        return {"n": 0}
    d_final, t_final = paired([final(r) for r in ga], [final(r) for r in gb])
    d_worst, t_worst = paired([worst(r) for r in ga], [worst(r) for r in gb])
    return {"n": len(ga), "final": d_final, "final_noise": t_final, "worst": d_worst, "worst_noise": t_worst}


def group_stats(group: list[dict], warm_kl: float, jump: float = 0.5) -> dict[str, Any]:
    return {
        "n": len(group),
        "final": mean_std([final(r) for r in group]),
        "worst": mean_std([worst(r) for r in group]),
        "jumped": sum(worst(r) > warm_kl + jump for r in group),
    }


def equal_rates(by_key, setting: dict, warm_kl: float) -> dict[str, Any]:
    """The rows of `equal_rows` at each rate of `equal_lrs` with every seed, and each against T-SPIN alpha 1."""
    out: dict[str, Any] = {}
    for lr in setting["equal_lrs"]:
        per = {}
        for m in setting["equal_rows"]:
            group = rows_at(by_key, m, lr, setting["seeds"])
            if group:
                per[m] = group_stats(group, warm_kl)
                if m != "tspin":
                    per[m]["vs_tspin"] = compare(*paired_groups(by_key, m, lr, "tspin", lr, setting["seeds"]))
        out[f"{lr:g}"] = {"lr": lr, "rows": per}
    return out


def historical_term_verdict(eq: dict[str, Any]) -> dict[str, str]:
    """Question 5: does the historical term (beta 0.1 vs 0) destabilise T-SPIN at the equal rates?"""
    parts, worse_with, worse_without, seeds = [], [], [], []
    for key, block in eq.items():
        c = block["rows"].get("tspin_no_ha", {}).get("vs_tspin")
        if not c or not c["n"]:
            continue
        seeds.append(c["n"])
        # c is (w/o H-A) - T-SPIN: positive = T-SPIN (with the term) is lower
        parts.append(f"lr {key}: worst-point KL T-SPIN - w/o H-A {-c['worst']:+.3f} (noise {c['worst_noise']:.3f}), "
                     f"final {-c['final']:+.3f} (noise {c['final_noise']:.3f}), {c['n']} seed(s)")  # fmt: skip
        if -c["worst"] > c["worst_noise"]:
            worse_with.append(key)
        elif c["worst"] > c["worst_noise"]:
            worse_without.append(key)
    if not parts:
        return {"verdict": "not run", "why": "the equal-rate runs of T-SPIN and T-SPIN w/o H-A are missing."}
    if min(seeds) < 2:
        return {"verdict": "inconclusive (one seed)", "why": "; ".join(parts) + "."}
    if worse_with:
        verdict = "shown at lr " + ", ".join(worse_with)
    elif worse_without:
        verdict = "the reverse (w/o H-A is worse at lr " + ", ".join(worse_without) + ")"
    else:
        verdict = "not shown"
    return {"verdict": verdict, "why": "; ".join(parts) + "."}


def beyond_paper(by_key, setting: dict, methods: dict, rows: Sequence[str], chosen: dict[str, float],
                 warm_kl: float) -> dict[str, Any]:  # fmt: skip
    """The annealed and prompt-selection rows, each against its comparison row at the same rate, paired by seed."""
    out: dict[str, Any] = {}
    for m in rows:
        method = methods[m]
        if method.rate_rule == "anneal":
            lr = setting["anneal_lr"]
        elif method.rate_rule == "chosen":
            lr = chosen.get(method.compare_with)
        else:
            continue
        if lr is None:
            out[m] = {"lr": None}
            continue
        ga, gb = paired_groups(by_key, m, lr, method.compare_with, lr, setting["seeds"])
        entry = {"lr": lr, "compare_with": method.compare_with, "compare": compare(ga, gb)}
        if ga:
            entry["row"] = group_stats(ga, warm_kl)
            entry["base"] = group_stats(gb, warm_kl)
            entry["trajectory"] = trajectory(ga, {"forward_kl": warm_kl})
            entry["base_trajectory"] = trajectory(gb, {"forward_kl": warm_kl})
            entry["timing"] = {name: timing_of(g) for name, g in (("row", ga), ("base", gb))}
            entry["kl_curve"] = [mean_std(c) for c in zip(*([warm_kl] + [p["forward_kl"] for p in r["points"]]
                                                           for r in ga))]  # fmt: skip
            entry["base_kl_curve"] = [mean_std(c) for c in zip(*([warm_kl] + [p["forward_kl"] for p in r["points"]]
                                                                for r in gb))]  # fmt: skip
        out[m] = entry
    return out


def timing_of(group: list[dict]) -> dict[str, Any]:
    """Mean over seeds, per iteration: preparation (regeneration) and training seconds, and the pairs trained."""
    out: dict[str, Any] = {}
    for key in ("prepare_s", "train_s"):
        columns = [r.get("timing", {}).get(key, []) for r in group]
        length = min(len(c) for c in columns) if columns else 0
        out[key] = [statistics.fmean(c[i] for c in columns) for i in range(length)]
    pairs = [r.get("trained_pairs", []) for r in group]
    length = min(len(c) for c in pairs) if pairs else 0
    out["trained_pairs"] = [statistics.fmean(c[i] for c in pairs) for i in range(length)]
    out["wall_s"] = statistics.fmean(r["wall_s"] for r in group)
    return out


def anneal_verdict(bp: dict[str, Any], labels: dict[str, str]) -> dict[str, str] | None:
    """Question 6: does NeMo-style annealing change where SPIN / T-SPIN end, or how far they stray, at its rate?"""
    verdicts, parts = [], []
    for m, e in bp.items():
        if not m.endswith("_anneal"):
            continue
        c = e.get("compare", {})
        if not c.get("n"):
            verdicts.append(f"{labels[m]}: not run")
            continue
        if c["n"] < 2:
            word = "inconclusive (one seed)"
        elif c["worst"] < -c["worst_noise"] or c["final"] < -c["final_noise"]:
            word = "helps" if c["final"] <= c["final_noise"] else "mixed"
        elif c["worst"] > c["worst_noise"] or c["final"] > c["final_noise"]:
            word = "hurts"
        else:
            word = "no difference beyond noise"
        verdicts.append(f"{labels[m]}: {word}")
        parts.append(f"{labels[m]} - {labels[e['compare_with']]} at lr {e['lr']:g}: final KL {c['final']:+.3f} "
                     f"(noise {c['final_noise']:.3f}), worst-point KL {c['worst']:+.3f} (noise {c['worst_noise']:.3f}),"
                     f" {c['n']} seed(s)")  # fmt: skip
    if not verdicts:
        return None
    return {"verdict": "; ".join(verdicts), "why": ("; ".join(parts) or "no runs") + "."}


def selection_verdict(bp: dict[str, Any], labels: dict[str, str], pool_quarter: int) -> dict[str, str] | None:
    """Question 7: does prompt selection cost quality, and what time does it save (iterations after the first)?"""
    e = bp.get("tspin_select")
    if e is None:
        return None
    c = e.get("compare", {})
    if not c.get("n"):
        return {"verdict": "not run", "why": "no prompt-selection run finished."}
    t = e["timing"]
    saved = {}
    for key in ("prepare_s", "train_s"):
        row, base = sum(t["row"][key][1:]), sum(t["base"][key][1:])
        saved[key] = (base - row) / base if base > 0 else float("nan")
    kept = [p / pool_quarter for p in t["row"]["trained_pairs"]]
    numbers = (f"at lr {e['lr']:g}, {c['n']} seed(s): final KL {c['final']:+.3f} vs T-SPIN (noise {c['final_noise']:.3f});"
               f" share of the self-play prompts trained on per iteration "
               + " / ".join(f"{k:.2f}" for k in kept)
               + f"; iterations 1 and later: preparation (regeneration) time {100 * saved['prepare_s']:+.0f}% saved, "
               f"training time {100 * saved['train_s']:+.0f}% saved")  # fmt: skip
    if c["n"] < 2:
        verdict = "inconclusive (one seed)"
    elif c["final"] > c["final_noise"]:
        verdict = "costs quality"
    else:
        verdict = "no quality cost beyond noise"
    return {"verdict": verdict, "why": numbers + "."}


def improvements(by_key, setting: dict, methods: dict, warm_kl: float) -> dict[str, Any]:
    """Every (self-play row, rate) with its mean final held-out KL over the seeds run there, against the warm start:
    improved when the mean is below the warm start by more than max(std, KL_FLOOR)."""
    cells: dict[tuple[str, float], list[float]] = defaultdict(list)
    for (m, lr, _), r in by_key.items():
        if methods[m].kind == "selfplay":
            cells[(m, lr)].append(final(r))
    best, improved = None, []
    for (m, lr), values in cells.items():
        mean, std, n = mean_std(values)
        if mean < warm_kl - max(std, KL_FLOOR):
            improved.append({"method": m, "lr": lr, "final": mean, "n": n})
        if best is None or mean < best["final"]:
            best = {"method": m, "lr": lr, "final": mean, "n": n}
    sft = {}
    for m in ("sft_full", "sft_quarter"):
        finals = [final(r) for (mm, _, _), r in by_key.items() if mm == m]
        if finals:
            sft[m] = min(finals)
    return {"cells": len(cells), "improved": improved, "best": best, "sft_best": sft}


def grid_rates_of(results: dict) -> dict[str, list[float]]:
    """Each grid row's rates: the planner's record, or (a page from before the planner) its kind's grid."""
    setting = results["setting"]
    plan_rows = results.get("plan", {}).get("rows")
    if plan_rows:
        return {m: v["rates"] for m, v in plan_rows.items()}
    from .runs import METHODS

    return {m: setting["sft_lrs"] if METHODS[m].kind == "sft" else setting["selfplay_lrs"]
            for m in setting["methods"] if METHODS[m].rate_rule == "grid"}  # fmt: skip


def summarize(results: dict) -> dict[str, Any]:
    """Everything the page needs for one setting, computed from `results` (the runs and the warm start)."""
    from .runs import METHODS

    setting = results["setting"]
    runs = results["runs"]
    by_key = index_runs(runs)
    rates = grid_rates_of(results)
    grid_rows = [m for m in setting["methods"] if m in rates]
    chosen, grid = choose_lrs(runs, grid_rows, setting["seeds"][0], rates)
    start = results["warm_start"]["held_out"]
    claims = evaluate_claims(by_key, chosen, setting["seeds"], start)
    labels = {m: METHODS[m].label for m in METHODS}
    ran = sorted({r["method"] for r in runs}, key=setting["methods"].index)
    eq = equal_rates(by_key, setting, start["forward_kl"]) if "equal_lrs" in setting else {}
    if eq:
        claims["historical_term"] = historical_term_verdict(eq)
    bp = beyond_paper(by_key, setting, METHODS, ran, chosen, start["forward_kl"])
    for key, verdict in (("annealing", anneal_verdict(bp, labels)),
                         ("selection", selection_verdict(bp, labels, max(1, setting["pool"] // 4)))):  # fmt: skip
        if verdict is not None:
            claims[key] = verdict
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
    return {
        "chosen": chosen,
        "grid": grid,
        "grid_rates": rates,
        "claims": claims,
        "per_method": per_method,
        "equal": eq,
        "beyond": bp,
        "improvements": improvements(by_key, setting, METHODS, start["forward_kl"]),
    }
