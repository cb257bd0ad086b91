"""Training and evaluation metrics: the per-example quantities of a step, and the log that averages them.

Per-example metrics are computed on the device, gathered over processes once per step as one tensor, and averaged
and converted to floats only when a line is logged (no host sync in the training step). NaN marks a value an example
does not have (the proto response in iteration 0, a reference log-prob for T-SPIN). Listeners (the iteration
monitor) see every step's gathered columns.

Self-play's own quantities (per-iteration summaries, the likelihood inversion, prompt-selection counts, scores) add no
entry of their own to `trainer.state.log_history`: [`MetricsLog.log_now`] keeps them for the next training entry, or
the train summary when no training entry follows, so `log_history` has `DPOTrainer`'s entries in `DPOTrainer`'s order.
"""

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from .checked_io import atomic_write
from .loss import clamped, rewards


logger = logging.getLogger(__name__)


# Log-likelihood (and reward) differences within this many nats are ties: neither an accuracy win nor a disagreement.
# Identical real and synthetic responses differ by about 2e-6 nats through floating-point noise alone.
TIE_TOLERANCE = 1e-3

ROLES = ("real", "synthetic", "proto")


def per_example_metrics(
    logps: torch.Tensor,
    refs: dict[str, torch.Tensor],
    losses: torch.Tensor,
    current_losses: torch.Tensor,
    historical_losses: torch.Tensor,
    response_lengths: torch.Tensor,
    synthetic_equals_real: torch.Tensor,
    *,
    alpha: float,
    loss_type: str,
    saturation_threshold: float,
) -> dict[str, torch.Tensor]:
    """The per-example metrics of one batch, by name, each of shape `(batch_size,)`.

    Args:
        logps (`torch.Tensor` of shape `(num_roles, batch_size)`):
            Summed response log-probs, roles in the order real, synthetic, proto (2 or 3 roles).
        refs (`dict[str, torch.Tensor]`):
            Reference log-probs `ref_<role>_logps` (SPIN, T-SPIN_ref); empty for T-SPIN.
        losses, current_losses, historical_losses (`torch.Tensor`):
            What [`tspin_loss`] returned.
        response_lengths (`torch.Tensor` of shape `(batch_size, num_roles)`), synthetic_equals_real (`torch.Tensor`):
            From the collator.
        alpha (`float`), loss_type (`str`), saturation_threshold (`float`):
            The run's settings.
    """
    num_roles, batch_size = logps.shape
    nan = torch.full((batch_size,), float("nan"), device=logps.device)
    columns: dict[str, torch.Tensor] = {}
    role_rewards = {}
    for index, role in enumerate(ROLES):
        role_logps = logps[index] if index < num_roles else nan
        role_rewards[role] = rewards(role_logps, refs.get(f"ref_{role}_logps"), alpha)
        columns[f"logps/{role}"] = role_logps
        columns[f"rewards/{role}"] = role_rewards[role]
        columns[f"length/{role}"] = response_lengths[:, index].float() if index < num_roles else nan
    current = role_rewards["real"] - role_rewards["synthetic"]
    historical = role_rewards["synthetic"] - role_rewards["proto"]
    likelihood_margin = logps[0] - logps[1]
    identical = synthetic_equals_real.to(logps.device)
    reward_tolerance = TIE_TOLERANCE * alpha
    # Identical pairs and ties (within the tolerance) are neither wins nor disagreements; shares are over all pairs.
    decided = ~identical & (current.abs() > reward_tolerance)
    columns["advantage/current"] = current
    columns["advantage/historical"] = historical
    columns["logps/abs_margin"] = likelihood_margin.abs()
    columns["advantage/current_accuracy"] = (decided & (current > 0)).float()
    columns["advantage/historical_accuracy"] = torch.where(
        historical.isnan(), nan, (historical > reward_tolerance).float()
    )
    columns["rewards/ties"] = (~identical & ~decided).float()
    columns["rewards/disagreement"] = (
        decided & (likelihood_margin.abs() > TIE_TOLERANCE) & (current * likelihood_margin < 0)
    ).float()
    columns["self_play/synthetic_equals_real"] = identical.float()
    columns["advantage/saturated"] = (current > saturation_threshold).float()
    terms = torch.cat([current, historical]) if num_roles == 3 else current
    columns["loss/clamped"] = clamped(terms, loss_type).float().view(-1, batch_size).mean(0)
    columns["loss/current"] = current_losses.detach()
    columns["loss/historical"] = historical_losses.detach() if num_roles == 3 else nan
    columns["loss/per_example"] = losses
    # The names DPOTrainer logs, so a DPO dashboard shows a T-SPIN run: chosen = real, rejected = synthetic
    columns["rewards/chosen"] = columns["rewards/real"]
    columns["rewards/rejected"] = columns["rewards/synthetic"]
    columns["rewards/margins"] = current
    columns["rewards/accuracies"] = columns["advantage/current_accuracy"]
    columns["logps/chosen"] = columns["logps/real"]
    columns["logps/rejected"] = columns["logps/synthetic"]
    return columns


ITERATION_KEY = "self_play/iteration"


# The file a checkpoint keeps the log's pending values in (next to `trainer_state.json`, which has the logged ones)
STATE_FILE = "tspin_metrics_log.json"


def _plain(value: Any) -> Any:
    """A number as a Python float (a tensor, a NumPy scalar, a bool); anything else as it is."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class MetricsLog:
    """
    The metrics of the running `train()` or `evaluate()` until the next logged entry, and self-play's quantities
    waiting to ride on it.

    Averaged values ([`record`], [`add_columns`]) go into the next entry of their mode, as `DPOTrainer`'s metrics do
    ([`flush`]). Self-play's quantities ([`log_now`]) go into the next *training* entry or the train summary
    ([`take_riding`]), never into an evaluation entry, so `log_history` keeps `DPOTrainer`'s entries and order.
    """

    def __init__(self):
        self._values: dict[str, dict[str, list]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._columns: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._listeners: list[Callable[[str, dict[str, torch.Tensor]], None]] = []
        # every `log_now` of the run, in order, each tagged with its iteration; those from `_ridden` on wait
        self._announced: list[dict[str, float]] = []
        self._ridden = 0

    def record(self, name: str, value: float | torch.Tensor, mode: str = "train") -> None:
        """Add a value to the next logged line (values of one name are averaged over the logging window)."""
        self._values[mode][name].append(value)

    def add_columns(self, mode: str, columns: dict[str, torch.Tensor]) -> None:
        """Add one step's per-example metrics (gathered over processes) and show them to the listeners."""
        for name, values in columns.items():
            self._columns[mode][name].append(values)
        for listener in self._listeners:
            listener(mode, columns)

    def add_listener(self, listener: Callable[[str, dict[str, torch.Tensor]], None]) -> None:
        """Call `listener(mode, columns)` at every training or evaluation step with the step's per-example metrics,
        gathered over processes (`columns` maps a metric name to a `(global_batch,)` tensor, NaN where undefined)."""
        self._listeners.append(listener)

    def flush(self, mode: str) -> dict[str, float]:
        """The means of everything added since the last flush of `mode` (per-example means skip NaN); then empty."""
        metrics: dict[str, float] = {}
        columns = self._columns[mode]
        if columns:
            names = list(columns)
            means = torch.stack([torch.cat(columns[name]) for name in names], dim=1).nanmean(dim=0).tolist()
            metrics.update({name: value for name, value in zip(names, means, strict=True) if value == value})
            columns.clear()
        for key, values in self._values[mode].items():
            metrics[key] = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values]).mean().item()
        self._values[mode].clear()
        return metrics

    def clear(self) -> None:
        """Drop everything not logged yet, and forget the run's self-play quantities (a `train()` starting afresh;
        benchmarks that step outside `train()` call it after every step)."""
        for store in (*self._values.values(), *self._columns.values()):
            store.clear()
        self._announced.clear()
        self._ridden = 0

    # ---- self-play's quantities ----------------------------------------------------------------------------------

    def log_now(self, metrics: dict[str, float], iteration: int | None = None) -> None:
        """
        Log self-play quantities (of `iteration`, if given): they are measured now and logged with the next training
        entry, or with the train summary when no training entry follows (see [`take_riding`]); reporters
        (`report_to`) receive them with that entry, at its step.

        A quantity already logged for the same iteration in this run (also before the checkpoint a run resumed from)
        is not logged again: a resume that measures it again adds nothing.

        Args:
            metrics (`dict[str, float]`):
                Values by name (e.g. `{"self_play/likelihood_inversion": 0.25}`).
            iteration (`int`, *optional*):
                The self-play iteration they describe; `None` for a value of no iteration (the score before training).
        """
        seen = {(name, line.get(ITERATION_KEY)) for line in self._announced for name in line if name != ITERATION_KEY}
        fresh = {name: _plain(value) for name, value in metrics.items() if (name, iteration) not in seen}
        if fresh:
            self._announced.append(fresh if iteration is None else {**fresh, ITERATION_KEY: iteration})

    @property
    def announced(self) -> list[dict[str, float]]:
        """Every self-play quantity logged in this run, in order: one dict per [`log_now`] call, tagged with its
        iteration under `self_play/iteration` (untagged for none)."""
        return self._announced

    def take_riding(self) -> dict[str, float]:
        """
        The self-play quantities logged since the last training entry or train summary, for the entry being logged
        (the trainer calls it for exactly those entries); they are then marked as logged.

        When a name was logged for several iterations in that time (more than one iteration boundary before the next
        training entry, e.g. `logging_steps` longer than an iteration), the name holds the latest iteration's value,
        and each earlier one is kept under `<name>/iteration_<t>` (`<name>/start` for a value of no iteration).
        """
        latest: dict[str, tuple[int | None, float]] = {}
        earlier: dict[str, float] = {}
        for line in self._announced[self._ridden :]:
            iteration = line.get(ITERATION_KEY)
            for name, value in line.items():
                if name == ITERATION_KEY:
                    continue
                if name in latest:
                    before, previous = latest[name]
                    earlier[f"{name}/" + ("start" if before is None else f"iteration_{int(before)}")] = previous
                latest[name] = (iteration, value)
        self._ridden = len(self._announced)
        return {name: value for name, (_, value) in latest.items()} | earlier

    # ---- checkpoints ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the self-play quantities of the run (how many have been logged, so that the others
        still ride after a resume and none is logged twice) and the averaged training values not logged yet."""
        values = {name: [float(v) for v in values] for name, values in self._values["train"].items()}
        return {"announced": self._announced, "ridden": self._ridden, "train_values": values}

    def save(self, checkpoint_dir: str) -> None:
        """Write [`state_dict`] into a checkpoint folder (called by the trainer when it saves one)."""
        atomic_write(os.path.join(checkpoint_dir, STATE_FILE), json.dumps(self.state_dict()))

    def restore(self, checkpoint_dir: str) -> None:
        """Take back what [`save`] wrote into `checkpoint_dir` (a resume); a checkpoint without a readable file (one
        written by an older version) changes nothing, with a warning."""
        path = os.path.join(checkpoint_dir, STATE_FILE)
        try:
            with open(path) as f:
                state = json.load(f)
            announced, ridden = list(state["announced"]), int(state["ridden"])
            values = {str(name): [float(v) for v in vs] for name, vs in state.get("train_values", {}).items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning(
                "No readable %s (%s): self-play quantities measured before the checkpoint and not logged yet are not "
                "logged, and one measured again after the resume may be logged twice.",
                path,
                type(error).__name__,
            )
            return
        self.clear()
        self._announced.extend(announced)
        self._ridden = min(ridden, len(announced))
        for name, vs in values.items():
            self._values["train"][name].extend(vs)
