"""bench/reproduce.py: the statistics of the verdicts, the shifted-draws task's exact distances, the rules that decide
which runs are made, the preconditions' and claims' rules, the page rendered from a results file, and (slow) the
script end to end in its smoke modes (the CPU page and the GPU recipe's script)."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "reproduce.py"
sys.path.insert(0, str(ROOT / "bench"))

from repro import analysis, plan, pool, runs, stats  # noqa: E402
from repro.task import Evaluator, Rule, make_splits, prompt_digits  # noqa: E402


# ---- statistics ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_the_table(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


def test_t_interval_and_fisher_and_newcombe_match_published_values():
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == (
        pytest.approx(2 - 4.3027 / math.sqrt(3), abs=1e-4),
        pytest.approx(2 + 4.3027 / math.sqrt(3), abs=1e-4),
    )
    assert math.isnan(stats.t_interval([1.0])[0])
    # Fisher's exact test, two-sided (R's fisher.test): 5/5 vs 0/5, 4/5 vs 0/5, and [[1, 9], [11, 3]]
    assert stats.fisher_exact(5, 0, 0, 5) == pytest.approx(2 / 252)
    assert stats.fisher_exact(4, 1, 0, 5) == pytest.approx(0.047619, abs=1e-6)
    assert stats.fisher_exact(1, 9, 11, 3) == pytest.approx(0.002759, abs=1e-6)
    assert stats.fisher_exact(2, 3, 2, 3) == pytest.approx(1.0)
    # Newcombe (1998), method 10: 56/70 - 48/80 = 0.2, 95% interval (0.0524, 0.3339)
    lo, hi = stats.difference_of_proportions(56, 70, 48, 80)
    assert (lo, hi) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))


# ---- the task --------------------------------------------------------------------------------------------------------


def test_splits_are_disjoint_and_follow_their_rules():
    old, new = Rule(0), Rule(1)
    splits = make_splits({"warm": 60, "pool": 40, "held_out": 20, "validation": 20}, 0.25, 0, old, new)
    assert len(splits["subset"]) == 10 and splits["subset"] == splits["pool"][:10]
    prompts = [{r["prompt"][0]["content"] for r in splits[k]} for k in ("warm", "pool", "held_out", "validation")]
    assert sum(len(p) for p in prompts) == len(set().union(*prompts)) == 140
    for name, rule in (("warm", old), ("pool", new), ("held_out", new), ("validation", new)):
        for row in splits[name]:
            digits, answer = prompt_digits(row), row["completion"][0]["content"]
            assert 4 <= len(digits) <= 7 and len(set(digits)) == len(digits)
            assert rule.is_valid(answer, digits)
    assert new.allowed("3719") == "4820" and not new.is_valid("3719", "3719") and old.is_valid("3719", "3719")
    assert not new.is_valid("084", "3719") and not new.is_valid(None, "3719")


class _Fixed(__import__("torch").nn.Module):
    """A 'model' whose next-token distribution is fixed: its KL to p_data must come out exactly."""

    def __init__(self, vocab: int, probs: dict[int, float]):
        import torch

        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        logits = torch.full((vocab,), -1e9)
        for token, p in probs.items():
            logits[token] = math.log(p)
        self.register_buffer("logits", logits)

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1).clone())


def test_forward_kl_is_exact_for_a_known_model():
    from tspin_trl.demo.presets import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    rows = make_splits({"warm": 4, "pool": 4, "held_out": 6, "validation": 4}, 0.25, 1, Rule(0), Rule(1))["held_out"]
    evaluator = Evaluator(rows, tokenizer, Rule(1), Rule(0), paths=3, samples=0)
    digits = {tokenizer.convert_tokens_to_ids(d): d for d in "0123456789"}
    eos = tokenizer.eos_token_id
    # q: the digits 0-4 at 0.15 each, 5-9 at 0.04 each, the end token 0.05. Per step the KL from uniform over the n
    # allowed digits is -log n - mean over them of log q; the end token (p_data 1) costs -log 0.05 per tail token.
    probs = {t: (0.15 if d in "01234" else 0.04) for t, d in digits.items()} | {eos: 0.05}
    model = _Fixed(len(tokenizer), probs)
    expected = []
    for row in rows:
        n = len(prompt_digits(row))
        allowed = Rule(1).allowed(prompt_digits(row))
        step = -math.log(n) - sum(math.log(0.15 if d in "01234" else 0.04) for d in allowed) / n
        expected.append(n * step - math.log(0.05) * len(evaluator.tail))
    assert evaluator.forward_kl(model) == pytest.approx(sum(expected) / len(expected), rel=1e-5)


# ---- the rules that decide which runs are made -----------------------------------------------------------------------


def test_rate_ladder_is_a_factor_3_anchored_at_1e_4():
    assert [plan.rate(k) for k in (-2, -1, 0, 1, 2)] == [1.11e-5, 3.33e-5, 1e-4, 3e-4, 9e-4]
    assert plan.rate(3) == 2.7e-3 and plan.rate(1) == pytest.approx(3 * plan.rate(0))


def test_extension_rule():
    initial = [0, 1, 2]
    assert plan.extension({0: 3.0, 1: 2.5, 2: 2.8}, initial, 5.0, 3) == (None, "interior", True)
    assert plan.extension({0: 3.0, 1: 2.5, 2: 2.4}, initial, 5.0, 3) == (3, "", False)  # highest: go up
    assert plan.extension({0: 2.0, 1: 2.5, 2: 2.8}, initial, 5.0, 3) == (-1, "", False)  # lowest, trains: go down
    k, why, ok = plan.extension({0: 4.99, 1: 5.5, 2: 6.0}, initial, 5.0, 3)  # lowest and flat: stop, inconclusive
    assert k is None and "does not train" in why and not ok
    k, why, ok = plan.extension({-3: 2.0, -2: 2.1, -1: 2.2, 0: 2.3, 1: 2.5, 2: 2.8}, initial, 5.0, 3)
    assert k is None and "after 3 extensions down" in why and not ok
    k, why, ok = plan.extension({0: 3.0, 1: 2.9, 2: 2.8, 3: 2.7, 4: 2.6, 5: 2.5}, initial, 5.0, 3)
    assert k is None and "after 3 extensions up" in why and not ok
    assert plan.choose({0: 2.0, 1: 2.0, 2: float("nan")}) == 0  # ties: the lower rate; NaN never


def _setting(**overrides):
    s = runs.Setting(shape=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64), seeds=[0, 1, 2, 3, 4], few_seeds=3, grid_seeds=2, sft_grid=[1, 2, 3],
                     selfplay_grid=[0, 1, 2], rms_grid=[-2, -1, 0], extend_limit=2)  # fmt: skip
    for k, v in overrides.items():
        setattr(s, k, v)
    return s


SFT_BEST = {1: 3.0, 2: 2.5, 3: 2.7}  # interior at 9e-4


def _validation_kl(method, k):
    """SFT interior at k=2; SPIN best at the top (one extension up, then interior); the rest best at k=0 and
    training (one extension down, then interior)."""
    if runs.METHODS[method].kind == "sft":
        return SFT_BEST[k]
    if method == "spin":
        return {0: 4.0, 1: 3.5, 2: 3.2, 3: 3.6}[k]
    return 3.0 + abs(k + 1) * 0.3


def _drive(planner, gate_seen):
    made = []
    while jobs := planner.ready():
        if planner.gate_result is not None and not gate_seen:
            gate_seen.append(len(made))
        job = jobs[0]
        planner.start(job)
        made.append((job.method, job.k, job.seed, job.reason))
        if job.method == "warm":
            planner.record({"method": "warm", "k": None, "seed": job.seed, "validation_kl": 5.0})
        else:
            planner.record({"method": job.method, "k": job.k, "seed": job.seed,
                            "validation_kl": _validation_kl(job.method, job.k)})  # fmt: skip
    return made


def test_planner_order_grids_seeds_stray_and_beyond():
    calls = []

    def gate(partial):
        calls.append(partial)
        return True, "ok"

    planner = plan.Planner(_setting(), runs.METHODS, list(runs.METHODS), gate=gate)
    seen: list[int] = []
    made = _drive(planner, seen)
    keys = [(m, k, s) for m, k, s, _ in made]
    assert len(keys) == len(set(keys))  # no run twice
    rows = planner.summary()["rows"]
    assert rows["sft_sub"]["chosen_k"] == 2 and rows["sft_sub"]["status"] == "interior"
    assert rows["spin"]["ks"] == [0, 1, 2, 3] and rows["spin"]["chosen_k"] == 2 and rows["spin"]["conclusive"]
    assert rows["tspin"]["ks"] == [-2, -1, 0, 1, 2] and rows["tspin"]["chosen_k"] == -1
    # warm starts first; the gate is called once, after the preconditions' rows ran every seed at their chosen rate,
    # and before any other row runs
    assert [m for m, *_ in made[:5]] == ["warm"] * 5 and len(calls) == 1
    before_gate = {m for m, *_ in made[: seen[0]]}
    assert before_gate == {"warm", "sft_sub", "sft_full"}
    assert {(m, s) for m, k, s in keys if m in ("sft_sub", "sft_full") and k == 2} == {
        (m, s) for m in ("sft_sub", "sft_full") for s in range(5)}  # fmt: skip
    assert set(calls[0]["chosen"]) == {"sft_sub", "sft_full"}
    # seeds: 5 for the "many" rows, 3 for the others; the stray rate 3x the chosen with every seed
    assert {s for m, k, s in keys if m == "tspin_no_ha" and k == -1} == {0, 1, 2}
    assert {s for m, k, s in keys if m == "tspin" and k == 0} == {0, 1, 2, 3, 4}  # -1 + 1: the stray rung
    assert {s for m, k, s in keys if m == "spin" and k == 3} == {0, 1, 2, 3, 4}
    # beyond the paper: selection at T-SPIN's chosen rate, annealing at the chosen and the stray rate
    assert {(k, s) for m, k, s in keys if m == "tspin_select"} == {(-1, s) for s in range(3)}
    assert {(k, s) for m, k, s in keys if m == "spin_anneal"} == {(k, s) for k in (2, 3) for s in range(3)}
    order = {k: i for i, k in enumerate(keys)}
    assert order[("tspin", -1, 4)] < order[("tspin", 0, 4)] < order[("tspin_select", -1, 0)]


def test_planner_stops_when_a_precondition_fails_unless_told_to_go_on():
    planner = plan.Planner(_setting(), runs.METHODS, list(runs.METHODS), gate=lambda partial: (False, "no headroom"))
    made = _drive(planner, [])
    assert {m for m, *_ in made} == {"warm", "sft_sub", "sft_full"}
    assert planner.summary()["gate"] == {"holds": False, "text": "no headroom", "past_failed_gate": False}
    planner = plan.Planner(_setting(), runs.METHODS, list(runs.METHODS), gate=lambda partial: (False, "no"),
                           past_failed_gate=True)  # fmt: skip
    assert {m for m, *_ in _drive(planner, [])} == {"warm", *runs.METHODS}


def test_runs_wait_for_their_warm_start_and_the_deadline_skips_without_running():
    planner = plan.Planner(_setting(), runs.METHODS, ["sft_sub", "sft_full"], gate=lambda p: (True, ""))
    assert {j.method for j in planner.ready()} == {"warm"}
    planner.record({"method": "warm", "k": None, "seed": 0, "validation_kl": 5.0})
    ready = planner.ready()
    assert {(j.method, j.seed) for j in ready if j.method != "warm"} == {("sft_sub", 0), ("sft_full", 0)}
    planner = plan.Planner(_setting(), runs.METHODS, ["sft_sub", "sft_full"], gate=lambda p: (True, ""))
    made = []
    failures = pool.Runner(1).run(planner, lambda job: (_ for _ in ()).throw(AssertionError("no run may start")),
                                  lambda job, record: made.append(job), deadline=0.0)  # fmt: skip
    assert failures == [] and made == [] and planner.finished()
    assert planner.skipped and all(why == "not run: the recipe's deadline" for why in planner.skipped.values())


def test_nemo_schedules_and_missing_fields():
    setting = _setting(iterations=5)
    nemo = runs.schedules(runs.METHODS["spin_anneal"], setting)
    assert nemo["learning_rate_schedule"][0] == 1.0 and nemo["learning_rate_schedule"][-1] == 0.2
    assert nemo["alpha_schedule"][0] == 0.1 and nemo["alpha_schedule"][-1] == 5.0  # NeMo's SPIN beta 0.1 -> 5.0
    assert runs.schedules(runs.METHODS["tspin_anneal"], setting)["alpha_schedule"][-1] == 50.0  # T-SPIN's alpha x 50
    assert runs.schedules(runs.METHODS["tspin_select"], setting) == {"prompt_selection_threshold": 3.0,
                                                                     "prompt_selection_min_share": 0.25}  # fmt: skip
    assert runs.missing_fields(runs.METHODS["tspin"]) == []
    assert setting.epochs_of(runs.METHODS["sft_sub_long"]) == 4 and setting.epochs_of(runs.METHODS["sft_sub"]) == 1


# ---- the preconditions' and claims' rules ----------------------------------------------------------------------------


def _point(kl, **extra):
    return {"forward_kl": kl, "validity_greedy": 0.5, "validity_sampled": 0.2, "validity_old_rule": 0.1,
            "advantage_current": -1.0, "advantage_historical": 0.5, "inversion": 0.6, "logp_real": -10.0,
            "current_quantiles": [0.0] * 5, **extra}  # fmt: skip


def _warm(seed, kl=6.0):
    return {"seed": seed, "params": 1000, "held_out": _point(kl, validity_sampled=0.05, validity_old_rule=0.5,
                                                               advantage_historical=None) | {"validity_old_rule": 0.5 - 0.01 * seed},
            "held_out_old_rule_kl": 1.0, "validation_kl": kl, "steps": 10, "wall_s": 1.0, "cpu_s": 1.0}  # fmt: skip


def _record(method, k, seed, kls, gaps=None, selection=None, prepare=None):
    iterations = len(kls)
    logs = [{"logps/real": -10.0 + g, "logps/synthetic": -10.0} for g in (gaps or [1.0] * iterations)]
    return {"method": method, "k": k, "lr": plan.rate(k), "seed": seed, "points": [_point(v) for v in kls],
            "validation_kl": kls[-1], "train_logs": logs if runs.METHODS[method].kind == "selfplay" else [],
            "selection": selection or [], "train_steps": 10,
            "timing": {"prepare_s": [0.1] * iterations, "train_s": [1.0] * iterations, "eval_s": [0.5] * iterations,
                       "prepare_cpu_s": prepare or [0.1] * iterations},
            "wall_s": 5.0, "cpu_s": 4.0}  # fmt: skip


def _results(curves, seeds=(0, 1, 2, 3, 4), conclusive=None, gate=(True, "ok"), extra=()):
    """A results file from `{method: (k, f(seed) -> kls)}`; every row's grid conclusive unless said."""
    setting = _setting(iterations=3, seeds=list(seeds)).to_dict()
    runs_ = list(extra)
    rows = {}
    for m, (k, f) in curves.items():
        ss = seeds if runs.METHODS[m].seeds == "many" else seeds[:3]
        runs_ += [_record(m, k, s, f(s)) for s in ss]
        if runs.METHODS[m].rate == "grid":
            ok = (conclusive or {}).get(m, True)
            rows[m] = {"initial": [k - 1, k, k + 1], "ks": [k - 1, k, k + 1], "rates": [], "chosen_k": k,
                       "chosen": plan.rate(k), "final": True, "conclusive": ok,
                       "status": "interior" if ok else "the highest rate is chosen ...: inconclusive"}  # fmt: skip
    meta = {"mode": "full", "command": "python bench/reproduce.py", "wall_s": 60.0, "cpu_s": 50.0,
            "load_average": [1.0, 1.0], "machine": "test", "python": "3", "versions": {}, "date": "today", "jobs": 2,
            "threads_per_job": 1, "deadline_min": None}  # fmt: skip
    return {"meta": meta, "setting": setting, "rules": analysis.RULES,
            "warm_starts": {s: _warm(s) for s in seeds}, "runs": runs_,
            "plan": {"rows": rows, "reasons": [], "skipped": [],
                     "gate": {"holds": gate[0], "text": gate[1], "past_failed_gate": False}},
            "not_run": {}, "failures": []}  # fmt: skip


def _noise(seed, scale=0.02):
    return random.Random(seed).gauss(0, scale)


def _verdicts(results):
    return {v["key"]: v for v in analysis.Claims(results, {m: runs.METHODS[m].label for m in runs.METHODS}).evaluate()}


def test_claims_confirmed_refuted_and_inconclusive_by_their_intervals():
    curves = {
        "sft_sub": (2, lambda s: [5.0, 4.0, 3.0 + _noise(s)]),
        "sft_full": (2, lambda s: [4.0, 3.0, 2.0 + _noise(s + 10)]),
        "tspin": (0, lambda s: [5.5, 4.5, 2.5 + _noise(s + 20)]),
        "spin": (1, lambda s: [5.0, 6.0, 3.5 + _noise(s + 30)]),
        "tspin_no_ha": (0, lambda s: [5.5, 4.5, 2.5 + _noise(s + 40, 0.5)]),
    }
    verdicts = _verdicts(_results(curves))
    assert verdicts["beats_sft_tspin"]["verdict"] == "confirmed" and verdicts["beats_sft_tspin"]["estimate"] < 0
    assert verdicts["beats_sft_spin"]["verdict"] == "refuted" and verdicts["beats_sft_spin"]["n_seeds"] == 5
    # T-SPIN 2.5 vs SFT 100% 2.0 + 0.2 x (3.0 - 2.0) = 2.2: worse than the margin allows
    assert verdicts["matches_sft_full"]["verdict"] == "refuted"
    assert verdicts["matches_sft_full"]["estimate"] == pytest.approx(0.3, abs=0.05)
    assert verdicts["historical_term"]["verdict"] == "inconclusive" and verdicts["historical_term"]["n_seeds"] == 3
    # SPIN rises 1 nat above its best earlier point (5.0 after iteration 0, then 6.0) in every seed; T-SPIN never
    assert verdicts["stable_chosen"]["verdict"] == "confirmed" and verdicts["stable_chosen"]["estimate"] == -1.0
    assert verdicts["stable_chosen"]["ci95"] == [-1.0, -1.0]
    for v in verdicts.values():
        assert v["verdict"] in ("confirmed", "refuted", "inconclusive") and v["rule"]
        assert {"claim", "verdict", "rule", "estimate", "ci95", "n_seeds"} <= set(v)


def test_an_inconclusive_rate_or_a_failed_precondition_overrides_a_verdict():
    curves = {"sft_sub": (2, lambda s: [5.0, 4.0, 3.0 + _noise(s)]),
              "tspin": (0, lambda s: [5.5, 4.5, 2.5 + _noise(s + 20)])}  # fmt: skip
    v = _verdicts(_results(curves, conclusive={"tspin": False}))["beats_sft_tspin"]
    assert v["verdict"] == "inconclusive" and "Overridden" in v["rule"] and "T-SPIN" in v["rule"]
    v = _verdicts(_results(curves, gate=(False, "no headroom")))["beats_sft_tspin"]
    assert v["verdict"] == "inconclusive" and v["untestable"] and v["rule"].startswith("Untestable")


def test_stray_counts_use_fishers_exact_test():
    warm = 6.0

    def strays(s):  # best 4.0 after iteration 0, then 4.0 + 1.5: a rise of 1.5 nats
        return [4.0, 5.5, 5.0]

    curves = {"tspin": (0, lambda s: [5.0, 4.5, 4.0]), "spin": (0, lambda s: [5.0, 4.5, 4.0])}
    extra = [_record("tspin", 1, s, [5.0, 4.6, 4.2]) for s in range(5)]
    extra += [_record("spin", 1, s, strays(s)) for s in range(5)]
    v = _verdicts(_results(curves, extra=extra))["stray"]
    assert v["counts"] == {"tspin": [0, 5], "spin": [5, 5]} and v["fisher_p"] == pytest.approx(2 / 252)
    assert v["verdict"] == "confirmed" and v["estimate"] == -1.0 and v["ci95"][1] < 0
    assert warm > 5.5  # the rise counts from the best earlier point, not from the warm start


def test_inversion_claim_needs_an_order_to_keep():
    results = _results({"tspin": (0, lambda s: [5.0, 4.0, 3.0])})
    for r in results["runs"]:
        r["train_logs"] = [{"logps/real": -15.0, "logps/synthetic": -10.0 - i - 0.1 * r["seed"]} for i in range(3)]
    v = _verdicts(results)["no_inversion"]  # starts inverted (-5 nats): nothing to keep
    assert v["verdict"] == "inconclusive" and v["per_iteration"]["mean"][0] < 0
    for r in results["runs"]:
        r["train_logs"] = [{"logps/real": -10.0 + 0.1 * r["seed"], "logps/synthetic": -10.5 - 0.1 * r["seed"] + i}
                           for i in range(3)]  # fmt: skip
    v = _verdicts(results)["no_inversion"]  # above 0 at first, below 0 in iteration 2: lost the order
    assert v["verdict"] == "refuted"


def test_selection_needs_skipped_prompts_and_reports_the_time_saved_with_its_sign():
    curves = {"tspin": (0, lambda s: [5.0, 4.0, 3.0 + _noise(s)])}
    kept = [{"iteration": 0, "kept": 400, "skipped": 0}, {"iteration": 1, "kept": 380, "skipped": 20},
            {"iteration": 2, "kept": 400, "skipped": 0}]  # fmt: skip
    extra = [_record("tspin_select", 0, s, [5.0, 4.0, 3.0 + _noise(s)], selection=kept, prepare=[0.1, 0.5, 0.5])
             for s in range(3)]  # fmt: skip
    results = _results(curves, extra=extra)
    verdicts = _verdicts(results)
    # preparation took longer with selection (0.5 s against 0.1 s per iteration): a cost, not a saving
    assert (
        verdicts["selection_time"]["estimate"] == pytest.approx(-0.8)
        and verdicts["selection_time"]["verdict"] == "refuted"
    )
    assert verdicts["selection_quality"]["verdict"] == "confirmed"
    table = analysis.selection_table(
        analysis.index(results["runs"]), {"tspin": 0}, [0, 1, 2, 3, 4], results["setting"]
    )
    assert table["seeds_with_share_below_1"] == 3 and table["mean_skipped"] == [0, 20, 0]
    assert table["share_trained_per_iteration"][1] == pytest.approx(380 / 400)
    for r in extra:
        r["selection"] = [dict(it, kept=400, skipped=0) for it in kept]
    v = _verdicts(results)["selection_quality"]
    assert v["verdict"] == "inconclusive" and "no prompt was skipped" in v["rule"]


def test_preconditions_are_paired_by_seed():
    curves = {"sft_sub": (2, lambda s: [5.0, 4.0, 3.0 + _noise(s)]), "sft_full": (2, lambda s: [4.0, 3.0, 2.0])}
    results = _results(curves)
    pre = analysis.preconditions(results["runs"], results["warm_starts"], {"sft_sub": 2, "sft_full": 2}, range(5))
    assert all(p["holds"] for p in pre.values()) and pre["sft_subset_improves_on_warm_start"]["n_seeds"] == 5
    assert pre["sft_subset_improves_on_warm_start"]["estimate"] == pytest.approx(-3.0, abs=0.05)
    holds, text = analysis.gate(range(5))({"runs": results["runs"], "warm_starts": results["warm_starts"],
                                           "chosen": {"sft_sub": 2, "sft_full": 2}})  # fmt: skip
    assert holds and "proto_follows_old_rule: holds" in text
    worse = _results(
        {"sft_sub": (2, lambda s: [5.0, 4.0, 3.0]), "sft_full": (2, lambda s: [4.0, 3.0, 3.2 + _noise(s)])}
    )
    pre = analysis.preconditions(worse["runs"], worse["warm_starts"], {"sft_sub": 2, "sft_full": 2}, range(5))
    assert not pre["sft_full_improves_on_sft_subset"]["holds"]


def test_page_and_json_from_a_results_file(tmp_path):
    from repro import report

    rng = random.Random(0)
    curves = {m: (0 if runs.METHODS[m].kind == "selfplay" else 2, lambda s, m=m: [5 + rng.random() for _ in range(3)])
              for m in runs.METHODS if runs.METHODS[m].rate == "grid"}  # fmt: skip
    extra = []
    extra += [_record("tspin", 1, s, [5.0, 4.5, 4.2]) for s in range(5)]
    extra += [_record("spin", 1, s, [5.0, 4.0, 6.0]) for s in range(5)]
    kept = [{"iteration": t, "kept": 400 - 10 * t, "skipped": 10 * t} for t in range(3)]
    extra += [_record("tspin_select", 0, s, [5.0, 4.0, 3.0], selection=kept) for s in range(3)]
    extra += [_record(m, k, s, [5.0, 4.0, 3.0]) for m in ("spin_anneal", "tspin_anneal") for k in (0, 1)
              for s in range(3)]  # fmt: skip
    results = _results(curves, extra=extra)
    report.render(results, tmp_path / "reproduction.md", tmp_path / "figures")
    page = (tmp_path / "reproduction.md").read_text()
    assert "${" not in page and "NaN" not in page
    data = json.loads((tmp_path / "figures" / "reproduction_results.json").read_text())  # strict JSON: no NaN
    assert set(data["preconditions"]) == set(analysis.PRECONDITION_NAMES)
    for p in data["preconditions"].values():
        assert {"holds", "estimate", "ci95"} <= set(p)
    keys = [v["key"] for v in data["verdicts"]]
    assert {"beats_sft_tspin", "beats_sft_spin", "matches_sft_full", "stable_chosen", "stray", "historical_term",
            "no_inversion", "stable_chosen_rmsprop", "selection_quality", "selection_time"} <= set(keys)  # fmt: skip
    assert data["selection"]["mean_kept"] == [400, 390, 380] and data["rules"]["stray_rise_nats"] == 0.5
    for v in data["verdicts"]:  # the page's verdict table shows each verdict with its own numbers
        row = next(line for line in page.splitlines() if line.startswith(f"| {v['claim']}"))
        assert f"**{v['verdict']}**" in row
        if v["estimate"] is not None:
            assert f"{v['estimate']:+.3f}" in row
    assert "(T-SPIN 0/5, SPIN 5/5 strayed" in page  # SPIN rises 2 nats above its best at the stray rate
    for name in ("reproduction_kl.png", "reproduction_stray.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 1000 and f"figures/{name}" in page


def test_committed_page_json_renders_again(tmp_path):
    """`--render-only` re-draws the committed page from its JSON; the numbers in its tables come from that JSON."""
    source = ROOT / "docs" / "figures" / "reproduction_results.json"
    copy = tmp_path / "results.json"
    shutil.copy(source, copy)
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--render-only", str(copy), "--out", str(tmp_path / "page")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, MPLBACKEND="Agg"),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    page = (tmp_path / "page" / "reproduction.md").read_text()
    committed = (ROOT / "docs" / "reproduction.md").read_text()
    section = lambda text: text.split("## Verdicts", 1)[1].split("## The setting", 1)[0]  # noqa: E731
    assert section(page) == section(committed)  # the committed verdicts are what its JSON says


# ---- the script end to end (slow) ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reproduce_smoke(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "proto"), MPLBACKEND="Agg")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--ignore-preconditions", "--out", str(out), "--work-dir", str(work)],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    assert "PRECONDITIONS" in completed.stdout
    results = json.loads((out / "figures" / "reproduction_results.json").read_text())
    assert results["meta"]["mode"] == "smoke" and results["failures"] == []
    assert sorted(results["warm_starts"]) == ["0", "1"]
    assert {r["method"] for r in results["runs"]} == set(runs.METHODS)  # every row ran
    iterations = results["setting"]["iterations"]
    for run in results["runs"]:
        assert len(run["points"]) == iterations
        for point in run["points"]:
            assert (
                point["forward_kl"] > 0 and 0 <= point["validity_greedy"] <= 1 and 0 <= point["validity_sampled"] <= 1
            )
            assert point["advantage_current"] is not None and point["advantage_historical"] is not None
        if runs.METHODS[run["method"]].kind == "selfplay":
            assert len(run["train_logs"]) == iterations and run["train_logs"][0]["logps/real"] is not None
        for part in ("prepare_s", "train_s", "eval_s", "prepare_cpu_s"):
            assert len(run["timing"][part]) == iterations and all(t >= 0 for t in run["timing"][part])
    selection = [r for r in results["runs"] if r["method"] == "tspin_select"]
    assert selection and all(len(r["selection"]) == iterations for r in selection)
    assert all(r["selection"][1]["kept"] + r["selection"][1]["skipped"] == 16 for r in selection)
    assert results["selection"]["per_seed"] and set(results["preconditions"]) == set(analysis.PRECONDITION_NAMES)
    assert len(results["verdicts"]) >= 14 and all(v["untestable"] == (not results["plan"]["gate"]["holds"])
                                                 for v in results["verdicts"])  # fmt: skip
    page = (out / "reproduction.md").read_text()
    assert "${" not in page
    for needle in ("## Preconditions (measured first)", "## Verdicts", "## Rules (written before the run)",
                   "## The learning-rate grids", "python bench/reproduce.py --smoke", "<!-- needs: gpu -->"):  # fmt: skip
        assert needle in page, needle
    assert not (work / "runs").exists()  # run folders are removed

    # --resume makes no run again: every warm start and run comes from the work folder's runs.jsonl
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--ignore-preconditions", "--resume", "--out", str(tmp_path / "again"),
         "--work-dir", str(work)],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "warm start seed" not in again.stdout and " held-out KL " not in again.stdout
    redone = json.loads((tmp_path / "again" / "figures" / "reproduction_results.json").read_text())
    assert redone["verdicts"] == results["verdicts"]


@pytest.mark.slow
def test_gpu_recipe_smoke_runs_its_script_with_workers(tmp_path):
    """bench/reproduce_gpu.sh at the smoke size on this CPU: 2 worker processes, the page in the folder given."""
    out, work = tmp_path / "out", tmp_path / "work"
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "proto"), PATH=venv_bin + os.pathsep + os.environ["PATH"])
    skip = "sft_sub_long,tspin_no_ha,tspin_ref,spin_rms,tspin_rms,spin_anneal,tspin_anneal,tspin_select"
    completed = subprocess.run(
        ["bash", str(ROOT / "bench" / "reproduce_gpu.sh"), str(out), "--smoke", "--ignore-preconditions", "--jobs",
         "2", "--work-dir", str(work), "--skip-rows", skip],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    results = json.loads((out / "figures" / "reproduction_results.json").read_text())
    assert results["meta"]["mode"] == "gpu-smoke" and results["meta"]["jobs"] == 2
    assert results["setting"]["name"] == "shifted-draws-gpu-smoke"
    assert {r["method"] for r in results["runs"]} == {"sft_sub", "sft_full", "spin", "tspin"}
    assert all(results["not_run"][m] == "switched off (--skip-rows)" for m in skip.split(","))
    page = (out / "reproduction.md").read_text()
    assert "**This page is the GPU recipe's.**" in page
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        ["reproduction.md", "reproduction_results.json", "reproduction_kl.png", "reproduction_stray.png"]
    )  # what comes back from the GPU machine: a few small files
    assert not (work / "runs").exists()
