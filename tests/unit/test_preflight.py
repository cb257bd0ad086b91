"""`tspin_trl/preflight.py`: a setting that would fail at the first iteration boundary (or the first checkpoint) fails
before the first training step, with the same error."""

import pytest

from tests.support import make_config, self_play_trainer, sorting_rows
from tspin_trl.preflight import PreflightError


def given_responses() -> list[dict]:
    """Rows that bring their own synthetic and proto responses: nothing is generated before iteration 1."""
    answer = [{"role": "assistant", "content": "1 2"}]
    return [r | {"synthetic": answer, "proto": answer} for r in sorting_rows(8)]


# `model.generate` rejects keyword arguments the model does not use, but only when it is called
BROKEN_GENERATION = {"generation_kwargs": {"no_such_generate_argument": 1}}


def test_a_broken_generation_setting_fails_at_step_0(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, rows=given_responses(), **BROKEN_GENERATION)
    with pytest.raises(PreflightError, match=r"'generation' failed before the first training step.*no_such_generate"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert not (tmp_path / "self_play" / "iteration_1").exists()


def test_a_checkpoint_that_cannot_be_written_fails_at_step_0(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=1, save_strategy="steps", save_steps=2)
    blocker = tmp_path / "self_play" / "preflight_checkpoint"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the checkpoint folder goes")
    with pytest.raises(PreflightError, match="'checkpoint save and load' failed"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_checkpoint_that_does_not_load_back_as_saved_fails_at_step_0(tmp_path, tokenizer):
    from tspin_trl.demo import build_tiny_model

    model = build_tiny_model(tokenizer)
    model._keys_to_ignore_on_save = {"model.norm.weight"}  # saves leave a trained tensor out
    trainer = self_play_trainer(tmp_path, tokenizer, model=model, save_strategy="steps", save_steps=2)
    with pytest.raises(
        PreflightError, match="'checkpoint save and load' failed.*no saved value for model.norm.weight"
    ):
        trainer.train()
    assert trainer.state.global_step == 0


@pytest.mark.parametrize(
    "compute_metrics, message",
    [
        (lambda prediction: 1 / 0, r"'compute_metrics' failed .*ZeroDivisionError"),
        (lambda prediction: None, r"'compute_metrics' failed .*returned NoneType: it must return a dict"),
    ],
    ids=["raises", "returns_none"],
)
def test_a_compute_metrics_that_fails_fails_at_step_0(tmp_path, tokenizer, compute_metrics, message):
    from datasets import Dataset

    from tspin_trl import TSPINTrainer
    from tspin_trl.demo import build_tiny_model

    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, eval_strategy="steps", eval_steps=1),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        eval_dataset=Dataset.from_list(sorting_rows(2, offset=4)),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    with pytest.raises(PreflightError, match=message):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_file_where_a_checkpoint_goes_fails_at_step_0(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=2)
    (tmp_path / "checkpoint-2").write_text("a file where the checkpoint of step 2 goes")
    with pytest.raises(PreflightError, match=r"checkpoint-2 is a file, where this run saves the checkpoint of step 2"):
        trainer.train()
    assert trainer.state.global_step == 0
