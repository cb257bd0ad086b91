"""Drop-in for real: what a TRL user's code does with `DPOTrainer` works with `TSPINTrainer` (the trainer's half of the
contract: the log's last line, DPO's metric names, a diverged policy stopped before sampling)."""

import math

import pytest
import torch
from datasets import Dataset
from helpers import make_config, self_play_trainer, sorting_rows
from transformers import TrainerCallback

from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model
from tspin_trl.trainer import NonFinitePolicyError


DPO_NAMES = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


def test_the_last_logged_line_is_the_train_summary(tmp_path, tokenizer):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(
            tmp_path, num_iterations=2, per_device_train_batch_size=2, eval_strategy="steps", eval_steps=2
        ),
        train_dataset=Dataset.from_list(sorting_rows(8)),
        eval_dataset=Dataset.from_list(sorting_rows(12)[8:]),
        processing_class=tokenizer,
    )
    trainer.train()
    last = trainer.state.log_history[-1]
    assert {"train_loss", "train_runtime"} <= set(last), last
    assert any("self_play/likelihood_inversion" in h for h in trainer.state.log_history), "the final pass still ran"

    stopped = self_play_trainer(tmp_path / "stopped", tokenizer, max_steps=3)
    stopped.train()
    assert "train_runtime" in stopped.state.log_history[-1]
    assert stopped.monitor.summaries[0], "the partial iteration is summarised before the summary line"


def test_dpo_dashboards_show_a_tspin_run(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=2, beta=0.1)
    trainer.train()
    lines = [h for h in trainer.state.log_history if "loss" in h]
    for line in lines:
        for name in DPO_NAMES:
            assert math.isfinite(line[name]), (name, line)
        assert line["rewards/chosen"] == line["rewards/real"] and line["logps/rejected"] == line["logps/synthetic"]
        assert line["rewards/margins"] == pytest.approx(line["rewards/chosen"] - line["rewards/rejected"], abs=1e-4)


class Diverge(TrainerCallback):
    """What an fp16 overflow at a high learning rate does: a weight becomes infinite after step `step`."""

    def __init__(self, trainer, step):
        self.trainer, self.step = trainer, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(self.trainer.model.parameters()).view(-1)[0] = float("inf")


def test_a_diverged_policy_is_stopped_before_a_checkpoint_and_before_sampling(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=2)
    trainer.add_callback(Diverge(trainer, step=3))
    with pytest.raises(
        NonFinitePolicyError, match=r"not finite .* at step 4, in self-play iteration 0, before saving"
    ):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"], "the last good one is kept"

    unsaved = self_play_trainer(tmp_path / "unsaved", tokenizer)
    unsaved.add_callback(Diverge(unsaved, step=3))
    with pytest.raises(
        NonFinitePolicyError, match=r"step 4, in self-play iteration 0, before generating iteration_1/train.*bf16"
    ):
        unsaved.train()
