"""Runs with a scorer: scored before training and after every iteration; a failing scorer is named and the run
goes on."""

import json

from datasets import Dataset

from tests.support import make_config, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model


def test_a_failing_scorer_is_named_and_the_checkpoint_kept(tmp_path, tokenizer, caplog):
    calls = []

    def broken_scorer(responses, rows):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("scorer bug")
        return 0.5

    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, num_iterations=2, per_device_train_batch_size=2, save_strategy="epoch"),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
        scorer=broken_scorer,
        scorer_dataset=Dataset.from_list(sorting_rows(2)),
    )
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "The scorer test_a_failing_scorer_is_named_and_the_checkpoint_kept.<locals>.broken_scorer raised" in (
        caplog.text
    )
    assert (tmp_path / "checkpoint-2").is_dir() and (tmp_path / "checkpoint-4").is_dir()
    records = trainer.run_folder.scores()
    assert [r["label"] for r in records] == ["start", "iteration_0", "iteration_1"]
    assert records[1]["error"] == "RuntimeError: scorer bug"


def test_a_nan_score_is_warned(tmp_path, tokenizer, caplog):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, per_device_train_batch_size=2),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
        scorer=lambda responses, rows: float("nan"),
        scorer_dataset=Dataset.from_list(sorting_rows(2)),
    )
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "returned nan" in caplog.text


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
