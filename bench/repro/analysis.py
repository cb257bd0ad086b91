"""From the runs to the numbers of the page: the preconditions, the claims' verdicts, and every table.

The decision rules are written here, before the run, and copied into the results JSON (`RULES`, and each verdict's
`rule`): every comparison is paired by seed (a seed is a whole replicate: its own warm start, data order and
sampling); an estimate is the mean over seeds of the per-seed differences, with its two-sided 95% Student
t-interval; a claim is `confirmed` when the interval lies wholly on the claim's side of its threshold, `refuted` when
it lies wholly on the other side, and `inconclusive` otherwise (also when fewer than two seeds pair up, or when a row
the claim needs has an inconclusive learning rate: its choice sits at an edge of its grid). When a precondition
fails, every claim is `inconclusive` and marked untestable.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from .plan import FLAT_KL, PRECONDITION_ROWS, rate
from .stats import difference_of_proportions, fisher_exact, t_interval


RULES: dict[str, Any] = {
    "confidence": 0.95,
    "pairing": "by seed: a seed is a warm start (initialisation and data order) and every run from it",
    "interval": "two-sided Student t-interval of the mean of the per-seed differences",
    "primary_metric": "held-out forward KL to the new rule after the last iteration (nats; lower is better)",
    "verdict": "confirmed if the 95% interval lies wholly on the claim's side of its threshold, refuted if wholly on "
    "the other side, else inconclusive; inconclusive too with fewer than 2 paired seeds or when a row it needs has "
    "an inconclusive rate (its choice at an edge of its grid)",
    "largest_rise": "max over iterations t >= 1 of KL_t - min(KL_0 .. KL_{t-1}), and at least 0 (KL_0: the warm start)",
    "stray_rise_nats": 0.5,  # a run strays when its largest rise exceeds this
    "stray_factor": 3,  # ... at this many times each row's chosen rate (the next rung of the rate ladder)
    "fisher_p": 0.05,
    "matches_margin_share": 0.2,  # T-SPIN on 25% matches SFT on 100%: within 20% of the SFT 25% - SFT 100% gap
    "selection_margin_share": 0.1,  # prompt selection costs no quality: within 10% of T-SPIN's gain on the warm start
    "flat_kl_nats": FLAT_KL,  # a grid's lowest rate does not train when it stays this close to the warm start
}

METRICS = ("forward_kl", "validity_greedy", "validity_sampled", "advantage_current", "advantage_historical")


# ---- small helpers ---------------------------------------------------------------------------------------------------


def nan() -> float:
    return float("nan")


def mean(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.fmean(values) if values else nan()


def interval(values: Sequence[float]) -> list[float]:
    lo, hi = t_interval(values, RULES["confidence"])
    return [lo, hi]


def index(runs: Sequence[dict]) -> dict[tuple[str, int, int], dict]:
    return {(r["method"], r["k"], r["seed"]): r for r in runs if r["method"] != "warm"}


def warm_map(warm_starts: dict) -> dict[int, dict]:
    return {int(seed): record for seed, record in warm_starts.items()}


def final(run: dict) -> float:
    return run["points"][-1]["forward_kl"]


def kl_curve(run: dict, warm: dict) -> list[float]:
    return [warm["held_out"]["forward_kl"]] + [p["forward_kl"] for p in run["points"]]


def largest_rise(curve: Sequence[float]) -> float:
    """The largest rise of a curve above its best earlier point, at least 0 (a curve that never rises: 0)."""
    rises = [curve[t] - min(curve[:t]) for t in range(1, len(curve))]
    return max([0.0, *rises]) if all(v == v for v in curve) else float("inf")


def paired(by: dict, a: tuple[str, int | None], b: tuple[str, int | None], seeds: Sequence[int],
           f: Callable[[dict, dict, int], float]) -> tuple[list[float], list[int]]:  # fmt: skip
    """`f(run_a, run_b, seed)` for every seed where both runs exist."""
    diffs, used = [], []
    for s in seeds:
        ra, rb = by.get((a[0], a[1], s)), by.get((b[0], b[1], s))
        if ra is not None and rb is not None and a[1] is not None and b[1] is not None:
            diffs.append(f(ra, rb, s))
            used.append(s)
    return diffs, used


def decide(diffs: Sequence[float], side: str) -> tuple[str, float, list[float]]:
    """The verdict of a paired estimate whose claim is `side` ("below" or "above") zero."""
    if len(diffs) < 2 or not all(math.isfinite(d) for d in diffs):
        return "inconclusive", mean(diffs), [nan(), nan()]
    lo, hi = interval(diffs)
    if side == "below":
        verdict = "confirmed" if hi < 0 else "refuted" if lo > 0 else "inconclusive"
    else:
        verdict = "confirmed" if lo > 0 else "refuted" if hi < 0 else "inconclusive"
    return verdict, statistics.fmean(diffs), [lo, hi]


# ---- preconditions ---------------------------------------------------------------------------------------------------


def preconditions(runs: Sequence[dict], warm_starts: dict, chosen: dict[str, int | None],
                  seeds: Sequence[int]) -> dict[str, dict]:  # fmt: skip
    """The setting's preconditions (headroom, and an anchor for the historical term), each paired by seed:
    `{name: {holds, estimate, ci95, n_seeds, rule, text}}`."""
    by, warm = index(runs), warm_map(warm_starts)
    sub, full = ("sft_sub", chosen.get("sft_sub")), ("sft_full", chosen.get("sft_full"))
    out = {}
    diffs, used = paired(by, sub, sub, seeds, lambda a, b, s: final(a) - warm[s]["held_out"]["forward_kl"])
    verdict, est, ci = decide(diffs, "below")
    out["sft_subset_improves_on_warm_start"] = {
        "holds": verdict == "confirmed", "estimate": est, "ci95": ci, "n_seeds": len(used),
        "rule": "final held-out KL of SFT 25% (self-play's steps) minus the warm start's; holds if the 95% interval "
        "lies below 0 (self-play's data still teaches something)",
    }  # fmt: skip
    diffs, used = paired(by, full, sub, seeds, lambda a, b, s: final(a) - final(b))
    verdict, est, ci = decide(diffs, "below")
    out["sft_full_improves_on_sft_subset"] = {
        "holds": verdict == "confirmed", "estimate": est, "ci95": ci, "n_seeds": len(used),
        "rule": "final held-out KL of SFT 100% minus SFT 25% (self-play's steps); holds if the 95% interval lies below "
        "0 (more data helps: the 25%-vs-100% claim can be tested)",
    }  # fmt: skip
    diffs = [warm[s]["held_out"]["validity_old_rule"] - warm[s]["held_out"]["validity_sampled"]
             for s in seeds if s in warm]  # fmt: skip
    verdict, est, ci = decide(diffs, "above")
    out["proto_follows_old_rule"] = {
        "holds": verdict == "confirmed", "estimate": est, "ci95": ci, "n_seeds": len(diffs),
        "rule": "share of the warm start's held-out samples valid under the old rule minus the share valid under the "
        "new rule; holds if the 95% interval lies above 0 (the proto responses follow the old rule: the historical "
        "term has an anchor to move away from)",
    }  # fmt: skip
    return out


def gate(seeds: Sequence[int]) -> Callable[[dict], tuple[bool, str]]:
    """The planner's gate: the preconditions from what has run (printed by the caller)."""

    def check(partial: dict) -> tuple[bool, str]:
        pre = preconditions(partial["runs"], partial["warm_starts"], partial["chosen"], seeds)
        text = "; ".join(f"{name}: {'holds' if p['holds'] else 'FAILS'} (estimate {p['estimate']:+.3f}, 95% CI "
                         f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}], {p['n_seeds']} seeds)"
                         for name, p in pre.items())  # fmt: skip
        return all(p["holds"] for p in pre.values()), text

    return check


# ---- the claims ------------------------------------------------------------------------------------------------------


class Claims:
    """The verdicts of every claim, from the runs at each row's chosen rate (or its stray rate)."""

    def __init__(self, results: dict, labels: dict[str, str]):
        self.results = results
        self.setting = results["setting"]
        self.by = index(results["runs"])
        self.warm = warm_map(results["warm_starts"])
        self.plan_rows = results.get("plan", {}).get("rows", {})
        self.chosen = {m: r["chosen_k"] for m, r in self.plan_rows.items()}
        self.labels = labels
        self.seeds = list(self.setting["seeds"])
        self.untestable = None
        gate_result = results.get("plan", {}).get("gate")
        if gate_result is not None and not gate_result["holds"]:
            self.untestable = gate_result["text"]
        self.verdicts: list[dict] = []

    def k(self, m: str, stray: bool = False) -> int | None:
        base = self.chosen.get(m)
        return None if base is None else base + (1 if stray else 0)

    def _inconclusive_rows(self, rows: Sequence[str]) -> list[str]:
        return [f"{self.labels[m]}: {self.plan_rows[m]['status'] if m in self.plan_rows else 'did not run'}"
                for m in rows if not self.plan_rows.get(m, {}).get("conclusive")]  # fmt: skip

    def add(self, key: str, claim: str, group: str, rows: Sequence[str], rule: str, verdict: str, estimate: float,
            ci: Sequence[float], n: int, detail: str = "", **extra: Any) -> dict:  # fmt: skip
        bad = self._inconclusive_rows(rows)
        if self.untestable:
            verdict, rule = "inconclusive", f"Untestable: a precondition fails (see the preconditions). {rule}"
        elif bad and verdict != "inconclusive":
            verdict, rule = "inconclusive", f"{rule} Overridden: {'; '.join(bad)}."
        elif bad:
            rule = f"{rule} Also: {'; '.join(bad)}."
        entry = {"key": key, "claim": claim, "group": group, "verdict": verdict, "rule": rule, "estimate": estimate,
                 "ci95": list(ci), "n_seeds": n, "detail": detail, "untestable": bool(self.untestable), **extra}  # fmt: skip
        self.verdicts.append(entry)
        return entry

    def difference(self, key: str, claim: str, group: str, a: tuple[str, int | None], b: tuple[str, int | None],
                   side: str, rule: str, f: Callable[[dict, dict, int], float] | None = None,
                   rows: Sequence[str] | None = None) -> dict:  # fmt: skip
        f = f or (lambda ra, rb, s: final(ra) - final(rb))
        diffs, used = paired(self.by, a, b, self.seeds, f)
        verdict, est, ci = decide(diffs, side)
        return self.add(key, claim, group, rows or [a[0], b[0]], rule, verdict, est, ci, len(used),
                        per_seed=dict(zip(used, diffs)))  # fmt: skip

    def rise(self, run: dict) -> float:
        return largest_rise(kl_curve(run, self.warm[run["seed"]]))

    def evaluate(self) -> list[dict]:
        L = self.labels
        paired_rule = "paired by seed, at each row's chosen rate"
        for m in ("tspin", "spin"):
            self.difference(
                f"beats_sft_{m}", f"Self-play beats SFT at equal data and steps ({L[m]})", "paper",
                (m, self.k(m)), ("sft_sub", self.k("sft_sub")), "below",
                f"d = final held-out KL of {L[m]} minus {L['sft_sub']} ({paired_rule}); confirmed if the 95% interval "
                "lies below 0, refuted if above 0.",
            )  # fmt: skip
        share = RULES["matches_margin_share"]
        self.difference(
            "matches_sft_full", f"T-SPIN on 25% matches SFT on 100% (non-inferiority, margin {share:.0%} of the gap "
            "between SFT 25% and SFT 100%)", "paper", ("tspin", self.k("tspin")), ("sft_full", self.k("sft_full")),
            "below",
            f"d = KL(T-SPIN) - KL(SFT 100%) - {share:g} x (KL(SFT 25%) - KL(SFT 100%)), final held-out KL per seed "
            f"({paired_rule}); confirmed if the 95% interval lies below 0 (T-SPIN is within the margin of SFT 100% or "
            "better), refuted if above 0.",
            f=lambda ra, rb, s: final(ra) - final(rb) - share * (self._final("sft_sub", s) - final(rb)),
            rows=["tspin", "sft_full", "sft_sub"],
        )  # fmt: skip
        self.difference(
            "stable_chosen", "Stability across iterations at the chosen rates: T-SPIN's largest rise above its best "
            "earlier point is smaller than SPIN's", "paper", ("tspin", self.k("tspin")), ("spin", self.k("spin")),
            "below",
            f"d = largest rise of T-SPIN minus SPIN's (held-out KL, nats; {RULES['largest_rise']}; {paired_rule}); "
            "confirmed if the 95% interval lies below 0, refuted if above 0 (both never rising gives d = 0: "
            "inconclusive).",
            f=lambda ra, rb, s: self.rise(ra) - self.rise(rb),
        )  # fmt: skip
        self.stray_claim()
        self.difference(
            "historical_term", "The historical term improves T-SPIN (T-SPIN against T-SPIN w/o H-A)", "paper",
            ("tspin", self.k("tspin")), ("tspin_no_ha", self.k("tspin_no_ha")), "below",
            f"d = final held-out KL of T-SPIN minus T-SPIN w/o H-A ({paired_rule}); confirmed if the 95% interval lies "
            "below 0, refuted if above 0.",
        )  # fmt: skip
        self.inversion_claim()
        self.difference(
            "stable_chosen_rmsprop", "Stability under RMSProp with the paper's per-iteration reset: T-SPIN's largest "
            "rise is smaller than SPIN's", "fidelity", ("tspin_rms", self.k("tspin_rms")),
            ("spin_rms", self.k("spin_rms")), "below",
            f"as the stability claim, for the RMSProp rows ({paired_rule}).",
            f=lambda ra, rb, s: self.rise(ra) - self.rise(rb),
        )  # fmt: skip
        self.selection_claims()
        for m in ("spin_anneal", "tspin_anneal"):
            base = self.setting_base(m)
            for stray, where in ((False, "at the base row's chosen rate"), (True, "at 3x it, where the un-annealed "
                                                                                   "row may stray")):  # fmt: skip
                k = self.k(base, stray)
                self.difference(
                    f"{m}_{'stray' if stray else 'chosen'}", f"NeMo annealing improves {L[base]} {where}", "beyond",
                    (m, k), (base, k), "below",
                    f"d = final held-out KL of {L[m]} minus {L[base]} at the same rate (lr {self._lr(k)}), paired by "
                    "seed; confirmed if the 95% interval lies below 0, refuted if above 0.",
                    rows=[base],
                )  # fmt: skip
        return self.verdicts

    def setting_base(self, m: str) -> str:
        from .runs import METHODS

        return METHODS[m].base

    def _lr(self, k: int | None) -> str:
        return "n/a" if k is None else f"{rate(k):g}"

    def _final(self, m: str, seed: int) -> float:
        run = self.by.get((m, self.k(m), seed))
        return final(run) if run is not None else nan()

    def stray_claim(self) -> None:
        counts = {}
        for m in ("tspin", "spin"):
            runs = [self.by[(m, self.k(m, True), s)] for s in self.seeds if (m, self.k(m, True), s) in self.by]
            strayed = [self.rise(r) > RULES["stray_rise_nats"] for r in runs]
            counts[m] = (sum(strayed), len(strayed))
        (a, n_a), (b, n_b) = counts["tspin"], counts["spin"]
        p = fisher_exact(a, n_a - a, b, n_b - b) if n_a and n_b else nan()
        alpha = RULES["fisher_p"]
        if not (n_a and n_b):
            verdict = "inconclusive"
        elif p < alpha:
            verdict = "confirmed" if a / n_a < b / n_b else "refuted"
        else:
            verdict = "inconclusive"
        ci = difference_of_proportions(a, n_a, b, n_b) if n_a and n_b else (nan(), nan())
        self.add(
            "stray", f"Stability at {RULES['stray_factor']}x the chosen rates: fewer T-SPIN seeds stray than SPIN seeds",
            "paper", ["tspin", "spin"],
            f"a run strays when its largest rise exceeds {RULES['stray_rise_nats']:g} nats; T-SPIN and SPIN each at "
            f"{RULES['stray_factor']}x its own chosen rate with every seed; Fisher's exact test (two-sided) on the "
            f"counts: confirmed if p < {alpha:g} and T-SPIN strays less, refuted if p < {alpha:g} and T-SPIN strays "
            "more, else inconclusive. Estimate: T-SPIN's share of strayed seeds minus SPIN's, with Newcombe's 95% "
            "interval.",
            verdict, (a / n_a - b / n_b) if n_a and n_b else nan(), ci, min(n_a, n_b),
            counts={"tspin": [a, n_a], "spin": [b, n_b]}, fisher_p=p,
        )  # fmt: skip

    def train_gaps(self, m: str) -> list[list[float]]:
        """Per seed, per iteration: the mean over the iteration's training steps of logp(real) - logp(synthetic)."""
        out = []
        for s in self.seeds:
            run = self.by.get((m, self.k(m), s))
            if run is None or not run.get("train_logs"):
                continue
            out.append([(it.get("logps/real") or nan()) - (it.get("logps/synthetic") or nan())
                        for it in run["train_logs"]])  # fmt: skip
        return out

    def inversion_claim(self) -> None:
        gaps = self.train_gaps("tspin")
        rule = ("g_t = mean over iteration t's training steps of logp(real) - logp(synthetic) (T-SPIN at its chosen "
                "rate, per seed). Confirmed if the 95% interval of g_t lies above 0 in every iteration t >= 1; refuted "
                "if it lies below 0 in some iteration t >= 1 although it lay above 0 in iteration 0 (T-SPIN lost the "
                "order it started with); inconclusive otherwise, in particular when iteration 0 already starts "
                "inverted (the claim 'keeps' has nothing to keep).")  # fmt: skip
        if len(gaps) < 2:
            self.add("no_inversion", "No likelihood inversion: T-SPIN keeps logp(real) > logp(synthetic)", "paper",
                     ["tspin"], rule, "inconclusive", nan(), [nan(), nan()], len(gaps))  # fmt: skip
            return
        iterations = min(len(g) for g in gaps)
        cis = [interval([g[t] for g in gaps]) for t in range(iterations)]
        means = [mean([g[t] for g in gaps]) for t in range(iterations)]
        later = range(1, iterations)
        if later and all(cis[t][0] > 0 for t in later):
            verdict = "confirmed"
        elif any(cis[t][1] < 0 for t in later) and cis[0][0] > 0:
            verdict = "refuted"
        else:
            verdict = "inconclusive"
        worst = min(later, key=lambda t: means[t]) if later else 0
        self.add("no_inversion", "No likelihood inversion: T-SPIN keeps logp(real) > logp(synthetic)", "paper",
                 ["tspin"], rule, verdict, means[worst], cis[worst], len(gaps),
                 detail=f"smallest g_t at iteration {worst}", per_iteration={"mean": means, "ci95": cis})  # fmt: skip

    def selection_claims(self) -> None:
        k = self.k("tspin")
        share = RULES["selection_margin_share"]
        triggered = any((it.get("skipped") or 0) > 0 for s in self.seeds
                        for it in (self.by.get(("tspin_select", k, s)) or {}).get("selection", []))  # fmt: skip

        def quality(ra: dict, rb: dict, s: int) -> float:
            return final(ra) - final(rb) - share * (self.warm[s]["held_out"]["forward_kl"] - final(rb))

        entry = self.difference(
            "selection_quality", f"Prompt selection costs no quality (non-inferiority, margin {share:.0%} of T-SPIN's "
            "gain over the warm start)", "beyond", ("tspin_select", k), ("tspin", k), "below",
            f"d = KL(selection) - KL(T-SPIN) - {share:g} x (KL(warm start) - KL(T-SPIN)), final held-out KL at T-SPIN's "
            "chosen rate, paired by seed; confirmed if the 95% interval lies below 0, refuted if above 0; "
            "inconclusive when no prompt was skipped in any iteration of any seed (selection did not trigger).",
            f=quality, rows=["tspin"],
        )  # fmt: skip
        if not triggered and entry["verdict"] != "inconclusive":
            entry["verdict"] = "inconclusive"
            entry["rule"] += " Overridden: no prompt was skipped."

        def saved(ra: dict, rb: dict, s: int) -> float:
            return sum(rb["timing"]["prepare_cpu_s"][1:]) - sum(ra["timing"]["prepare_cpu_s"][1:])

        self.difference(
            "selection_time", "Prompt selection saves regeneration time (iterations 1 and later)", "beyond",
            ("tspin_select", k), ("tspin", k), "above",
            "d = preparation CPU seconds (regeneration, prompt scoring, reference log-probs) of T-SPIN minus those of "
            "T-SPIN with prompt selection, summed over iterations 1 and later, paired by seed: a positive d is time "
            "saved, a negative d a cost; confirmed if the 95% interval lies above 0, refuted if below 0.",
            f=saved, rows=["tspin"],
        )  # fmt: skip


# ---- tables ----------------------------------------------------------------------------------------------------------


def point_stats(values: Sequence[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    ci = interval(values) if len(values) > 1 else [nan(), nan()]
    return {"mean": mean(values), "ci95": ci, "n": len(values)}


def curves(by: dict, warm: dict[int, dict], m: str, k: int | None, seeds: Sequence[int]) -> dict[str, list[dict]]:
    """Per held-out metric: the warm start ("start") and every iteration, mean and 95% interval over seeds."""
    runs = [by[(m, k, s)] for s in seeds if (m, k, s) in by]
    out = {}
    for key in METRICS:
        columns = []
        start = [warm[r["seed"]]["held_out"].get(key, 0.0 if key == "advantage_historical" else None) for r in runs]
        columns.append(point_stats(start))
        for t in range(min((len(r["points"]) for r in runs), default=0)):
            columns.append(point_stats([r["points"][t].get(key) for r in runs]))
        out[key] = columns
    rises = [largest_rise(kl_curve(r, warm[r["seed"]])) for r in runs]
    out["largest_rise"] = [point_stats(rises)]
    return out


def grid_table(by: dict, plan_rows: dict, setting: dict) -> dict[str, dict]:
    seeds = setting["seeds"][: setting["grid_seeds"]]
    out = {}
    for m, row in plan_rows.items():
        cells = {}
        for k in row["ks"]:
            runs = [by[(m, k, s)] for s in seeds if (m, k, s) in by]
            cells[k] = {"lr": rate(k), "validation_kl": mean([r["validation_kl"] for r in runs]),
                        "held_out_final": mean([final(r) for r in runs]), "n": len(runs)}  # fmt: skip
        out[m] = {"cells": cells, "chosen_k": row["chosen_k"], "status": row["status"],
                  "conclusive": row["conclusive"]}  # fmt: skip
    return out


def stray_table(by: dict, warm: dict[int, dict], chosen: dict[str, int | None], seeds: Sequence[int]) -> dict:
    from .runs import METHODS

    out = {}
    for m in ("spin", "tspin", "spin_anneal", "tspin_anneal"):
        base = METHODS[m].base or m
        if chosen.get(base) is None:
            continue
        k = chosen[base] + 1
        runs = [by[(m, k, s)] for s in seeds if (m, k, s) in by]
        if not runs:
            continue
        rises = {r["seed"]: largest_rise(kl_curve(r, warm[r["seed"]])) for r in runs}
        out[m] = {"k": k, "lr": rate(k), "rises": rises, "strayed": sum(v > RULES["stray_rise_nats"] for v in rises.values()),
                  "n": len(runs), "curves": {r["seed"]: kl_curve(r, warm[r["seed"]]) for r in runs},
                  "final": point_stats([final(r) for r in runs])}  # fmt: skip
    return out


def selection_table(by: dict, chosen: dict[str, int | None], seeds: Sequence[int], setting: dict) -> dict[str, Any]:
    """Prompt selection's kept/skipped counts per iteration and seed, the share of prompts trained on, and time."""
    k = chosen.get("tspin")
    n_prompts = round(setting["pool"] * setting["subset_share"])
    per_seed, shares_below = {}, []
    timing = {"selection": [], "tspin": []}
    for s in seeds:
        run = by.get(("tspin_select", k, s))
        if run is None:
            continue
        per_seed[s] = run["selection"]
        shares = [it["kept"] / n_prompts for it in run["selection"] if it.get("kept") is not None]
        shares_below.append(min(shares) < 1 if shares else False)
        base = by.get(("tspin", k, s))
        timing["selection"].append(run["timing"]["prepare_cpu_s"])
        if base is not None:
            timing["tspin"].append(base["timing"]["prepare_cpu_s"])
    iterations = setting["iterations"]
    mean_kept = [mean([it[t]["kept"] for it in per_seed.values() if t < len(it) and it[t].get("kept") is not None])
                 for t in range(iterations)]  # fmt: skip
    mean_skipped = [mean([it[t]["skipped"] for it in per_seed.values() if t < len(it)
                          and it[t].get("skipped") is not None]) for t in range(iterations)]  # fmt: skip
    return {
        "lr": rate(k) if k is not None else None,
        "threshold": setting["selection_threshold"],
        "min_share": setting["selection_min_share"],
        "prompts": n_prompts,
        "per_seed": per_seed,
        "mean_kept": mean_kept,
        "mean_skipped": mean_skipped,
        "share_trained_per_iteration": [v / n_prompts for v in mean_kept],
        "seeds_with_share_below_1": sum(shares_below),
        "n_seeds": len(per_seed),
        "prepare_cpu_s": {
            name: [mean([row[t] for row in rows if t < len(row)]) for t in range(iterations)]
            for name, rows in timing.items()
        },  # fmt: skip
    }


def summarize(results: dict) -> dict[str, Any]:
    """Everything the page needs, computed from `results` (the runs, the warm starts and the plan)."""
    from .runs import METHODS

    setting = results["setting"]
    by = index(results["runs"])
    warm = warm_map(results["warm_starts"])
    plan_rows = results.get("plan", {}).get("rows", {})
    chosen = {m: r["chosen_k"] for m, r in plan_rows.items()}
    seeds = list(setting["seeds"])
    labels = {m: METHODS[m].label for m in METHODS}
    pre = preconditions(results["runs"], results["warm_starts"], chosen, seeds)
    verdicts = Claims(results, labels).evaluate()
    per_row = {}
    for m, row in plan_rows.items():
        if row["chosen_k"] is None:
            continue
        method_seeds = seeds if METHODS[m].seeds == "many" else seeds[: setting["few_seeds"]]
        per_row[m] = {"k": row["chosen_k"], "lr": rate(row["chosen_k"]), "seeds": method_seeds,
                      "curves": curves(by, warm, m, row["chosen_k"], method_seeds)}  # fmt: skip
        per_row[m]["train_gap"] = Claims(results, labels).train_gaps(m) if METHODS[m].kind == "selfplay" else []
    beyond = {}
    for m in ("spin_anneal", "tspin_anneal", "tspin_select"):
        base = METHODS[m].base
        if chosen.get(base) is None:
            continue
        for k in [chosen[base], chosen[base] + 1] if METHODS[m].at_stray else [chosen[base]]:
            few = seeds[: setting["few_seeds"]]
            beyond[f"{m}@{k}"] = {"row": m, "base": base, "k": k, "lr": rate(k),
                                  "curves": curves(by, warm, m, k, few), "base_curves": curves(by, warm, base, k, few)}  # fmt: skip
    return {
        "preconditions": pre,
        "verdicts": verdicts,
        "per_row": per_row,
        "grid": grid_table(by, plan_rows, setting),
        "stray": stray_table(by, warm, chosen, seeds),
        "selection": selection_table(by, chosen, seeds, setting),
        "beyond": beyond,
        "warm": {
            s: {
                "held_out": w["held_out"],
                "old_rule_kl": w["held_out_old_rule_kl"],
                "validation_kl": w["validation_kl"],
                "cpu_s": w["cpu_s"],
                "wall_s": w["wall_s"],
            }
            for s, w in sorted(warm.items())
        },  # fmt: skip
        "cost": cost(results),
    }


def cost(results: dict) -> dict[str, Any]:
    """Runs made and their process CPU time, by kind (warm starts, SFT, self-play)."""
    from .runs import METHODS

    out: dict[str, dict[str, float]] = {}
    for r in results["runs"]:
        kind = METHODS[r["method"]].kind
        entry = out.setdefault(kind, {"runs": 0, "cpu_s": 0.0, "wall_s": 0.0})
        entry["runs"] += 1
        entry["cpu_s"] += r.get("cpu_s", 0.0)
        entry["wall_s"] += r.get("wall_s", 0.0)
    for w in warm_map(results["warm_starts"]).values():
        entry = out.setdefault("warm", {"runs": 0, "cpu_s": 0.0, "wall_s": 0.0})
        entry["runs"] += 1
        entry["cpu_s"] += w.get("cpu_s", 0.0)
        entry["wall_s"] += w.get("wall_s", 0.0)
    return out


PRECONDITION_NAMES = {
    "sft_subset_improves_on_warm_start": "SFT on the self-play subset improves on the warm start",
    "sft_full_improves_on_sft_subset": "SFT on 100% improves on SFT on the subset",
    "proto_follows_old_rule": "The proto responses follow the old rule",
}
assert set(PRECONDITION_ROWS) == {"sft_sub", "sft_full"}
