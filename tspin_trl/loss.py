"""The T-SPIN objective and its variants: pure tensor math on per-example summed log-probs.

Paper (Wang, Sun et al., NeurIPS 2025, eq. 7), with `logp` the summed response log-probs under the policy:

    current    = r(y)  - r(y')        r(z) = alpha * logp(z)                  (T-SPIN, reference-free)
    historical = r(y') - r(y0)        r(z) = alpha * (logp(z) - logp_t(z))    (T-SPIN_ref, SPIN)
    loss       = l(current) + beta * l(historical)

with `y` the real (annotated) response, `y'` the synthetic response of the current policy, `y0` the
proto-synthetic response of the initial policy and `l(z) = -log sigmoid(z)` or `exp(-z)`. SPIN is the same
function with `beta = 0` and reference log-probs from the policy at the start of the iteration.
"""

import torch
import torch.nn.functional as F


# Scaled advantages above this are clamped: their loss and gradient are below 2e-22 anyway, and on CPUs such gradients
# become denormal floats that slow the whole backward pass 4-6x (measured, docs/benchmarks.md).
MAX_ADVANTAGE = 50.0
# Below this scaled advantage the exponential loss continues as its tangent line (value and slope of exp(-z) at the
# threshold), so that it stays finite for any finite advantage: exp(-z) overflows float32 below about -88 and bfloat16
# far earlier in gradient terms. The logistic loss needs no such care: -logsigmoid(z) grows linearly already.
EXPONENTIAL_LINEAR_BELOW = -20.0


def _per_term_loss(z: torch.Tensor, loss_type: str) -> torch.Tensor:
    z = z.float().clamp(max=MAX_ADVANTAGE)
    if loss_type == "sigmoid":
        return -F.logsigmoid(z)
    if loss_type == "exponential":
        threshold = EXPONENTIAL_LINEAR_BELOW
        tangent = torch.exp(torch.tensor(-threshold)) * (1 + (threshold - z))
        return torch.where(z >= threshold, torch.exp(-z.clamp(min=threshold)), tangent)
    raise ValueError(f"Unknown loss_type {loss_type!r}: use 'sigmoid' or 'exponential'.")


def clamped(z: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Where a scaled advantage `z` lies outside the range in which `l` is computed exactly (a boolean tensor): above
    `MAX_ADVANTAGE`, or, for the exponential loss, below `EXPONENTIAL_LINEAR_BELOW`."""
    outside = z > MAX_ADVANTAGE
    if loss_type == "exponential":
        outside = outside | (z < EXPONENTIAL_LINEAR_BELOW)
    return outside


def rewards(logps: torch.Tensor, ref_logps: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """Implicit reward `alpha * (logp - ref_logp)`, or `alpha * logp` when there is no reference."""
    return alpha * (logps if ref_logps is None else logps - ref_logps)


def tspin_loss(
    real_logps: torch.Tensor,
    synthetic_logps: torch.Tensor,
    proto_logps: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    ref_real_logps: torch.Tensor | None = None,
    ref_synthetic_logps: torch.Tensor | None = None,
    ref_proto_logps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""
    Compute the T-SPIN loss (and its SPIN / T-SPIN_ref variants) for a batch of response triplets.

    Args:
        real_logps (`torch.Tensor` of shape `(batch_size,)`):
            Summed log-probs of the real (annotated) responses `y` under the policy being trained.
        synthetic_logps (`torch.Tensor` of shape `(batch_size,)`):
            Summed log-probs of the synthetic responses `y'` (sampled from the current policy).
        proto_logps (`torch.Tensor` of shape `(batch_size,)`, *optional*):
            Summed log-probs of the proto-synthetic responses `y0` (sampled once from the initial policy). Required
            when `beta > 0`.
        alpha (`float`, *optional*, defaults to `1.0`):
            Reward scale. For SPIN this is its `lambda`.
        beta (`float`, *optional*, defaults to `0.1`):
            Weight of the historical-advantage term. `0` gives a pairwise loss (SPIN when reference log-probs are
            given).
        loss_type (`str`, *optional*, defaults to `"sigmoid"`):
            `"sigmoid"` for `l(z) = -log sigmoid(z)` or `"exponential"` for `l(z) = exp(-z)`.
        ref_real_logps, ref_synthetic_logps, ref_proto_logps (`torch.Tensor`, *optional*):
            Log-probs under the reference policy (the policy at the start of the iteration). When given, rewards are
            `alpha * (logp - ref_logp)` (T-SPIN_ref, SPIN); when omitted, rewards are `alpha * logp` (T-SPIN). Give
            all that the computed terms need, or none.

    The loss is computed in float32 whatever the input dtype. Scaled advantages above 50 are clamped to 50 (loss and
    gradient there are below 2e-22; unclamped, the gradient becomes a denormal float that slows CPU backward passes
    several-fold). The exponential loss continues below a scaled advantage of -20 as its tangent line, so it stays
    finite (see [`clamped`] and docs/loss.md). Any finite advantage gives a finite loss and finite gradients.

    Returns:
        `tuple[torch.Tensor, torch.Tensor, torch.Tensor]`: per-example losses `l(current) + beta * l(historical)`,
        then the per-example current-advantage term `l(current)` and historical-advantage term `l(historical)`
        (zeros when `beta == 0`), each of shape `(batch_size,)`.

    Example:

    ```python
    >>> import torch
    >>> from tspin_trl import tspin_loss

    >>> losses, current, historical = tspin_loss(
    ...     torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-15.0]), alpha=1.0, beta=0.1
    ... )
    >>> round(losses.item(), 4)  # -logsigmoid(2) - 0.1 * logsigmoid(3)
    0.1318
    ```
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}.")
    uses_reference = ref_real_logps is not None or ref_synthetic_logps is not None
    if uses_reference and (ref_real_logps is None or ref_synthetic_logps is None):
        raise ValueError("Pass both ref_real_logps and ref_synthetic_logps, or neither.")

    real_rewards = rewards(real_logps, ref_real_logps, alpha)
    synthetic_rewards = rewards(synthetic_logps, ref_synthetic_logps, alpha)
    current_losses = _per_term_loss(real_rewards - synthetic_rewards, loss_type)

    if beta == 0:
        historical_losses = torch.zeros_like(current_losses)
        return current_losses, current_losses, historical_losses

    if proto_logps is None:
        raise ValueError("proto_logps is required when beta > 0 (the historical advantage needs y0).")
    if uses_reference and ref_proto_logps is None:
        raise ValueError("ref_proto_logps is required when beta > 0 and reference log-probs are used.")
    proto_rewards = rewards(proto_logps, ref_proto_logps, alpha)
    historical_losses = _per_term_loss(synthetic_rewards - proto_rewards, loss_type)
    return current_losses + beta * historical_losses, current_losses, historical_losses
