"""The preflight in a run: without it, a broken generation setting fails only at the iteration boundary; with it, a
run logs its cost and leaves nothing behind."""

import pytest

from tests.support import self_play_trainer, sorting_rows


def given_responses() -> list[dict]:
    """Rows that bring their own synthetic and proto responses: nothing is generated before iteration 1."""
    answer = [{"role": "assistant", "content": "1 2"}]
    return [r | {"synthetic": answer, "proto": answer} for r in sorting_rows(8)]


# `model.generate` rejects keyword arguments the model does not use, but only when it is called
BROKEN_GENERATION = {"generation_kwargs": {"no_such_generate_argument": 1}}


def test_without_the_preflight_it_fails_only_at_the_iteration_boundary(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, rows=given_responses(), preflight=False, **BROKEN_GENERATION)
    with pytest.raises(ValueError, match="no_such_generate"):
        trainer.train()
    assert trainer.state.global_step == 4, "the whole of iteration 0 trained before the failure"


def test_the_preflight_passes_logs_its_cost_and_leaves_nothing_behind(tmp_path, tokenizer):
    trainer = self_play_trainer(
        tmp_path, tokenizer, objective="spin", save_strategy="steps", save_steps=4, num_iterations=2
    )
    trainer.train()
    preflight = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "PreflightCallback")
    assert set(preflight.seconds) == {"generation", "reference log-probs", "checkpoint save and load"}
    logged = [
        h["self_play/preflight_seconds"] for h in trainer.state.log_history if "self_play/preflight_seconds" in h
    ]
    assert len(logged) == 1 and logged[0] > 0
    assert not (tmp_path / "self_play" / "preflight_checkpoint").exists()
    # nothing to check: one iteration, no evaluation data, no scorer, no saving
    quiet = self_play_trainer(tmp_path / "quiet", tokenizer, num_iterations=1)
    quiet.train()
    assert not any("self_play/preflight_seconds" in h for h in quiet.state.log_history)
