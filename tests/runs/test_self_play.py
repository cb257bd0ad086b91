"""Self-play in one `train()`: every iteration regenerates its synthetic responses from the policy it trained, proto
responses come from the cache or the initial policy, reference log-probs are stored per iteration."""

import json
import os
from pathlib import Path

import pytest

from tests.support import CountGenerate, iteration_rows, self_play_trainer, sorting_rows
from tspin_trl.demo import build_tiny_model


@pytest.mark.parametrize("num_iterations", [2, 3])
def test_iterations_in_one_train(tmp_path, tokenizer, num_iterations):
    trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=num_iterations, beta=0.2)
    trainer.train()
    steps_per_epoch = 4  # 8 prompts, batch 2
    assert trainer.state.global_step == num_iterations * steps_per_epoch

    iterations = [iteration_rows(tmp_path, t) for t in range(num_iterations)]
    proto = [[row["proto_ids"] for row in rows] for rows in iterations]
    synthetic = [[row["synthetic_ids"] for row in rows] for rows in iterations]
    assert all(p == proto[0] for p in proto), "proto responses never change"
    assert synthetic[0] == proto[0], "iteration 0 reuses the proto responses"
    for t in range(1, num_iterations):
        assert synthetic[t] != synthetic[t - 1], f"synthetic responses must change at iteration {t}"
    # one proto pass and one pass per later iteration, nothing else
    assert sorted(trainer.self_play.generation_stats) == sorted(
        ["proto/train"] + [f"iteration_{t}/train" for t in range(1, num_iterations)]
    )
    meta = json.loads((tmp_path / "self_play" / "iteration_1" / "train.meta.json").read_text())
    assert meta["sampling"]["max_new_tokens"] == 10 and meta["beta"] == 0.2
    assert {"prompt", "real", "synthetic", "proto"} <= set(iterations[1][0])

    logs = [h for h in trainer.state.log_history if "loss" in h]
    for h in logs:
        iteration = int(h["step"] - 1) // steps_per_epoch
        assert h["self_play/iteration"] == iteration
        assert h["beta"] == pytest.approx(0.0 if iteration == 0 else 0.2)
        assert ("logps/proto" in h) == (iteration > 0)
    # every iteration is its own run: the linear schedule starts again at each iteration
    lrs = [h["learning_rate"] for h in logs]
    expected = [1e-3 * (1 - k / steps_per_epoch) for k in range(steps_per_epoch)] * num_iterations
    assert lrs == pytest.approx(expected)
    resets = [h["self_play/optimizer_states_reset"] for h in logs if "self_play/optimizer_states_reset" in h]
    assert len(resets) == num_iterations - 1 and all(r > 0 for r in resets)


def test_spin_and_tspin_ref_store_reference_logps_per_iteration(tmp_path, tokenizer):
    for objective in ("spin", "tspin_ref"):
        out = tmp_path / objective
        trainer = self_play_trainer(out, tokenizer, objective=objective, alpha=0.1)
        trainer.train()
        rows = iteration_rows(out, 1)
        assert all("ref_real_logps" in row and "ref_synthetic_logps" in row for row in rows)
        assert all(("ref_proto_logps" in row) == (objective == "tspin_ref") for row in rows)
        logs = [h for h in trainer.state.log_history if "loss" in h]
        # at the first step of an iteration the policy is the reference: rewards are ~0
        assert logs[4]["rewards/real"] == pytest.approx(0.0, abs=1e-4)
        assert trainer.ref_model is None  # DPOTrainer's attribute, for code written against it: no reference model


def test_proto_cache_hit_and_invalidation(tmp_path, tokenizer):
    def run(name, rows=None, seed=0, **config):
        model = build_tiny_model(tokenizer, seed=seed)
        counter = CountGenerate(model)
        trainer = self_play_trainer(tmp_path / name, tokenizer, rows=rows, model=model, num_iterations=1, **config)
        trainer.train()
        return counter.calls, trainer

    first, trainer = run("first")
    assert first > 0
    second, again = run("second")
    assert second == 0, "the second run with the same key must not generate"
    assert again.train_dataset.column("proto_ids") == trainer.train_dataset.column("proto_ids")
    assert run("other_model", seed=1)[0] > 0
    assert run("other_prompts", rows=sorting_rows(9))[0] > 0
    assert run("other_sampling", temperature=0.7)[0] > 0
    assert run("other_length", max_completion_length=9)[0] > 0

    cache_dir = Path(os.environ["TSPIN_TRL_CACHE"])
    entries = sorted(cache_dir.glob("*.jsonl"))
    assert len(entries) == 5 and not list(cache_dir.glob("*.chunks"))
    # corrupt the first entry: it is detected, regenerated, and rewritten
    first_entry = next(p for p in entries if p.stat().st_mtime == min(e.stat().st_mtime for e in entries))
    first_entry.write_text(first_entry.read_text()[:-5])
    calls, trainer = run("after_corruption")
    assert calls > 0
    calls, _ = run("after_repair")
    assert calls == 0


def test_tspin_ref_with_data_mixing_trains(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, objective="tspin_ref", alpha=0.1, mix_previous_iteration=True)
    trainer.train()  # 4 reference roles: computed as 3 + 1 responses per forward pass
    rows = [json.loads(line) for line in (tmp_path / "self_play" / "iteration_1" / "train.jsonl").open()]
    assert all("ref_previous_synthetic_logps" in r and "ref_proto_logps" in r for r in rows)


def test_proto_responses_a_later_iteration_needs_are_sampled_at_the_start(tmp_path, tokenizer):
    """Without reusing them as iteration 0's synthetic responses, iteration 0 does not use the proto responses, but
    iteration 1 does: they must come from the initial policy, so they are sampled before training."""
    trainer = self_play_trainer(tmp_path, tokenizer, reuse_proto_as_first_synthetic=False, num_iterations=2)
    trainer.train()
    assert sorted(trainer.self_play.generation_stats) == ["iteration_0/train", "iteration_1/train", "proto/train"]
    assert trainer.state.global_step == 8
