"""`tspin_trl/preflight.py`: a setting that would fail at the first iteration boundary (or the first checkpoint) fails
before the first training step, with the same error."""

import pytest

from tests.support import self_play_trainer, sorting_rows
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
