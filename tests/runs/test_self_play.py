import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from tests.support import StopAfter, make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model


ROOT = Path(__file__).resolve().parents[2]


def iteration_rows(output_dir, iteration):
    path = Path(output_dir) / "self_play" / f"iteration_{iteration}" / "train.jsonl"
    return [json.loads(line) for line in path.open()]


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


class CountGenerate:
    def __init__(self, model):
        self.calls = 0
        original = model.generate

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        model.generate = counted


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


def test_resume_in_iteration_1_matches_an_uninterrupted_run(tmp_path, tokenizer):
    config = dict(num_iterations=3, beta=0.1, save_strategy="steps", save_steps=1, seed=3)
    reference = self_play_trainer(tmp_path / "uninterrupted", tokenizer, **config)
    reference.train()

    interrupted = self_play_trainer(tmp_path / "resumed", tokenizer, **config)
    interrupted.add_callback(StopAfter(6))  # iteration 1 is steps 5..8
    interrupted.train()
    assert interrupted.state.global_step == 6

    resumed = self_play_trainer(tmp_path / "resumed", tokenizer, **config)
    counter = CountGenerate(resumed.model)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-6"))
    # iteration 1 is reloaded from disk (not regenerated with mid-epoch weights); only iteration 2 is generated
    assert sorted(resumed.self_play.generation_stats) == ["iteration_2/train"]
    assert counter.calls == 2 + 1  # 8 prompts / batch 4, and the preflight's one prompt
    assert iteration_rows(tmp_path / "resumed", 1) == iteration_rows(tmp_path / "uninterrupted", 1)
    assert iteration_rows(tmp_path / "resumed", 2) == iteration_rows(tmp_path / "uninterrupted", 2)
    for (name, a), b in zip(reference.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resume")


@pytest.mark.slow
def test_sigkill_during_regeneration_resumes_from_the_last_chunk(tmp_path):
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "cache"))
    base = [
        sys.executable,
        str(ROOT / "tests" / "support" / "scripts" / "run_tiny.py"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    base += ["--result", str(tmp_path / "result"), "--save_strategy", "epoch"]  # 12 prompts, 2 per call: 6 chunks
    killed = subprocess.run(base + ["--kill_after_chunks", "4"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    chunks = sorted((tmp_path / "out" / "self_play" / "iteration_1" / "train_chunks").glob("chunk_*.jsonl"))
    assert len(chunks) == 4

    resumed = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((tmp_path / "result.rank0.json").read_text())
    stats = result["generation_stats"]["iteration_1/train"]
    assert stats["reused_chunks"] == 4 and stats["generate_calls"] == 2
    assert result["generate_calls"] == 2  # proto came from the cache / iteration 0 file
    assert result["global_step"] == 12

    fresh = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "support" / "scripts" / "run_tiny.py"),
            "--output_dir",
            str(tmp_path / "fresh"),
            "--result",
            str(tmp_path / "fresh_result"),
            "--save_strategy",
            "epoch",
        ],
        env=dict(env, TSPIN_TRL_CACHE=str(tmp_path / "cache_fresh")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    fresh_result = json.loads((tmp_path / "fresh_result.rank0.json").read_text())
    assert result["synthetic_ids"] == fresh_result["synthetic_ids"]
    assert result["param_sum"] == pytest.approx(fresh_result["param_sum"], rel=1e-6)


def test_vanishing_advantage_alarm(tmp_path, tokenizer, caplog):
    rows = [r | {"synthetic": r["completion"], "proto": "0 0"} for r in sorting_rows(8, conversational=False)]
    trainer = self_play_trainer(tmp_path / "vanished", tokenizer, rows=rows, num_iterations=1)
    with caplog.at_level("WARNING"):
        trainer.train()
    assert trainer.monitor.alarms["vanishing"] == [0]
    assert "current advantage has vanished" in caplog.text
    vanished = [h for h in trainer.state.log_history if "self_play/advantage_vanished" in h]
    assert [(h["self_play/iteration"], h["self_play/advantage_vanished"]) for h in vanished] == [(0, 1.0)]

    normal = self_play_trainer(tmp_path / "normal", tokenizer, num_iterations=2)
    normal.train()
    assert normal.monitor.alarms["vanishing"] == []
    finals = [h for h in normal.state.log_history if "self_play/advantage_vanished" in h]
    assert [(h["self_play/iteration"], h["self_play/advantage_vanished"]) for h in finals] == [(0, 0.0), (1, 0.0)]


def test_scorer_runs_before_training_and_after_every_iteration(tmp_path, tokenizer):
    held_out = Dataset.from_list(sorting_rows(3))
    seen = []

    def scorer(responses, rows):
        seen.append(len(responses))
        assert rows[0]["prompt"] == held_out[0]["prompt"]
        return sum(r.strip() != "" for r in responses) / len(responses)

    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, num_iterations=2, per_device_train_batch_size=2),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
        scorer=scorer,
        scorer_dataset=held_out,
    )
    trainer.train()
    assert [s["label"] for s in trainer.scoring.scores] == ["start", "iteration_0", "iteration_1"]
    assert seen == [3, 3, 3]
    lines = [json.loads(line) for line in (tmp_path / "self_play" / "scores.jsonl").open()]
    assert [len(line["responses"]) for line in lines] == [3, 3, 3]
    assert any("self_play/score" in h for h in trainer.state.log_history)
    logs = [json.loads(line) for line in (tmp_path / "self_play" / "logs.jsonl").open()]
    assert len(logs) == len(trainer.state.log_history)


def test_scorer_needs_its_dataset(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="Pass both `scorer` and `scorer_dataset`"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path),
            train_dataset=Dataset.from_list(sorting_rows(2)),
            processing_class=tokenizer,
            scorer=lambda responses, rows: 0.0,
        )


def test_eval_dataset_gets_its_own_responses(tmp_path, tokenizer):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(
            tmp_path, num_iterations=2, per_device_train_batch_size=2, eval_strategy="epoch", eval_on_start=True
        ),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        eval_dataset=Dataset.from_list(sorting_rows(6)[4:]),
        processing_class=tokenizer,
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 3 and all("eval_logps/real" in h for h in evals)
    assert (tmp_path / "self_play" / "iteration_1" / "eval.jsonl").is_file()
    assert sorted(trainer.self_play.generation_stats) == sorted(
        ["proto/train", "proto/eval", "iteration_1/train", "iteration_1/eval", "final/eval"]
    )
    # the likelihood inversion on the evaluation data, after every iteration
    inversion = [h for h in trainer.state.log_history if "self_play/likelihood_inversion" in h]
    assert [h["self_play/iteration"] for h in inversion] == [0, 1]
    assert all(0 <= h["self_play/likelihood_inversion"] <= 1 for h in inversion)
    records = trainer.run_folder.iteration_records()
    assert all("likelihood_inversion" in records[t] for t in (0, 1))


def test_gradient_checkpointing_and_lora_self_play(tmp_path, tokenizer):
    from peft import LoraConfig

    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, num_iterations=2, per_device_train_batch_size=4, gradient_checkpointing=True),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    trainer.train()
    assert "iteration_1/train" in trainer.self_play.generation_stats
    assert trainer.model.is_gradient_checkpointing
