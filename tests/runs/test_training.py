"""Drop-in for real: what a TRL user's code does with `DPOTrainer` works with `TSPINTrainer` (the trainer's half of the
contract: the log's last line, DPO's metric names, a diverged policy stopped before sampling)."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from tests.support import make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model
from tspin_trl.self_play import SelfPlayError
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


# ---- evaluate() with a raw set, compute_metrics ------------------------------------------------------------------------


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


# ---- Mixture-of-experts: the router's load-balancing loss ----------------------------------------------------------------


def tiny_mixtral(tokenizer):
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return MixtralForCausalLM(config)


def test_a_mixture_of_experts_trains_with_the_router_loss(tmp_path, tokenizer):
    model = tiny_mixtral(tokenizer)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = self_play_trainer(tmp_path, tokenizer, model=model, num_iterations=2)
    assert trainer.aux_loss_enabled and trainer.router_aux_loss_coef == 0.001, "the model's own coefficient"
    trainer.train()
    lines = [h for h in trainer.state.log_history if "loss" in h]
    assert lines and all(math.isfinite(h["aux_loss"]) and h["aux_loss"] > 0 for h in lines)
    router = [n for n, _ in model.named_parameters() if "gate" in n and "experts" not in n]
    changed = {n for (n, p), b in zip(model.named_parameters(), before, strict=True) if not torch.equal(p, b)}
    assert router and set(router) <= changed, "the router is trained"

    off = self_play_trainer(tmp_path / "off", tokenizer, model=tiny_mixtral(tokenizer), router_aux_loss_coef=0.0)
    assert not off.aux_loss_enabled
    dense = self_play_trainer(tmp_path / "dense", tokenizer)
    assert not dense.aux_loss_enabled
    with pytest.raises(ValueError, match="`router_aux_loss_coef` is set to 0.5 but LlamaForCausalLM is not a Mixture"):
        self_play_trainer(tmp_path / "bad", tokenizer, router_aux_loss_coef=0.5)
