"""What a training run produces: every parameter trained (or only LoRA's), DPO's metric names and the train summary as
the last logged line, every dataset format, a model given by path, a mixture of experts with its router loss, a
diverged policy stopped before it is saved or sampled."""

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback

from tests.support import DPO_METRIC_NAMES, make_config, self_play_trainer, sorting_rows, tiny_moe
from tests.support.tools import TOOL_ROWS
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model
from tspin_trl.trainer import NonFinitePolicyError


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
        for name in DPO_METRIC_NAMES:
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


def test_a_mixture_of_experts_trains_with_the_router_loss(tmp_path, tokenizer):
    model = tiny_moe(tokenizer)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = self_play_trainer(tmp_path, tokenizer, model=model, num_iterations=2)
    assert trainer.aux_loss_enabled and trainer.router_aux_loss_coef == 0.001, "the model's own coefficient"
    trainer.train()
    lines = [h for h in trainer.state.log_history if "loss" in h]
    assert lines and all(math.isfinite(h["aux_loss"]) and h["aux_loss"] > 0 for h in lines)
    router = [n for n, _ in model.named_parameters() if "gate" in n and "experts" not in n]
    changed = {n for (n, p), b in zip(model.named_parameters(), before, strict=True) if not torch.equal(p, b)}
    assert router and set(router) <= changed, "the router is trained"

    off = self_play_trainer(tmp_path / "off", tokenizer, model=tiny_moe(tokenizer), router_aux_loss_coef=0.0)
    assert not off.aux_loss_enabled
    dense = self_play_trainer(tmp_path / "dense", tokenizer)
    assert not dense.aux_loss_enabled
    with pytest.raises(ValueError, match="`router_aux_loss_coef` is set to 0.5 but LlamaForCausalLM is not a Mixture"):
        self_play_trainer(tmp_path / "bad", tokenizer, router_aux_loss_coef=0.5)


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


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_training_changes_every_parameter_and_logs_metrics(tmp_path, model, tokenizer, sorting_dataset):
    before = snapshot(model)
    trainer = TSPINTrainer(
        model=model,
        args=make_config(tmp_path, beta_first_iteration=0.1),
        train_dataset=sorting_dataset,
        processing_class=tokenizer,
    )
    assert trainer.ref_model is None  # no reference model (the attribute exists for code written against DPOTrainer)
    trainer.train()
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"
    logs = [h for h in trainer.state.log_history if "loss" in h]
    for key in (
        "logps/real",
        "logps/synthetic",
        "logps/proto",
        "rewards/real",
        "rewards/synthetic",
        "rewards/proto",
        "advantage/current",
        "advantage/historical",
        "advantage/current_accuracy",
        "advantage/historical_accuracy",
        "loss/current",
        "loss/historical",
        "rewards/disagreement",
        "beta",
    ):
        assert key in logs[0], key
    # reference-free: the reward is alpha * logp, so reward and likelihood orders always agree
    assert all(h["rewards/disagreement"] == 0 for h in logs)
    assert logs[0]["rewards/real"] == pytest.approx(logs[0]["logps/real"])


def test_beta_zero_skips_proto_rows(tmp_path, model, tokenizer, sorting_dataset):
    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=sorting_dataset, processing_class=tokenizer
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all("logps/proto" not in h and h["beta"] == 0 for h in logs)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["response_lengths"].shape == (2, 2)  # real + synthetic only


def test_lora_trains_the_adapter_only(tmp_path, model, tokenizer, sorting_dataset):
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = TSPINTrainer(
        model=model,
        args=make_config(tmp_path, beta_first_iteration=0.1),
        train_dataset=sorting_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    before = snapshot(trainer.model)
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    lora = {n for n in before if "lora_" in n}
    assert lora and changed == {n for n in lora if "lora_B" in n or "lora_A" in n}


@pytest.mark.parametrize(
    "rows",
    [
        sorting_rows(4, conversational=True),
        sorting_rows(4, conversational=False),
        [{"messages": r["prompt"] + r["completion"]} for r in sorting_rows(4)],
        [
            {
                "real": r["prompt"] + r["completion"],
                "generated": r["prompt"] + [{"role": "assistant", "content": "9 9"}],
            }
            for r in sorting_rows(4)
        ],
        [
            {"prompt": r["prompt"], "chosen": r["completion"], "rejected": [{"role": "assistant", "content": "0"}]}
            for r in sorting_rows(4)
        ],
        [r | {"synthetic": "9 9 9", "proto": "0 0"} for r in sorting_rows(4, conversational=False)],
    ],
    ids=["prompt_completion", "standard_text", "messages", "spin", "dpo", "pregenerated"],
)
def test_every_format_trains(tmp_path, model, tokenizer, rows):
    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()
    assert trainer.state.global_step == 1
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))


def test_pregenerated_synthetic_uses_beta_from_the_start(tmp_path, model, tokenizer):
    rows = [r | {"synthetic": "9 9 9", "proto": "0 0"} for r in sorting_rows(4, conversational=False)]
    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()
    assert trainer.self_play.generate_calls == 0
    assert trainer.state.log_history[0]["beta"] == pytest.approx(0.1) and "logps/proto" in trainer.state.log_history[0]


def test_model_from_a_path_string(tmp_path, sorting_dataset):
    from tspin_trl.demo import save_tiny_preset

    path = save_tiny_preset(tmp_path / "tiny")
    trainer = TSPINTrainer(model=str(path), args=make_config(tmp_path / "out"), train_dataset=sorting_dataset)
    assert trainer.processing_class.decode(trainer.processing_class("a b")["input_ids"]) == "a b"
    trainer.train()


def test_self_play_trains_on_tool_call_data(tmp_path, tool_tokenizer):
    """Implicit prompts, tool-call responses, `tools` and `chat_template_kwargs` in one run: the policy samples its
    synthetic responses from the templated prompts and trains."""
    rows = [
        {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}
        | {"tools": row["tools"], "chat_template_kwargs": row["chat_template_kwargs"]}
        for row in TOOL_ROWS
    ] * 2
    trainer = TSPINTrainer(
        model=build_tiny_model(tool_tokenizer),
        args=make_config(tmp_path / "tspin", max_length=160, per_device_train_batch_size=2),
        train_dataset=Dataset.from_list(rows),
        processing_class=tool_tokenizer,
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    assert all("synthetic_ids" in trainer.train_dataset[i] for i in range(len(rows)))
    assert any(not torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(loss == loss for loss in losses)
