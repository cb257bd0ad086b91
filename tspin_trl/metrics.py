"""Training and evaluation metrics: the per-example quantities of a step, and the log that averages them.

Per-example metrics are computed on the device, gathered over processes once per step as one tensor, and averaged
and converted to floats only when a line is logged (no host sync in the training step). NaN marks a value an example
does not have (the proto response in iteration 0, a reference log-prob for T-SPIN). Listeners (the iteration
monitor) see every step's gathered columns.
"""

from collections import defaultdict
from collections.abc import Callable

import torch

from .loss import clamped, rewards


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


class MetricsLog:
    """
    The metrics of the running `train()` or `evaluate()` until the next logged line.

    Args:
        emit (`Callable[[dict[str, float]], None]`):
            Writes one line to the trainer's log (and its reporters), as `Trainer.log` does.
    """

    def __init__(self, emit: Callable[[dict[str, float]], None]):
        self._emit = emit
        self._values: dict[str, dict[str, list]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._columns: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._listeners: list[Callable[[str, dict[str, torch.Tensor]], None]] = []

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
        """Drop everything not logged yet (benchmarks that step outside `train()` call it after every step)."""
        for store in (*self._values.values(), *self._columns.values()):
            store.clear()

    def log_now(self, metrics: dict[str, float], iteration: int | None = None) -> None:
        """Log self-play metrics (of `iteration`, if given) as their own line, not merged into a training-step line."""
        self._emit(metrics if iteration is None else {**metrics, "self_play/iteration": iteration})
