"""Builders the tests share: small sorting rows, a fast CPU configuration of the tiny preset, a self-play trainer on
them, and a callback that stops training after a given step."""

from datasets import Dataset
from transformers import TrainerCallback

from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.demo import build_tiny_model


def sorting_rows(n: int = 8, conversational: bool = True) -> list[dict]:
    """`n` deterministic digit-sorting rows (`prompt`/`completion`), as messages or as plain text."""
    rows = []
    for i in range(n):
        digits = [(i * 7 + k * 3) % 10 for k in range(4)]
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


def make_config(output_dir, **overrides) -> TSPINConfig:
    """A fast CPU configuration for the tiny preset."""
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


def self_play_trainer(output_dir, tokenizer, rows=None, model=None, **config) -> TSPINTrainer:
    """A 2-iteration self-play trainer of the tiny preset on 8 sorting rows (batch 2: 4 steps per iteration)."""
    config = {"num_iterations": 2, "per_device_train_batch_size": 2, "generation_batch_size": 4} | config
    return TSPINTrainer(
        model=model or build_tiny_model(tokenizer),
        args=make_config(output_dir, **config),
        train_dataset=Dataset.from_list(rows or sorting_rows(8)),
        processing_class=tokenizer,
    )


class StopAfter(TrainerCallback):
    """Stops training after optimizer step `step` (an interrupted run, with its checkpoints)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def make_context(output_dir, tokenizer, model=None, steps_per_epoch: int | None = None, **config):
    """A `RunContext` from real parts (config, clock, policy, run folder, metrics log, a sampler over the tiny model),
    for testing the callbacks without a trainer. Returns the context and the list the lines it logs are collected in."""
    from accelerate import Accelerator

    from tspin_trl.cache import model_fingerprint, tokenizer_fingerprint
    from tspin_trl.clock import IterationClock
    from tspin_trl.context import RunContext
    from tspin_trl.data import eos_token_ids
    from tspin_trl.generation import HFGenerationBackend, PolicySampler
    from tspin_trl.metrics import MetricsLog
    from tspin_trl.objective import ObjectivePolicy
    from tspin_trl.run_folder import RunFolder

    args = make_config(output_dir, **config)
    model = model or build_tiny_model(tokenizer)
    accelerator = Accelerator(cpu=True)
    clock = IterationClock.from_config(args)
    if steps_per_epoch is not None:
        clock.set_steps_per_epoch(steps_per_epoch)
    logged: list[dict] = []

    def start_iteration(iteration: int) -> None:
        clock.current = iteration

    context = RunContext(
        args=args,
        accelerator=accelerator,
        clock=clock,
        policy=ObjectivePolicy.from_config(args, own_synthetic=False),
        folder=RunFolder(args.output_dir),
        metrics=MetricsLog(emit=logged.append),
        sampler=PolicySampler(
            accelerator,
            policy=lambda: model,
            backend_factory=HFGenerationBackend,
            pad_token_id=tokenizer.pad_token_id,
            eos_ids=eos_token_ids(tokenizer, model.generation_config),
            batch_size=args.generation_batch_size,
        ),
        tokenizer=tokenizer,
        vocab_size=len(tokenizer),
        compute_logps=None,
        start_iteration=start_iteration,
        initial_identity={"initial_model": model_fingerprint(model), "tokenizer": tokenizer_fingerprint(tokenizer)},
    )
    return context, logged
