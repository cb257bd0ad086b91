"""The contenders: `TSPINTrainer` and TRL's `DPOTrainer` used as SPIN, built on the same training arguments.

Both are stepped the same way: one real optimisation step (forward, backward, clipping, optimizer step) on batches
collated once beforehand, so that the dataloader does not blur the comparison.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch


def common_training_kwargs(output_dir: str, batch_size: int, max_length: int, device: str, bf16: bool) -> dict:
    """Training arguments both contenders share (same optimizer, batch, length; no checkpointing, no logging)."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=1,
        max_length=max_length,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        bf16=bf16,
        use_cpu=device == "cpu",
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        dataloader_num_workers=0,
        seed=0,
    )


def tspin_trainer(model, tokenizer, rows: list[dict], *, batch_size: int, max_length: int, response_max: int,
                  output_dir: str, device: str = "cpu", bf16: bool = False, num_iterations: int = 1,
                  callbacks=None, **config):  # fmt: skip
    from datasets import Dataset

    from tspin_trl import TSPINConfig, TSPINTrainer

    kwargs = common_training_kwargs(output_dir, batch_size, max_length, device, bf16)
    kwargs.update(objective="tspin", alpha=1.0, beta=0.1, num_iterations=num_iterations,
                  max_completion_length=response_max, use_proto_cache=False)  # fmt: skip
    kwargs.update(config)
    args = TSPINConfig(**kwargs)
    return TSPINTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=callbacks
    )


def dpo_trainer(model, tokenizer, rows: list[dict], *, batch_size: int, max_length: int, output_dir: str,
                device: str = "cpu", bf16: bool = False, precompute: bool = False, model_dtype=torch.float32,
                **config):  # fmt: skip
    """TRL's DPOTrainer as SPIN (sigmoid loss, beta 0.1, real = chosen, synthetic = rejected).

    `model` is a path or a model loaded from one: the reference model is reloaded from that path (resident unless
    `precompute`).
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    kwargs = common_training_kwargs(output_dir, batch_size, max_length, device, bf16)
    kwargs.update(beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=precompute)
    if isinstance(model, str):
        kwargs["model_init_kwargs"] = {"dtype": model_dtype}
    kwargs.update(config)
    args = DPOConfig(**kwargs)
    return DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


@dataclass
class Batch:
    """A collated batch and the token counts of its examples (counted from the examples, not the padded tensors)."""

    inputs: dict
    examples: int
    pair_tokens: int  # prompt+real and prompt+synthetic: the sequences SPIN trains on
    tokens: int  # every sequence the policy trains on (T-SPIN adds prompt+proto)

    @property
    def processed_tokens(self) -> int:
        """Non-padding positions of the collated batch: what the forward pass computes usefully."""
        return int(self.inputs["attention_mask"].sum())

    @property
    def padded_tokens(self) -> int:
        """Positions of the collated batch, padding included: what one forward pass computes."""
        return int(self.inputs["input_ids"].numel())


def tspin_batches(trainer, batch_size: int, num_batches: int, proto: bool = True) -> list[Batch]:
    """Collated batches of the T-SPIN trainer, examples [0, B), [B, 2B), ... (wrapping around)."""
    dataset = trainer.train_dataset
    dataset.include_proto = proto
    out = []
    for b in range(num_batches):
        items = [dataset[(b * batch_size + i) % len(dataset)] for i in range(batch_size)]
        pair = sum(2 * len(x["prompt_ids"]) + len(x["real_ids"]) + len(x["synthetic_ids"]) for x in items)
        extra = sum(len(x["prompt_ids"]) + len(x["proto_ids"]) for x in items) if proto else 0
        out.append(Batch(trainer.data_collator(items), batch_size, pair, pair + extra))
    return out


def dpo_batches(trainer, batch_size: int, num_batches: int) -> list[Batch]:
    dataset = trainer.train_dataset
    out = []
    for b in range(num_batches):
        items = [dataset[(b * batch_size + i) % len(dataset)] for i in range(batch_size)]
        pair = sum(2 * len(x["prompt_ids"]) + len(x["chosen_ids"]) + len(x["rejected_ids"]) for x in items)
        out.append(Batch(trainer.data_collator(items), batch_size, pair, pair))
    return out


def make_step(trainer) -> Callable[[dict], float]:
    """One real optimisation step of `trainer` on a pre-built batch: `training_step` (forward + backward), gradient
    clipping, optimizer step, zero_grad. Returns the loss."""
    if trainer.optimizer is None:
        trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the `train()` loop otherwise
    model = trainer.model
    max_norm = trainer.args.max_grad_norm

    def step(batch: Batch | dict) -> float:
        loss = trainer.training_step(model, dict(batch.inputs if isinstance(batch, Batch) else batch))
        if max_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        # both trainers accumulate per-step metrics until `log`
        if hasattr(trainer, "metrics"):  # TSPINTrainer's MetricsLog
            trainer.metrics.clear()
        else:
            for metrics in trainer._metrics.values():
                metrics.clear()
        return loss

    return step


@contextlib.contextmanager
def temporary_workdir(prefix: str = "tspin_bench_"):
    """A scratch folder for the trainers' `output_dir` and the saved model, removed on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield d
