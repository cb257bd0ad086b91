"""Stop and resume: a run resumed from its checkpoints (after a stop, a Ctrl-C on the same trainer, a fresh rerun that
was stopped) ends with an uninterrupted run's weights; a resume with changed settings, a corrupted iteration file or
a damaged checkpoint is refused, naming what to do."""

import json
import shutil

import pytest
import torch
from transformers import TrainerCallback

from tests.support import CountGenerate, StopAfter, iteration_rows, self_play_trainer, sorting_rows, tiny_moe
from tspin_trl.checkpoints import last_complete_checkpoint
from tspin_trl.self_play import SelfPlayError


def parameters(trainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])


def with_own_responses(synthetic: str) -> list[dict]:
    return [r | {"synthetic": [{"role": "assistant", "content": synthetic}]} for r in sorting_rows(8)]


def test_a_resume_with_a_changed_own_column_or_optimizer_setting_is_refused(tmp_path, tokenizer):
    first = self_play_trainer(tmp_path, tokenizer, rows=with_own_responses("1 2"), save_strategy="steps", save_steps=1)
    first.add_callback(StopAfter(2))
    first.train()
    for rows, config, field in (
        (with_own_responses("3 4"), {}, "data"),
        (with_own_responses("1 2"), {"optim_args": "momentum=0.5"}, "optim_args"),
        (with_own_responses("1 2"), {"adam_beta2": 0.9}, "adam_beta2"),
    ):
        resumed = self_play_trainer(tmp_path, tokenizer, rows=rows, save_strategy="steps", save_steps=1, **config)
        with pytest.raises(SelfPlayError, match=f"Cannot resume.*Changed: .*{field}"):
            resumed.train(resume_from_checkpoint=True)


def test_a_stopped_fresh_rerun_resumes_to_an_uninterrupted_runs_weights(tmp_path, tokenizer, caplog):
    checkpointed = {"save_strategy": "steps", "save_steps": 1}
    finished = self_play_trainer(tmp_path, tokenizer, **checkpointed)
    finished.train()
    reference = parameters(finished)

    rerun = self_play_trainer(tmp_path, tokenizer, **checkpointed)
    rerun.add_callback(StopAfter(3))
    with caplog.at_level("WARNING"):
        rerun.train()
    assert "were moved to" in caplog.text
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    replaced = list((tmp_path / "self_play" / "replaced").iterdir())
    assert len(replaced) == 1
    record = json.loads((replaced[0] / "replaced.json").read_text())
    assert "checkpoint-8" in record["moved"] and "self_play/iteration_1" in record["moved"]
    assert (replaced[0] / "checkpoint-8" / "trainer_state.json").is_file(), "nothing is destroyed"

    resumed = self_play_trainer(tmp_path, tokenizer, **checkpointed)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8
    torch.testing.assert_close(parameters(resumed), reference, rtol=0, atol=0)


class CtrlC(TrainerCallback):
    def __init__(self, step: int):
        self.step, self.fired = step, False

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


@pytest.mark.parametrize("stop_at", [3, 6], ids=["iteration_0", "iteration_1"])
def test_ctrl_c_then_resume_on_the_same_trainer(tmp_path, tokenizer, stop_at):
    checkpointed = {"save_strategy": "steps", "save_steps": 1, "num_iterations": 2}
    uninterrupted = self_play_trainer(tmp_path / "reference", tokenizer, **checkpointed)
    uninterrupted.train()

    trainer = self_play_trainer(tmp_path / "run", tokenizer, **checkpointed)
    trainer.add_callback(CtrlC(stop_at))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 8
    torch.testing.assert_close(parameters(trainer), parameters(uninterrupted), rtol=0, atol=0)
    assert set(trainer.monitor.summaries) == {0, 1}, "both iterations summarised (the earlier one in the first call)"


def interrupted_run(output_dir, tokenizer, stop_after=6, **config):
    """A 2-iteration run (4 steps each) stopped after `stop_after` steps, with a checkpoint at every step."""
    trainer = self_play_trainer(output_dir, tokenizer, save_strategy="steps", save_steps=1, **config)
    trainer.add_callback(StopAfter(stop_after))
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    "change, field",
    [
        ({"num_iterations": 3}, "num_iterations"),
        ({"temperature": 0.5}, "sampling"),
        ({"rows": sorting_rows(10)}, "data"),
        ({"learning_rate": 5e-4}, "learning_rate"),
    ],
)
def test_a_resume_with_changed_settings_names_each_change(tmp_path, tokenizer, change, field):
    interrupted_run(tmp_path, tokenizer)
    rows = change.pop("rows", None)
    resumed = self_play_trainer(tmp_path, tokenizer, rows=rows, save_strategy="steps", save_steps=1, **change)
    with pytest.raises(SelfPlayError, match=f"Cannot resume.*Changed: .*{field}"):
        resumed.train(resume_from_checkpoint=True)


def test_a_corrupted_iteration_file_after_training_began_is_an_error(tmp_path, tokenizer):
    interrupted_run(tmp_path, tokenizer)  # stopped at step 6, inside iteration 1 (steps 5..8)
    data = tmp_path / "self_play" / "iteration_1" / "train.jsonl"
    data.write_text(data.read_text()[:-20])
    resumed = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=1)
    with pytest.raises(
        SelfPlayError, match="Training of iteration 1 has begun.*resume from the checkpoint taken at the"
    ):
        resumed.train(resume_from_checkpoint=True)
    # resuming at the start of the iteration regenerates it from the right policy
    resumed = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=1)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert "iteration_1/train" in resumed.self_play.generation_stats


def test_resume_skips_a_half_written_checkpoint(tmp_path, tokenizer, caplog):
    interrupted_run(tmp_path, tokenizer, stop_after=3)
    (tmp_path / "checkpoint-99").mkdir()  # a save killed midway: no trainer_state.json, no weights
    partial = tmp_path / "checkpoint-50"
    shutil.copytree(tmp_path / "checkpoint-3", partial)
    (partial / "model.safetensors").unlink()  # the disk filled up during the save
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-3")
    assert "checkpoint-99" in caplog.text and "checkpoint-50" in caplog.text
    resumed = self_play_trainer(tmp_path, tokenizer)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8


def test_a_resume_with_another_generation_batch_size_is_refused(tmp_path, tokenizer):
    interrupted_run(tmp_path, tokenizer)
    resumed = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=1, generation_batch_size=8)
    with pytest.raises(SelfPlayError, match="generation_batch_size"):
        resumed.train(resume_from_checkpoint=True)


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.pt"])
def test_a_damaged_checkpoint_file_is_named(tmp_path, tokenizer, damaged):
    from tspin_trl.trainer import CheckpointLoadError

    interrupted_run(tmp_path, tokenizer)
    path = tmp_path / "checkpoint-6" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    resumed = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=1)
    with pytest.raises(CheckpointLoadError, match="checkpoint-6.*resume_from_checkpoint=.*checkpoint-5"):
        resumed.train(resume_from_checkpoint=True)


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


def test_a_mixture_of_experts_resumes_to_its_saved_experts(tmp_path, tokenizer):
    # transformers 5 saves a Mixtral's experts one by one and holds them fused: the Trainer's plain `load_state_dict`
    # found none of them in a checkpoint and resumed with the experts and router where they were (a warning only)
    checkpointed = {"save_strategy": "steps", "save_steps": 1}
    uninterrupted = self_play_trainer(tmp_path, tokenizer, model=tiny_moe(tokenizer), **checkpointed)
    uninterrupted.train()

    resumed = self_play_trainer(tmp_path, tokenizer, model=tiny_moe(tokenizer), **checkpointed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-6"))  # iteration 1 is steps 5..8
    assert resumed.state.global_step == 8
    for (name, a), b in zip(uninterrupted.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after the resume")
