"""
Builders of small self-play runs on the tiny preset, shared by the tests (`tests.support` re-exports them) and the
fault campaign (`tests/faults/`), so that both build the same runs: deterministic digit-sorting rows, a fast CPU
configuration, a 2-iteration self-play trainer on them, a callback that stops training after a given step, and a
[`~tspin_trl.context.RunContext`] from real parts for testing the callbacks without a trainer; and what tests read back
from a run: its iteration files, the number of `generate` calls a model made.
"""

import json
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from tspin_trl.config import TSPINConfig
from tspin_trl.demo.presets import build_tiny_model
from tspin_trl.trainer import TSPINTrainer


# What `self_play_trainer` sets on top of `make_config`: 8 rows in batches of 2 are 4 steps per iteration, and
# generation runs in chunks of 4 prompts (two chunks per pass).
SELF_PLAY_SETTINGS: dict[str, Any] = {
    "num_iterations": 2,
    "per_device_train_batch_size": 2,
    "generation_batch_size": 4,
}


def sorting_rows(n: int = 8, conversational: bool = True, offset: int = 0) -> list[dict]:
    """
    `n` deterministic digit-sorting rows (`prompt`/`completion`), as messages or as plain text.

    Args:
        n (`int`, *optional*, defaults to `8`):
            Number of rows.
        conversational (`bool`, *optional*, defaults to `True`):
            Prompt and completion as one user and one assistant message; otherwise plain text (the prompt ends with a
            newline).
        offset (`int`, *optional*, defaults to `0`):
            Shifts the digits: another `offset` gives other data of the same size.

    Example:

    ```python
    >>> sorting_rows(1, conversational=False)
    [{'prompt': 'sort: 0 3 6 9\\n', 'completion': '0 3 6 9'}]
    ```
    """
    rows = []
    for i in range(n):
        digits = [((i + offset) * 7 + k * 3) % 10 for k in range(4)]
        prompt = "sort: " + " ".join(map(str, digits))
        answer = " ".join(map(str, sorted(digits)))
        if conversational:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": answer}],
                }
            )
        else:
            rows.append({"prompt": prompt + "\n", "completion": answer})
    return rows


def make_config(output_dir: Any, **overrides: Any) -> TSPINConfig:
    """A fast CPU configuration for the tiny preset (one iteration, batches of 4, no checkpoints), with `overrides`."""
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        num_iterations=1,
        max_completion_length=10,
        max_length=64,
        learning_rate=1e-3,
        warmup_steps=0,
        logging_steps=1,
        report_to=[],
        gradient_checkpointing=False,
        save_strategy="no",
        use_cpu=True,
        dataloader_pin_memory=False,
    )
    kwargs.update(overrides)
    return TSPINConfig(**kwargs)


def self_play_trainer(
    output_dir: Any,
    tokenizer: PreTrainedTokenizerBase,
    rows: Any = None,
    model: PreTrainedModel | None = None,
    *,
    eval_dataset: Any = None,
    callbacks: list[TrainerCallback] | None = None,
    scorer: Any = None,
    scorer_dataset: Any = None,
    **config: Any,
) -> TSPINTrainer:
    """
    A 2-iteration self-play trainer of the tiny preset on 8 sorting rows (batch 2: 4 steps per iteration).

    Args:
        output_dir (`str` or `Path`):
            The run's `output_dir`.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer (e.g. [`build_char_tokenizer`]); the model is built for it unless `model` is given.
        rows (`list[dict]` or dataset, *optional*):
            The training data: a list of rows becomes a `Dataset`, anything else is passed as it is. Defaults to
            `sorting_rows(8)`.
        model ([`~transformers.PreTrainedModel`], *optional*):
            The initial policy. Defaults to `build_tiny_model(tokenizer)`.
        eval_dataset, callbacks, scorer, scorer_dataset:
            Passed to [`~tspin_trl.TSPINTrainer`].
        **config:
            Settings over [`make_config`] and `SELF_PLAY_SETTINGS`.
    """
    if rows is None:
        rows = sorting_rows(8)
    if isinstance(rows, list):
        rows = Dataset.from_list(rows)
    return TSPINTrainer(
        model=model or build_tiny_model(tokenizer),
        args=make_config(output_dir, **(SELF_PLAY_SETTINGS | config)),
        train_dataset=rows,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        scorer=scorer,
        scorer_dataset=scorer_dataset,
    )


class StopAfter(TrainerCallback):
    """Stops training gracefully after optimizer step `step` (an interrupted run, with the checkpoints it saved)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def model_logps(model: PreTrainedModel):
    """
    A `compute_logps` for a [`~tspin_trl.context.RunContext`] without a trainer: the summed log-probs of each example's
    responses (`"real"`, `"synthetic"`, `"proto"`, `"previous_synthetic"`) under `model` as it is at the call, one
    plain forward per response (no batching, no packing: an independent check of the trainer's computation).
    """
    import torch

    @torch.no_grad()
    def compute_logps(dataset: Any, roles: tuple[str, ...]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {role: [] for role in roles}
        was_training = model.training
        model.eval()
        for example in dataset.examples:
            prompt = example["prompt_ids"]
            for role in roles:
                ids = torch.tensor([prompt + example[f"{role}_ids"]])
                logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
                targets = ids[0, 1:]
                per_token = logps.gather(1, targets[:, None])[:, 0]
                out[role].append(per_token[len(prompt) - 1 :].sum().item())
        model.train(was_training)
        return out

    return compute_logps


def make_context(
    output_dir: Any,
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel | None = None,
    steps_per_epoch: int | None = None,
    **config: Any,
):
    """
    A [`~tspin_trl.context.RunContext`] from real parts (config, clock, policy, run folder, metrics log, a sampler over
    the tiny model, log-probs from it by [`model_logps`]), built by the factory the trainer uses
    ([`RunContext.build`]), for testing the callbacks without a trainer. Set `steps_per_epoch` for a clock that knows
    its steps.

    Returns:
        `tuple[RunContext, list[dict]]`: the context, and the self-play quantities logged through it
        ([`~tspin_trl.metrics.MetricsLog.announced`]: one dict per `log_now` call, tagged with its iteration).
    """
    from accelerate import Accelerator

    from tspin_trl.context import RunContext
    from tspin_trl.generation import HFGenerationBackend
    from tspin_trl.metrics import MetricsLog

    args = make_config(output_dir, **config)
    model = model or build_tiny_model(tokenizer)
    metrics = MetricsLog()
    context = RunContext.build(
        args,
        Accelerator(cpu=True),
        model,
        tokenizer,
        metrics=metrics,
        sampled_model=lambda: model,
        backend_factory=HFGenerationBackend,
        compute_logps=model_logps(model),
    )
    if steps_per_epoch is not None:
        context.clock.set_steps_per_epoch(steps_per_epoch)
    return context, metrics.announced


def iteration_rows(output_dir: Any, iteration: int, split: str = "train") -> list[dict]:
    """The rows of a run's iteration file `self_play/iteration_<iteration>/<split>.jsonl`, in order."""
    path = Path(output_dir) / "self_play" / f"iteration_{iteration}" / f"{split}.jsonl"
    return [json.loads(line) for line in path.open()]


class CountGenerate:
    """Counts the calls of `model.generate` (the model's own method, wrapped in place)."""

    def __init__(self, model: PreTrainedModel):
        self.calls = 0
        original = model.generate

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        model.generate = counted


def tiny_moe(tokenizer: PreTrainedTokenizerBase, architecture: str = "mixtral", **config: Any) -> PreTrainedModel:
    """
    A tiny Mixture-of-Experts model for `tokenizer` (4 experts, 2 per token, 2 layers, seeded): `"mixtral"` or
    `"qwen2_moe"` (with a shared expert), with `config` over its settings (e.g. `output_router_logits=True`).
    """
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_experts_per_tok=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    if architecture == "mixtral":
        return MixtralForCausalLM(MixtralConfig(**common, num_local_experts=4, **config))
    if architecture == "qwen2_moe":
        moe = dict(num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=32)
        return Qwen2MoeForCausalLM(Qwen2MoeConfig(**common, **moe, **config))
    raise ValueError(f"architecture={architecture!r}: 'mixtral' or 'qwen2_moe'")
