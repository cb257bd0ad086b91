"""`tspin_trl/loss.py`: `tspin_loss` and the objective variants against hand computation, the gradient's direction
(paper Thm. 1), and finiteness for any finite advantage."""

import math

import pytest
import torch

from tspin_trl import tspin_loss
from tspin_trl.loss import EXPONENTIAL_LINEAR_BELOW, clamped


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


REAL, SYN, PROTO = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0]), torch.tensor([-15.0, -5.0])


def test_sigmoid_tspin_matches_hand_computation():
    losses, current, historical = tspin_loss(REAL, SYN, PROTO, alpha=1.0, beta=0.1)
    # example 0: u = -10 - -12 = 2, v = -12 - -15 = 3; example 1: u = -1, v = 2
    expected_current = [-logsig(2.0), -logsig(-1.0)]
    expected_historical = [-logsig(3.0), -logsig(2.0)]
    torch.testing.assert_close(current, torch.tensor(expected_current))
    torch.testing.assert_close(historical, torch.tensor(expected_historical))
    torch.testing.assert_close(
        losses, torch.tensor([c + 0.1 * h for c, h in zip(expected_current, expected_historical)])
    )


def test_alpha_scales_both_advantages():
    losses, current, historical = tspin_loss(REAL, SYN, PROTO, alpha=0.5, beta=1.0)
    torch.testing.assert_close(current, torch.tensor([-logsig(1.0), -logsig(-0.5)]))
    torch.testing.assert_close(historical, torch.tensor([-logsig(1.5), -logsig(1.0)]))
    torch.testing.assert_close(losses, current + historical)


def test_exponential_loss():
    losses, current, historical = tspin_loss(REAL, SYN, PROTO, alpha=1.0, beta=0.1, loss_type="exponential")
    torch.testing.assert_close(current, torch.tensor([math.exp(-2.0), math.exp(1.0)]))
    torch.testing.assert_close(historical, torch.tensor([math.exp(-3.0), math.exp(-2.0)]))
    torch.testing.assert_close(losses, current + 0.1 * historical)


def test_beta_zero_ignores_proto():
    losses, current, historical = tspin_loss(REAL, SYN, None, beta=0.0)
    torch.testing.assert_close(losses, current)
    assert torch.all(historical == 0)


def test_tspin_ref_uses_log_ratios():
    refs = dict(
        ref_real_logps=torch.tensor([-11.0, -4.0]),
        ref_synthetic_logps=torch.tensor([-11.0, -4.0]),
        ref_proto_logps=torch.tensor([-14.0, -4.0]),
    )
    losses, current, historical = tspin_loss(REAL, SYN, PROTO, alpha=1.0, beta=0.1, **refs)
    # rewards: real (1, 0), synthetic (-1, 1), proto (-1, -1)
    torch.testing.assert_close(current, torch.tensor([-logsig(2.0), -logsig(-1.0)]))
    torch.testing.assert_close(historical, torch.tensor([-logsig(0.0), -logsig(2.0)]))


def test_spin_objective_is_dpo_sigmoid():
    ref_real, ref_syn = torch.tensor([-9.0, -5.0]), torch.tensor([-13.0, -2.0])
    losses, _, _ = tspin_loss(REAL, SYN, alpha=0.1, beta=0.0, ref_real_logps=ref_real, ref_synthetic_logps=ref_syn)
    margin = (REAL - ref_real) - (SYN - ref_syn)  # (-1 - 1, 1 - -1) = (-2, 2)
    torch.testing.assert_close(losses, -torch.nn.functional.logsigmoid(0.1 * margin))


def test_gradient_direction_theorem_1():
    """Paper Thm. 1: the loss pushes logp(real) up and logp(proto) down."""
    real, syn, proto = (t.clone().requires_grad_() for t in (REAL, SYN, PROTO))
    for loss_type in ("sigmoid", "exponential"):
        for t in (real, syn, proto):
            t.grad = None
        losses, _, _ = tspin_loss(real, syn, proto, beta=0.1, loss_type=loss_type)
        losses.sum().backward()
        assert torch.all(real.grad < 0), "descent must increase logp(real)"
        assert torch.all(proto.grad > 0), "descent must decrease logp(proto)"
        # synthetic: pushed down by the current term, up by the historical one (weighted by beta)
        u, v = (REAL - SYN), (SYN - PROTO)
        if loss_type == "sigmoid":
            expected = torch.sigmoid(-u) - 0.1 * torch.sigmoid(-v)
        else:
            expected = torch.exp(-u) - 0.1 * torch.exp(-v)
        torch.testing.assert_close(syn.grad, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beta=0.1), "proto_logps is required"),
        (dict(beta=-1.0), "beta must be >= 0"),
        (dict(beta=0.0, ref_real_logps=REAL), "both ref_real_logps and ref_synthetic_logps"),
        (dict(beta=0.0, loss_type="hinge"), "Unknown loss_type"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tspin_loss(REAL, SYN, None, **kwargs)


def test_huge_advantages_are_clamped_not_denormal():
    """Beyond 50 nats the loss and its gradient are below 2e-22: clamped to exactly 0 gradient, never denormal."""
    real = torch.tensor([0.0, 0.0], requires_grad=True)
    synthetic = torch.tensor([-90.0, -10.0])
    losses, _, _ = tspin_loss(real, synthetic, beta=0.0)
    losses.sum().backward()
    assert real.grad[0] == 0.0 and real.grad[1] < 0
    torch.testing.assert_close(losses[1], -torch.nn.functional.logsigmoid(torch.tensor(10.0)))
    assert 0 < losses[0] < 1e-21


@pytest.mark.parametrize("loss_type", ["sigmoid", "exponential"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("objective", ["tspin", "tspin_ref", "spin"])
def test_loss_and_gradients_stay_finite_for_any_finite_advantage(loss_type, dtype, objective):
    advantages = torch.tensor([-1e4, -150.0, -88.0, -20.0, 0.0, 20.0, 88.0, 150.0, 1e4])
    n = advantages.numel()
    real = torch.zeros(n, dtype=dtype, requires_grad=True)
    synthetic = (-advantages).to(dtype).detach().requires_grad_(True)  # current advantage = +-1e4 ...
    proto = (2 * -advantages).to(dtype).detach().requires_grad_(True)  # ... and historical the same
    refs = {}
    if objective != "tspin":
        refs = {f"ref_{role}_logps": torch.zeros(n, dtype=dtype) for role in ("real", "synthetic", "proto")}
    beta = 0.0 if objective == "spin" else 0.1
    losses, current, historical = tspin_loss(real, synthetic, proto, alpha=1.0, beta=beta, loss_type=loss_type, **refs)
    losses.sum().backward()
    for tensor in (losses, current, historical, real.grad, synthetic.grad):
        assert torch.isfinite(tensor.float()).all(), (tensor, loss_type, dtype)
    if beta > 0:
        assert torch.isfinite(proto.grad.float()).all()
    # the loss still decreases in the advantage everywhere, and the clamp is reported where it bites
    assert (current[:-1] >= current[1:]).all()
    assert clamped(advantages, loss_type).tolist() == [
        loss_type == "exponential" and a < EXPONENTIAL_LINEAR_BELOW or a > 50 for a in advantages.tolist()
    ]


def test_exponential_loss_is_exact_above_its_threshold():
    z = torch.tensor([-19.0, -1.0, 0.0, 3.0])
    losses, _, _ = tspin_loss(z, torch.zeros(4), beta=0.0, loss_type="exponential")
    torch.testing.assert_close(losses, torch.exp(-z))
