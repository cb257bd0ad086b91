"""`IterationMonitor`: per-iteration summaries computed from every training step, and the alarms on them.

The run's metrics log hands every training step's per-example metrics to the monitor (see
[`~tspin_trl.metrics.MetricsLog.add_listener`]); the monitor keeps their sums for the current iteration on the device (no
host sync per step). At the end of each iteration it logs the summary (on the next training entry of `log_history`, or
the train summary; see [`~tspin_trl.metrics.MetricsLog.log_now`]), appends the same numbers to
`self_play/iterations.jsonl`, and checks two alarms:

- **vanishing advantage**: the mean likelihood gap `|logp(y) - logp(y')|` fell below `vanishing_advantage_threshold`,
  or more than 90% of synthetic responses equal the real ones: the model no longer tells its own responses apart.
- **saturation**: more than half of the pairs had a scaled current advantage above `saturation_threshold`: the loss
  there is below 5e-5 and teaches almost nothing.

The logging windows are transformers' (`logging_steps`), as in `DPOTrainer`: a window may span an iteration boundary;
the summary is the exact per-iteration mean. Its sums are saved with every checkpoint
(`checkpoint-<step>/tspin_iteration_monitor.json`) and restored on resume, so a resumed iteration's summary covers all
its steps.
"""

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback


if TYPE_CHECKING:
    from .context import RunContext


logger = logging.getLogger(__name__)

STATE_FILE = "tspin_iteration_monitor.json"
IDENTICAL_ALARM_SHARE = 0.9
SATURATED_ALARM_SHARE = 0.5


class IterationMonitor(TrainerCallback):
    """
    Summarises every self-play iteration from all of its training steps. [`TSPINTrainer`] installs it.

    Args:
        context ([`~tspin_trl.context.RunContext`]):
            The run (clock, metrics, folder, settings).

    Attributes:
        summaries (`dict[int, dict[str, float]]`):
            The summary of every iteration finished in this process (also in `self_play/iterations.jsonl`).
        alarms (`dict[str, list[int]]`):
            Iterations that raised the `"vanishing"` and `"saturated"` alarms.
    """

    def __init__(self, context: "RunContext"):
        self.context = context
        self.summaries: dict[int, dict[str, float]] = {}
        self.alarms: dict[str, list[int]] = {"vanishing": [], "saturated": []}
        self._reset(None)
        context.metrics.add_listener(self._add_step)

    def _reset(self, iteration: int | None) -> None:
        self.iteration = iteration
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.first_step: int | None = None
        self.last_step: int | None = None

    def _add_step(self, mode: str, columns: dict[str, torch.Tensor]) -> None:
        if mode != "train":
            return
        if self.iteration != self.context.clock.current:
            self._reset(self.context.clock.current)
        for name, values in columns.items():
            valid = ~values.isnan()
            total, count = values.nan_to_num(0.0).sum().double(), valid.sum()
            if name in self.sums:
                self.sums[name] += total
                self.counts[name] += count
            else:
                self.sums[name], self.counts[name] = total, count

    # ---- state saved with checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        names = list(self.sums)
        values = torch.stack([self.sums[n] for n in names]).tolist() if names else []
        counts = torch.stack([self.counts[n] for n in names]).tolist() if names else []
        return {
            "iteration": self.iteration,
            "sums": dict(zip(names, values, strict=True)),
            "counts": dict(zip(names, counts, strict=True)),
            "first_step": self.first_step,
            "last_step": self.last_step,
            "summarized": sorted(self.summaries),
        }

    def save(self, checkpoint_dir: str) -> None:
        """Write the running sums into a checkpoint folder (called by the trainer when it saves one)."""
        os.makedirs(checkpoint_dir, exist_ok=True)
        with open(os.path.join(checkpoint_dir, STATE_FILE), "w") as f:
            json.dump(self.state_dict(), f)

    def _restore(self, checkpoint_dir: str) -> None:
        path = os.path.join(checkpoint_dir, STATE_FILE)
        try:
            with open(path) as f:
                attributes = json.load(f)
        except (OSError, ValueError):
            logger.warning("No readable %s: the resumed iteration's summary covers only the steps after it.", path)
            return
        device = self.context.accelerator.device
        self._reset(attributes.get("iteration"))
        for name, total in attributes.get("sums", {}).items():
            self.sums[name] = torch.tensor(total, dtype=torch.float64, device=device)
            self.counts[name] = torch.tensor(attributes["counts"][name], device=device)
        self.first_step, self.last_step = attributes.get("first_step"), attributes.get("last_step")
        self.summaries = {t: {} for t in attributes.get("summarized", [])}

    # ---- callbacks ------------------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        # each `train()` starts afresh (a second call on the same trainer too), then restores what a resume continues
        self.summaries = {}
        self.alarms = {"vanishing": [], "saturated": []}
        self._reset(None)
        checkpoint = self.context.resumed_from_checkpoint
        if state.global_step > 0 and checkpoint is not None:
            self._restore(checkpoint)
            # killed after the iteration's last step was saved but before its summary was written
            if self._iteration_complete(state.global_step) and self.iteration not in self.summaries:
                self.summarize(state.global_step)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if args.should_save:  # the global main process, or each node's local main one with `save_on_each_node`
            self.context.folder.append_log({**(logs or {}), "step": state.global_step})
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = state.global_step
        self.last_step = state.global_step
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.iteration is None or self.iteration in self.summaries:
            return control
        if self._iteration_complete(state.global_step):
            self.summarize(state.global_step)
        elif control.should_training_stop and self.sums:
            self.summarize(state.global_step, complete=False)  # stopped early (e.g. `max_steps`)
        return control

    def _iteration_complete(self, global_step: int) -> bool:
        return self.iteration is not None and self.context.clock.is_iteration_end(global_step)

    # ---- the summary ---------------------------------------------------------------------------------------------

    def summarize(self, global_step: int, complete: bool = True) -> dict[str, float]:
        """Log the current iteration's means over all its steps (with the next training entry or the train summary),
        write them to `iterations.jsonl`, check the alarms."""
        context, args, iteration = self.context, self.context.args, self.iteration
        names = list(self.sums)
        totals = torch.stack([self.sums[n] for n in names]).tolist() if names else []
        counts = torch.stack([self.counts[n] for n in names]).tolist() if names else []
        means = {name: total / count for name, total, count in zip(names, totals, counts, strict=True) if count > 0}
        margin = means.get("logps/abs_margin", float("nan"))
        identical = means.get("self_play/synthetic_equals_real", 0.0)
        saturated = means.get("advantage/saturated", 0.0)
        vanished = margin < args.vanishing_advantage_threshold or identical > IDENTICAL_ALARM_SHARE
        is_saturated = saturated > SATURATED_ALARM_SHARE
        line = {f"iteration/{name}": value for name, value in means.items()}
        line.update(
            {
                "self_play/iteration_mean_advantage_current": means.get("advantage/current", float("nan")),
                "self_play/iteration_mean_abs_margin": margin,
                "self_play/advantage_vanished": float(vanished),
                "self_play/advantage_saturated": float(is_saturated),
                "self_play/iteration_steps": float((self.last_step or 0) - (self.first_step or 0) + 1),
            }
        )
        if "advantage/historical" in means:
            line["self_play/iteration_mean_advantage_historical"] = means["advantage/historical"]
        context.metrics.log_now(line, iteration)
        self.summaries[iteration] = means
        if args.should_save:
            context.folder.append_iteration_record(
                {
                    "iteration": iteration,
                    "step": global_step,
                    "first_step": self.first_step,
                    "last_step": self.last_step,
                    "complete": complete,
                    "means": means,
                    "advantage_vanished": vanished,
                    "advantage_saturated": is_saturated,
                }
            )
        if vanished:
            self.alarms["vanishing"].append(iteration)
            logger.warning(
                "Self-play iteration %d: the current advantage has vanished (mean |logp(real) - logp(synthetic)| "
                "%.4f < %s, or %.0f%% of synthetic responses equal the real ones). The model no longer tells its own "
                "responses from the annotated ones; more iterations will teach little. Consider stopping, more data, "
                "or a different sampling temperature.",
                iteration,
                margin,
                args.vanishing_advantage_threshold,
                100 * identical,
            )
        if is_saturated:
            self.alarms["saturated"].append(iteration)
            logger.warning(
                "Self-play iteration %d: %.0f%% of the pairs had a scaled current advantage above %s, where the loss "
                "is below 5e-5 and teaches almost nothing: a few pairs drive all of training. Try a lower `alpha` (the "
                "paper finds 0.1-1.0 robust), shorter responses (`max_completion_length`, or shorter annotations), or "
                "sampling closer to the real responses (a lower `temperature`).",
                iteration,
                100 * saturated,
                args.saturation_threshold,
            )
        return means
