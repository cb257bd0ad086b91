"""bench/reproduce.py in its smallest mode, end to end, and the permutation task's exact distances."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "reproduce.py"
sys.path.insert(0, str(ROOT / "bench"))

from repro.task import Evaluator, is_valid, make_splits  # noqa: E402


METHODS = ["sft_full", "sft_quarter", "spin", "spin_mix", "tspin", "tspin_no_ha", "tspin_a01", "tspin_ref"]


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
    assert results["meta"]["mode"] == "smoke"
    runs = results["runs"]
    assert sorted(r["method"] for r in runs) == sorted(METHODS)
    iterations = results["setting"]["iterations"]
    for run in runs:
        assert len(run["points"]) == iterations
        for point in run["points"]:
            assert point["forward_kl"] > 0 and 0.0 <= point["validity"] <= 1.0 and 0.0 <= point["inversion"] <= 1.0
            assert len(point["margin_quantiles"]) == 5
        if run["method"].startswith("sft"):
            assert run["train_logs"] == {}
        else:
            logs = run["train_logs"]
            assert len(logs["logps/real"]) == iterations and None not in logs["logps/synthetic"]
            assert None not in logs["advantage/saturated"] and None not in logs["likelihood_inversion"]
            assert all(len(m["scaled"]) == 5 for m in logs["margins"])
    assert set(results["summary"]["claims"]) == {"stability", "data_efficiency", "likelihood_order", "stabiliser"}
    assert set(results["summary"]["chosen"]) == set(METHODS)

    page = (out / "reproduction.md").read_text()
    assert "${" not in page
    for needle in ("## Verdicts", "## Rules (written before the full run)", "## The learning-rate grid",
                   "python bench/reproduce.py --smoke", "T-SPIN w/o H-A", "not run"):  # fmt: skip
        assert needle in page, needle
    for name in ("reproduction_kl.png", "reproduction_margins.png"):
        figure = out / "figures" / name
        assert figure.is_file() and figure.stat().st_size > 1000
        assert f"figures/{name}" in page
