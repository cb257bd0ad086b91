"""bench/reproduce.py in its smallest modes (the CPU page and the GPU recipe's script, end to end), the rules that
decide which runs are made, the verdicts' rules, and the permutation task's exact distances."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "reproduce.py"
sys.path.insert(0, str(ROOT / "bench"))

from repro import analysis, plan, pool, runs  # noqa: E402
from repro.task import Evaluator, is_valid, make_splits  # noqa: E402


PAPER_ROWS = ["sft_full", "sft_quarter", "spin", "spin_mix", "tspin", "tspin_no_ha", "tspin_a01", "tspin_ref"]


def test_splits_are_disjoint_and_answers_are_permutations():
    splits = make_splits(pool=80, held_out=20, validation=20, seed=0)
    assert len(splits["quarter"]) == 20 and splits["quarter"] == splits["pool"][:20]
    prompts = [{r["prompt"][0]["content"] for r in splits[k]} for k in ("pool", "held_out", "validation")]
    assert sum(len(p) for p in prompts) == len(set().union(*prompts)) == 120
    for row in splits["pool"]:
        digits = row["prompt"][0]["content"].removeprefix("perm: ")
        assert 6 <= len(digits) <= 9 and len(set(digits)) == len(digits)
        assert is_valid(row["completion"][0]["content"], digits)


class _Uniform(__import__("torch").nn.Module):
    """A 'model' whose next-token distribution is fixed: the KL of a known distribution must come out exactly."""

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


def test_draws_with_replacement_stay_in_the_prompt_digits():
    splits = make_splits(pool=200, held_out=10, validation=10, seed=0, min_digits=4, max_digits=7, replacement=True)
    repeats = 0
    for row in splits["pool"]:
        digits, answer = row["prompt"][0]["content"].removeprefix("perm: "), row["completion"][0]["content"]
        assert 4 <= len(digits) <= 7 and is_valid(answer, digits, replacement=True)
        repeats += len(set(answer)) < len(answer)
    assert repeats > 100  # with replacement, most answers repeat a digit (a permutation never does)
    assert not is_valid("1123", "1234") and is_valid("1123", "1234", replacement=True)
    assert not is_valid("1125", "1234", replacement=True)


@pytest.mark.parametrize("replacement", [False, True])
def test_forward_kl_is_exact_for_a_known_model(replacement):
    from tspin_trl.demo.presets import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    rows = make_splits(pool=8, held_out=4, validation=4, seed=1, replacement=replacement)["held_out"]
    evaluator = Evaluator(rows, tokenizer, paths=3, samples=0, seed=0, replacement=replacement)
    digits = {tokenizer.convert_tokens_to_ids(d) for d in "0123456789"}
    eos = tokenizer.eos_token_id
    # q = uniform over the 10 digits and the end token at every step (11 tokens): per step the KL to "uniform over the
    # m remaining digits" is log(11/m) (m = n at every step with replacement); the end token (p_data 1) costs log 11.
    model = _Uniform(len(tokenizer), {**{t: 1 / 11 for t in digits}, eos: 1 / 11})
    expected = []
    for row in rows:
        n = len(row["prompt"][0]["content"].removeprefix("perm: "))
        steps = [n] * n if replacement else range(1, n + 1)
        expected.append(sum(math.log(11 / m) for m in steps) + math.log(11) * len(evaluator.tail))
    result = evaluator.forward_kl(model)
    assert result["forward_kl"] == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def _rows_that_run() -> tuple[list[str], list[str]]:
    """The rows this tspin_trl can run, and those whose TSPINConfig fields it lacks."""
    can = [m for m in runs.METHODS if not runs.missing_fields(runs.METHODS[m])]
    return can, [m for m in runs.METHODS if m not in can]


def test_reproduce_smoke(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "proto"), MPLBACKEND="Agg")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--work-dir", str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]

    results = json.loads((out / "figures" / "reproduction_results.json").read_text())
    assert results["meta"]["mode"] == "smoke" and results["meta"]["jobs"] == 1
    can, cannot = _rows_that_run()
    runs_ = results["runs"]
    assert sorted({r["method"] for r in runs_}) == sorted(can)
    assert sorted(results["not_run"]) == sorted(cannot) and results["failures"] == []
    iterations = results["setting"]["iterations"]
    for run in runs_:
        assert len(run["points"]) == iterations
        for point in run["points"]:
            assert point["forward_kl"] > 0 and 0.0 <= point["validity"] <= 1.0 and 0.0 <= point["inversion"] <= 1.0
            assert len(point["margin_quantiles"]) == 5
        if run["method"].startswith("sft"):
            assert run["train_logs"] == {}
        else:
            logs = run["train_logs"]
            assert len(logs["logps/real"]) == iterations and None not in logs["logps/synthetic"]
            assert None not in logs["advantage/saturated"]
            assert all(len(m["scaled"]) == 5 for m in logs["margins"])
            assert len(run["trained_pairs"]) == iterations and all(p > 0 for p in run["trained_pairs"])
        for part in ("prepare_s", "train_s", "eval_s"):
            assert len(run["timing"][part]) == iterations and all(t >= 0 for t in run["timing"][part])
    claims = set(results["summary"]["claims"])
    assert {"stability", "data_efficiency", "likelihood_order", "stabiliser", "historical_term"} <= claims
    assert set(results["summary"]["chosen"]) == set(PAPER_ROWS)
    # the equal-rate rows ran at the equal rate (seed 0: the grid's run, reused)
    assert {(r["method"], r["lr"]) for r in runs_} >= {
        (m, 1e-4) for m in ("tspin", "tspin_no_ha", "tspin_ref", "spin")
    }

    page = (out / "reproduction.md").read_text()
    assert "${" not in page
    for needle in ("## Verdicts", "## Rules (written before the run)", "## The learning-rate grid",
                   "## Equal rates (every seed)", "grid ends because", "python bench/reproduce.py --smoke",
                   "T-SPIN w/o H-A", "<!-- needs: gpu -->"):  # fmt: skip
        assert needle in page, needle
    for m in cannot:  # a row that cannot run is said so, never faked
        assert f"(`{m}`) could not run: this tspin_trl's TSPINConfig has no" in page
    for name in ("reproduction_kl.png", "reproduction_margins.png"):
        figure = out / "figures" / name
        assert figure.is_file() and figure.stat().st_size > 1000
        assert f"figures/{name}" in page


def test_gpu_recipe_smoke_runs_its_script_with_workers(tmp_path):
    """bench/reproduce_gpu.sh at the smoke size on this CPU: 2 worker processes, the page in the folder given."""
    out, work = tmp_path / "out", tmp_path / "work"
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "proto"), PATH=venv_bin + os.pathsep + os.environ["PATH"])
    skip = "sft_full,spin_mix,tspin_no_ha,tspin_a01,tspin_ref"
    completed = subprocess.run(
        [
            "bash",
            str(ROOT / "bench" / "reproduce_gpu.sh"),
            str(out),
            "--smoke",
            "--jobs",
            "2",
            "--work-dir",
            str(work),
            "--skip-rows",
            skip,
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    results = json.loads((out / "figures" / "reproduction_results.json").read_text())
    assert results["meta"]["mode"] == "gpu-smoke" and results["meta"]["jobs"] == 2
    assert results["setting"]["name"] == "draws-gpu-smoke" and results["setting"]["model"] == "llama"
    assert {r["method"] for r in results["runs"]} == {"sft_quarter", "spin", "tspin"}
    assert all(results["not_run"][m] == "switched off (--skip-rows)" for m in skip.split(","))
    assert len({r["wall_s"] for r in results["runs"]}) == 3
    page = (out / "reproduction.md").read_text()
    assert "**This page is the GPU recipe's.**" in page and "2 runs at once" in page
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        ["reproduction.md", "reproduction_results.json", "reproduction_kl.png", "reproduction_margins.png"]
    )  # what comes back from the GPU machine: at most 8 files
    assert not (work / "runs").exists()  # run folders are removed


# ---- the rules that decide which runs are made ---------------------------------------------------------------------


def test_ladder_steps_through_1_and_3():
    assert plan.ladder(3e-5, -1) == 1e-5 and plan.ladder(1e-5, -1) == 3e-6 and plan.ladder(1e-4, +1) == 3e-4
    assert plan.ladder(5e-5, -1) == 3e-5 and plan.ladder(5e-5, +1) == 1e-4


def test_extension_rule():
    initial = [1e-5, 3e-5, 1e-4]
    # lowest chosen, far from the warm start: go down, up to the limit
    assert plan.extension({1e-5: 2.1, 3e-5: 2.2, 1e-4: 3.0}, initial, 2.0, 2, 1) == (3e-6, "")
    assert plan.extension({1e-6: 2.05, 3e-6: 2.06, 1e-5: 2.1, 3e-5: 2.2}, initial, 2.0, 2, 1)[1].startswith(
        "lowest rate after 2 downward extension(s)"
    )
    # lowest chosen within the noise floor of the warm start: lower rates cannot be told from not training
    final, why = plan.extension({1e-5: 2.01, 3e-5: 2.2, 1e-4: 3.0}, initial, 2.0, 2, 1)
    assert final is None and "cannot be told from not training" in why
    assert plan.extension({1e-5: 2.1, 3e-5: 2.05, 1e-4: 3.0}, initial, 2.0, 2, 1) == (None, "interior")
    assert plan.extension({1e-5: 2.3, 3e-5: 2.2, 1e-4: 2.1}, initial, 2.0, 2, 1) == (3e-4, "")
    assert plan.extension({1e-5: 2.3, 3e-5: 2.2, 1e-4: 2.1, 3e-4: 2.0}, initial, 2.0, 2, 1)[0] is None
    assert plan.choose({1e-5: 2.0, 3e-5: 2.0, 1e-4: float("nan")}) == 1e-5  # ties: the lower rate; NaN never


def _setting(**overrides):
    s = runs.Setting(name="t", model="llama", pool=8, held_out=4, validation=4, iterations=2, sft_lrs=[1e-4, 3e-4],
                     selfplay_lrs=[1e-5, 3e-5, 1e-4], seeds=[0, 1, 2], methods=list(runs.METHODS),
                     extend_down=2, extend_up=1)  # fmt: skip
    for k, v in overrides.items():
        setattr(s, k, v)
    return s


def _drive(planner, validation_kl):
    """Make every run the planner asks for, with `validation_kl(method, lr)` as its result, in its order."""
    made = []
    while jobs := planner.ready():
        job = jobs[0]
        planner.start(job)
        made.append((job.method, job.lr, job.seed, job.reason))
        planner.record({"method": job.method, "lr": job.lr, "seed": job.seed,
                        "validation_kl": validation_kl(job.method, job.lr)})  # fmt: skip
    return made


def test_planner_extends_grids_then_runs_seeds_equal_rates_and_beyond_paper_rows():
    rows = list(runs.METHODS)
    planner = plan.Planner(_setting(), runs.METHODS, rows, warm_validation_kl=2.0)

    def validation_kl(method, lr):  # SFT best at 3e-4 (the top: one extension up, to 1e-3, worse); self-play rows
        if runs.METHODS[method].kind == "sft":  # get better as the rate falls, tspin_ref flattening at 3e-6
            return {1e-4: 1.98, 3e-4: 1.95, 1e-3: 2.3}[lr]
        if method == "tspin_ref":
            return 2.0 + 0.01 * lr / 3e-6  # within 0.02 of the warm start from 3e-6 down
        return 2.1 + lr * 1e3

    made = _drive(planner, validation_kl)
    keys = [(m, lr, seed) for m, lr, seed, _ in made]
    assert len(keys) == len(set(keys))  # no run twice
    summary = planner.summary()["rows"]
    assert summary["sft_full"]["rates"] == [1e-4, 3e-4, 1e-3] and summary["sft_full"]["chosen"] == 3e-4
    assert summary["sft_full"]["status"] == "interior"
    assert summary["tspin"]["rates"] == [1e-6, 3e-6, 1e-5, 3e-5, 1e-4] and summary["tspin"]["chosen"] == 1e-6
    assert summary["tspin"]["status"].startswith("lowest rate after 2 downward extension(s)")
    assert summary["tspin_ref"]["rates"] == [3e-6, 1e-5, 3e-5, 1e-4]
    assert "cannot be told from not training" in summary["tspin_ref"]["status"]
    # every seed at the chosen rate; equal rates with every seed; annealed rows and their comparison rows at anneal_lr
    for m in ("sft_full", "tspin", "spin"):
        assert all((m, summary[m]["chosen"], s) in keys for s in (0, 1, 2))
    for m in ("tspin", "tspin_no_ha", "tspin_ref", "spin"):
        assert all((m, lr, s) in keys for lr in (5e-5, 1e-4) for s in (0, 1, 2))
    for m, base in (("spin_anneal", "spin"), ("tspin_anneal", "tspin_a01")):
        assert all((m, 1e-4, s) in keys and (base, 1e-4, s) in keys for s in (0, 1, 2))
    assert all(("tspin_select", summary["tspin"]["chosen"], s) in keys for s in (0, 1, 2))
    # priorities: every grid run of a row comes before its seeds; selection (last priority) after T-SPIN's seeds
    order = {k: i for i, k in enumerate(keys)}
    assert order[("tspin", 1e-6, 0)] < order[("tspin", 1e-6, 1)]
    assert order[("tspin", 1e-6, 2)] < order[("tspin_select", 1e-6, 0)]
    assert dict(((m, lr, s), r) for m, lr, s, r in made)[("tspin", 1e-4, 0)] == "grid"


def test_planner_without_rows_and_with_skipped_runs():
    planner = plan.Planner(_setting(), runs.METHODS, ["sft_quarter", "tspin"], warm_validation_kl=2.0)
    jobs = planner.ready()
    assert {(j.method, j.reason) for j in jobs} == {("sft_quarter", "grid"), ("tspin", "grid"), ("tspin", "equal")}
    for job in jobs:
        if job.method == "tspin" and job.lr == 1e-4 and job.seed == 0:
            planner.skip(job, "not run: the recipe's deadline")
        elif job.seed == 0 and job.reason == "grid":
            planner.start(job)
            planner.record({"method": job.method, "lr": job.lr, "seed": 0, "validation_kl": 2.1 + job.lr})
    planner.ready()
    row = planner.summary()["rows"]["tspin"]
    assert row["final"] and row["chosen"] == 1e-5 and row["status"].startswith("grid incomplete (not run")


def test_runner_deadline_skips_runs_without_making_them():
    planner = plan.Planner(_setting(), runs.METHODS, ["sft_quarter", "tspin"], warm_validation_kl=2.0)
    made = []
    failures = pool.Runner(1).run(planner, lambda job: (_ for _ in ()).throw(AssertionError("no run may start")),
                                  lambda job, record: made.append(job), deadline=time.monotonic() - 1)  # fmt: skip
    assert failures == [] and made == [] and planner.finished()
    assert planner.skipped and all(why == "not run: the recipe's deadline" for why in planner.skipped.values())


# ---- schedules and rows that need new TSPINConfig fields -----------------------------------------------------------


def test_nemo_schedules_and_missing_fields():
    setting = _setting(iterations=5)
    nemo = runs.schedules(runs.METHODS["spin_anneal"], setting)
    assert nemo["learning_rate_schedule"][0] == 1.0 and nemo["learning_rate_schedule"][-1] == 0.2
    assert nemo["alpha_schedule"][0] == 0.1 and nemo["alpha_schedule"][-1] == 5.0
    ratios = [b / a for a, b in zip(nemo["alpha_schedule"], nemo["alpha_schedule"][1:])]
    assert max(ratios) - min(ratios) < 1e-3 and len(nemo["alpha_schedule"]) == 5
    select = runs.schedules(runs.METHODS["tspin_select"], setting)
    assert select == {"prompt_selection_threshold": 2.0, "prompt_selection_min_share": 0.5}
    assert runs.schedules(runs.METHODS["tspin"], setting) == {}
    from dataclasses import fields

    from tspin_trl import TSPINConfig

    have = {f.name for f in fields(TSPINConfig)}
    for key, method in runs.METHODS.items():
        assert runs.missing_fields(method) == [f for f in [*nemo, *select] if f not in have and (
            (f in nemo and method.schedule) or (f in select and method.selection))], key  # fmt: skip


# ---- the verdicts' rules -------------------------------------------------------------------------------------------


def _run(method, lr, seed, kls, **extra):
    return {"method": method, "lr": lr, "seed": seed, "points": [{"forward_kl": k} for k in kls],
            "validation_kl": kls[-1], **extra}  # fmt: skip


def test_historical_term_and_improvement_verdicts():
    setting = {"equal_lrs": [5e-5, 1e-4], "equal_rows": ["tspin", "tspin_no_ha"], "seeds": [0, 1, 2]}
    by_key = {}
    for seed in (0, 1, 2):
        for lr, (with_term, without) in ((5e-5, (2.05, 2.04)), (1e-4, (3.6 + seed * 0.1, 2.1))):
            by_key[("tspin", lr, seed)] = _run("tspin", lr, seed, [2.0, with_term])
            by_key[("tspin_no_ha", lr, seed)] = _run("tspin_no_ha", lr, seed, [2.0, without])
    eq = analysis.equal_rates(by_key, setting, warm_kl=1.98)
    verdict = analysis.historical_term_verdict(eq)
    assert verdict["verdict"] == "shown at lr 0.0001" and "3 seed(s)" in verdict["why"]
    assert eq["0.0001"]["rows"]["tspin"]["jumped"] == 3 and eq["5e-05"]["rows"]["tspin"]["jumped"] == 0
    methods = {m: SimpleNamespace(kind="selfplay") for m in ("tspin", "tspin_no_ha")}
    imp = analysis.improvements(by_key, setting, methods, warm_kl=1.98)
    assert imp["improved"] == [] and imp["best"]["method"] == "tspin_no_ha" and imp["best"]["lr"] == 5e-5
    better = analysis.improvements(by_key, setting, methods, warm_kl=2.2)
    assert {(c["method"], c["lr"]) for c in better["improved"]} == {("tspin", 5e-5), ("tspin_no_ha", 5e-5),
                                                                     ("tspin_no_ha", 1e-4)}  # fmt: skip


def test_render_only_redraws_the_committed_page_json(tmp_path):
    """The page from before the planner (docs/figures/reproduction_results.json) still renders, with today's rules."""
    source = ROOT / "docs" / "figures" / "reproduction_results.json"
    copy = tmp_path / "results.json"
    shutil.copy(source, copy)
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--render-only", str(copy), "--out", str(tmp_path / "page")],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, MPLBACKEND="Agg"),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    page = (tmp_path / "page" / "reproduction.md").read_text()
    assert "${" not in page and "## Verdicts" in page


def _synthetic_results(iterations: int = 3, seeds=(0, 1, 2)) -> dict:
    """A complete results file with every row (the annealed and selection rows too), its numbers drawn at random:
    what `report.render` must turn into a page whatever the trainer's version runs."""
    import random

    rng = random.Random(0)
    setting = _setting(iterations=iterations, seeds=list(seeds)).to_dict()
    setting.update(
        pool=40,
        min_digits=4,
        max_digits=7,
        replacement=True,
        tiny_shape=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
    )

    def point():
        return {"forward_kl": 2 + rng.random(), "nll_pdata": 11.0, "validity": rng.random(), "reverse_kl_valid": 1.0,
                "distinct_valid": 1.0, "inversion": rng.random(), "margin_quantiles": sorted(rng.gauss(0, 1)
                                                                                           for _ in range(5)),
                "logp_real": -11.0}  # fmt: skip

    def record(method, lr, seed):
        selfplay = runs.METHODS[method].kind == "selfplay"
        logs = {}
        if selfplay:
            logs = {k: [rng.gauss(-11, 0.1) if k.startswith("logps") else rng.random() for _ in range(iterations)]
                    for k in runs.PER_ITERATION_KEYS}  # fmt: skip
            logs["margins"] = [{"scaled": sorted(rng.gauss(0, 1) for _ in range(5)), "likelihood": [0.0] * 5}
                               for _ in range(iterations)]  # fmt: skip
            logs["selection"] = [{} for _ in range(iterations)]
        pairs = [10 - 3 * (i > 0) * (method == "tspin_select") for i in range(iterations)]
        return {"method": method, "lr": lr, "seed": seed, "points": [point() for _ in range(iterations)],
                "validation_kl": 2 + rng.random(), "train_logs": logs, "train_steps": 3, "trained_pairs": pairs,
                "timing": {k: [rng.random() for _ in range(iterations)] for k in ("prepare_s", "train_s", "eval_s")},
                "wall_s": 5.0}  # fmt: skip

    planner = plan.Planner(setting, runs.METHODS, list(runs.METHODS), warm_validation_kl=2.5)
    records = []
    while jobs := planner.ready():
        for job in jobs:
            planner.start(job)
            records.append(record(job.method, job.lr, job.seed))
            planner.record(records[-1])
    warm = {"seed": 0, "params": 1000, "wall_s": 1.0, "held_out": point(), "validation": point(), "quarter": point(),
            "epochs": [{"epoch": 1, "train": {"forward_kl": 3.0, "logp_real": -12.0},
                        "held_out": {"forward_kl": 3.1, "logp_real": -12.5}}]}  # fmt: skip
    meta = {"mode": "full", "command": "python bench/reproduce.py", "wall_s": 60.0, "cpu_s": 50.0,
            "load_average": [1.0, 1.0], "machine": "test", "python": "3", "versions": {}, "date": "today", "jobs": 1,
            "deadline_min": None}  # fmt: skip
    return {"meta": meta, "setting": setting, "warm_start": warm, "runs": records, "plan": planner.summary(),
            "not_run": {}, "failures": []}  # fmt: skip


def test_page_with_every_row_renders_every_verdict(tmp_path):
    from repro import report

    results = _synthetic_results()
    report.render(results, tmp_path / "reproduction.md", tmp_path / "figures")
    page = (tmp_path / "reproduction.md").read_text()
    assert "${" not in page
    claims = results["summary"]["claims"]
    assert set(claims) == {"stability", "data_efficiency", "likelihood_order", "stabiliser", "historical_term",
                           "annealing", "selection"}  # fmt: skip
    assert claims["annealing"]["verdict"].startswith("SPIN, NeMo annealing: ")
    assert "share of the self-play prompts trained on per iteration 1.00 / 0.70 / 0.70" in claims["selection"]["why"]
    for needle in ("**SPIN, NeMo annealing** (lr 0.0001, 3 seeds)", "Prompt selection side by side",
                   "| 1 | 7 / 10 |", "Every planned run ran."):  # fmt: skip
        assert needle in page, needle
