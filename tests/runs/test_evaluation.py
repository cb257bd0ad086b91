"""`evaluate()` and `predict()` as a TRL user calls them: on raw sets before, during and after training; evaluation
data gets its own responses each iteration."""

import math

import pytest
from datasets import Dataset

from tests.support import make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model
from tspin_trl.self_play import SelfPlayError


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
    # the likelihood inversion on the evaluation data, before training and after every iteration
    inversion = [h for h in trainer.state.log_history if "self_play/likelihood_inversion" in h]
    # before training: on the first training entry (step 1); after iteration 0: on the first training entry of
    # iteration 1 (step 3); after iteration 1: on the train summary
    assert [(h["step"], "loss" in h, "train_runtime" in h) for h in inversion] == [
        (1, True, False),
        (3, True, False),
        (4, False, True),
    ]
    assert all(0 <= h["self_play/likelihood_inversion"] <= 1 for h in inversion)
    records = trainer.run_folder.iteration_records()
    assert all("likelihood_inversion" in records[t] for t in (0, 1))


def held_out_rows(n=4, conversational=True):
    return sorting_rows(8 + n, conversational=conversational)[8:]


def test_evaluate_prepares_a_raw_set_before_and_after_training(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=2, per_device_eval_batch_size=2)
    before = trainer.evaluate(eval_dataset=Dataset.from_list(held_out_rows()))
    assert math.isfinite(before["eval_loss"]) and math.isfinite(before["eval_logps/real"])
    assert list((tmp_path / "self_play" / "evaluate" / "step_0").glob("eval-*.jsonl")), "bound to the run on disk"
    trainer.train()
    # new prompts after training: the initial policy that samples their proto responses is gone (DPO refuses alike)
    with pytest.raises(SelfPlayError, match=r"Cannot evaluate 'eval' now: .*proto-synthetic.*`eval_dataset` when"):
        trainer.evaluate(eval_dataset=Dataset.from_list(held_out_rows(3)))
    seen = trainer.evaluate(eval_dataset=Dataset.from_list(held_out_rows()))  # proto cached before training
    assert math.isfinite(seen["eval_logps/proto"])


def test_evaluate_takes_iterable_and_named_sets_and_feeds_compute_metrics(tmp_path, tokenizer):
    received = []

    def compute_metrics(prediction):
        received.append(prediction)
        margins = prediction.predictions[:, 3] - prediction.predictions[:, 4]
        return {"mean_margin": float(margins.mean())}

    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, per_device_eval_batch_size=3),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    rows = held_out_rows(5, conversational=False)
    streamed = trainer.evaluate(eval_dataset=Dataset.from_list(rows).to_iterable_dataset())
    assert math.isfinite(streamed["eval_loss"]) and math.isfinite(streamed["eval_mean_margin"])
    prediction = received[-1]
    assert prediction.predictions.shape == (5, 6) and (prediction.label_ids == 0).all()
    assert math.isnan(prediction.predictions[0, 2]), "no proto response in iteration 0 (beta 0)"
    named = trainer.evaluate(eval_dataset={"short": Dataset.from_list(rows[:2]), "long": Dataset.from_list(rows)})
    for name in ("short", "long"):
        assert {f"eval_{name}_loss", f"eval_{name}_logps/real", f"eval_{name}_mean_margin"} <= set(named), named


def test_init_time_sets_evaluate_before_training_and_predict_takes_a_raw_set(tmp_path, tokenizer):
    """DPO evaluates the sets given at init before `train()`, and code written for it reads `ref_model`."""
    sets = {"a": Dataset.from_list(held_out_rows(3)), "b": Dataset.from_list(held_out_rows(2))}
    trainer = self_play_trainer(tmp_path, tokenizer, eval_dataset=sets, num_iterations=2)
    assert trainer.ref_model is None and trainer.padding_free is trainer.share_prompt
    before = trainer.evaluate()
    assert math.isfinite(before["eval_a_loss"]) and math.isfinite(before["eval_b_logps/real"])
    assert not trainer.eval_dataset["a"].has("synthetic"), "training prepares the set given at init itself"
    output = trainer.predict(Dataset.from_list(held_out_rows(3)))
    assert output.predictions.shape == (3, 6) and math.isfinite(output.metrics["test_loss"])
    trainer.train()
    after = trainer.evaluate()
    assert math.isfinite(after["eval_a_loss"]) and after["eval_a_loss"] != before["eval_a_loss"]


def test_evaluate_without_a_set_and_a_compute_metrics_returning_none_name_the_argument(tmp_path, tokenizer):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
        compute_metrics=lambda prediction: None,
    )
    with pytest.raises(ValueError, match=r"evaluate\(\) has no evaluation data: pass `eval_dataset`"):
        trainer.evaluate()
    with pytest.raises(ValueError, match=r"evaluate\(eval_dataset='nosuch'\): .* given no evaluation set"):
        trainer.evaluate(eval_dataset="nosuch")
    with pytest.raises(TypeError, match=r"compute_metrics \('<lambda>'\) returned NoneType: it must return a dict"):
        trainer.evaluate(eval_dataset=Dataset.from_list(held_out_rows(2)))

    named = self_play_trainer(tmp_path / "named", tokenizer, eval_dataset={"a": Dataset.from_list(held_out_rows(2))})
    with pytest.raises(
        ValueError, match=r"evaluate\(eval_dataset='b'\): .* no evaluation set of that name; .*\['a'\]"
    ):
        named.evaluate(eval_dataset="b")
