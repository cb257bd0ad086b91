"""Preflight: before the first training step, exercise at small cost what the run needs later.

A 7B run spends hours on iteration 0 before its first regeneration; a generation setting the backend refuses, a
reference pass that runs out of memory or a checkpoint that cannot be written would show only then. The preflight
runs each of them once, on one prompt, before step 0 (and the user's `compute_metrics` on one example's predictions),
so that such a setting fails in minute one with the same error
(wrapped in a [`PreflightError`] that names the check and how to skip it).
"""

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from transformers import TrainerCallback

from .data import TripletDataset
from .generation import SamplingSettings


if TYPE_CHECKING:
    from .context import RunContext


logger = logging.getLogger(__name__)

# New tokens the preflight generates: enough to run the decoding loop past the prefill, few enough to cost nothing.
PREFLIGHT_NEW_TOKENS = 4


class PreflightError(RuntimeError):
    """A check of the preflight failed: the run would have failed at the same point later."""


class PreflightCallback(TrainerCallback):
    """
    Runs the preflight checks at the start of `train()`, after self-play has prepared the first iteration (so the
    generation backend runs). [`TSPINTrainer`] installs it when `args.preflight` is on.

    Args:
        context ([`~tspin_trl.context.RunContext`]):
            The run.
        train_dataset ([`TripletDataset`]):
            The training data (one example is used).
        will_generate (`bool`):
            Whether the run generates after step 0 (later iterations, evaluation data, a scorer).
        probe_checkpointing (`Callable[[], None]`, *optional*):
            Checks that the checkpoint folders' names are free, saves the model as a checkpoint does and loads it back
            (`None` when saving is off).
        metrics_probe (`Callable[[], Callable[[], None] | None]`, *optional*):
            Returns, as `train()` starts (a `compute_metrics` may be set after construction), the check that runs
            `compute_metrics` once on the predictions of one example as evaluation gives them, or `None` without one.

    Attributes:
        seconds (`dict[str, float]`):
            The time each check took in the last preflight.
    """

    def __init__(
        self,
        context: "RunContext",
        train_dataset: TripletDataset,
        will_generate: bool,
        probe_checkpointing: Callable[[], None] | None,
        metrics_probe: Callable[[], Callable[[], None] | None] | None = None,
    ):
        self.context = context
        self.train_dataset = train_dataset
        self.will_generate = will_generate
        self.probe_checkpointing = probe_checkpointing
        self.metrics_probe = metrics_probe
        self.seconds: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.seconds = {}
        checks = []
        if self.will_generate:
            checks.append(("generation", self._generate_one))
        if self.context.policy.uses_reference:
            checks.append(("reference log-probs", self._reference_logps_of_one))
        if self.probe_checkpointing is not None:
            checks.append(("checkpoint save and load", self.probe_checkpointing))
        probe_metrics = self.metrics_probe() if self.metrics_probe is not None else None
        if probe_metrics is not None:
            checks.append(("compute_metrics", probe_metrics))
        for name, check in checks:
            start = time.perf_counter()
            try:
                check()
            except Exception as error:
                raise PreflightError(
                    f"Preflight check '{name}' failed before the first training step: {type(error).__name__}: {error}\n"
                    "The run would have failed at the same point later (at the first iteration boundary, checkpoint or "
                    "evaluation). Fix the setting above; `preflight=False` skips these checks."
                ) from error
            self.seconds[name] = time.perf_counter() - start
        if checks:
            total = sum(self.seconds.values())
            self.context.metrics.record("self_play/preflight_seconds", total)
            logger.info("Preflight passed in %.2f s: %s", total, {k: round(v, 3) for k, v in self.seconds.items()})
        return control

    def _first_example(self) -> dict:
        return self.train_dataset.examples[0]

    def _generate_one(self) -> None:
        """One prompt through the run's backend, with its sampling settings, after a weight sync."""
        sampling = SamplingSettings.from_config(self.context.args)
        sampling.max_new_tokens = min(sampling.max_new_tokens, PREFLIGHT_NEW_TOKENS)
        self.context.sampler.generate(
            [self._first_example()["prompt_ids"]], sampling, seed=self.context.args.seed, description="Preflight"
        )

    def _reference_logps_of_one(self) -> None:
        example = self._first_example()
        probe = TripletDataset([{**example, "synthetic_ids": example.get("synthetic_ids") or example["real_ids"]}])
        self.context.compute_logps(probe, ("real", "synthetic"))
