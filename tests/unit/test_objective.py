"""`tspin_trl/objective.py`: the objective's policy, which decides each iteration's roles, alpha, beta,
learning-rate multiplier, response sources and reference log-probs."""

import math
from pathlib import Path

import pytest

from tspin_trl import TSPINConfig
from tspin_trl.objective import ObjectivePolicy


def test_the_policy_decides_roles_beta_and_sources():
    tspin = ObjectivePolicy("tspin", beta=0.1, beta_first_iteration=0.0, reuse_proto_as_first_synthetic=True)
    assert [tspin.beta_for(t) for t in range(3)] == [0.0, 0.1, 0.1]
    assert tspin.roles_for(0) == ("real", "synthetic") and tspin.roles_for(1) == ("real", "synthetic", "proto")
    assert tspin.reference_roles_for(1) == () and not tspin.uses_reference
    assert [tspin.synthetic_source(t) for t in range(2)] == ["proto", "policy"]
    assert tspin.needs_proto(0) and tspin.needs_proto(1)
    # a dataset with its own synthetic responses: iteration 0 trains with beta and takes its synthetic responses
    own = ObjectivePolicy("tspin", 0.1, 0.0, True, own_synthetic=True)
    assert own.beta_for(0) == 0.1 and own.synthetic_source(0) == "dataset"
    assert own.synthetic_source(0, own_synthetic=False) == "proto", "an eval set without the column samples them"
    # no proto reuse, beta 0 in iteration 0: iteration 0 samples, and needs no proto response
    fresh = ObjectivePolicy("tspin", 0.1, 0.0, reuse_proto_as_first_synthetic=False)
    assert fresh.synthetic_source(0) == "policy" and not fresh.needs_proto(0)
    spin = ObjectivePolicy("spin", beta=0.5, beta_first_iteration=0.5, reuse_proto_as_first_synthetic=True)
    assert [spin.beta_for(t) for t in range(3)] == [0.0, 0.0, 0.0]
    assert spin.uses_reference and spin.reference_roles_for(2) == ("real", "synthetic")
    ref = ObjectivePolicy("tspin_ref", 0.1, 0.0, True)
    assert ref.reference_roles_for(0) == ("real", "synthetic") and ref.reference_roles_for(1) == ref.roles_for(1)


ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path, **kwargs) -> TSPINConfig:
    return TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, num_iterations=3, **kwargs)


@pytest.mark.parametrize(
    "name, learning_rates, alphas",
    [
        ("spin_scripts", [5e-7, 5e-7, 1e-7, 1e-7], [0.1, 0.1, 0.1, 5.0]),
        ("nemo_annealing", [5e-7, 3e-7, 1e-7], [0.1, 0.1 * math.sqrt(50), 5.0]),
    ],
)
def test_the_preset_configs_say_what_their_sources_say(tmp_path, name, learning_rates, alphas):
    from tspin_trl.scripts.train import make_parser

    path = ROOT / "examples" / "configs" / f"{name}.yaml"
    _, args, *_ = make_parser().parse_args_and_config(
        args=["--config", str(path), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    )
    policy = ObjectivePolicy.from_config(args, own_synthetic=False)
    assert args.objective == "spin" and args.num_iterations == len(learning_rates)
    assert [args.learning_rate * policy.learning_rate_scale(t) for t in range(args.num_iterations)] == pytest.approx(
        learning_rates
    )
    assert [policy.alpha_for(t) for t in range(args.num_iterations)] == pytest.approx(alphas, rel=1e-3)
    assert [policy.beta_for(t) for t in range(args.num_iterations)] == [0.0] * args.num_iterations


def test_the_policy_reads_the_schedules(tmp_path):
    args = config(tmp_path, alpha_schedule=[1.0, 0.5, 2.0], beta_schedule=[0.3, 0.2, 0.4])
    for own_synthetic in (False, True):  # beta_schedule[0] is iteration 0's beta whatever its synthetic source
        policy = ObjectivePolicy.from_config(args, own_synthetic=own_synthetic)
        assert [policy.beta_for(t) for t in range(3)] == [0.3, 0.2, 0.4]
        assert [policy.alpha_for(t) for t in range(3)] == [1.0, 0.5, 2.0]
        assert policy.roles_for(0) == ("real", "synthetic", "proto")
    plain = ObjectivePolicy.from_config(config(tmp_path), own_synthetic=False)
    assert [(plain.alpha_for(t), plain.beta_for(t), plain.learning_rate_scale(t)) for t in range(3)] == [
        (1.0, 0.0, 1.0),
        (1.0, 0.1, 1.0),
        (1.0, 0.1, 1.0),
    ]
