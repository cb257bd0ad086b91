"""`tspin_trl/metrics.py`: the per-example metrics of a step and `MetricsLog`, which averages them."""

import math

import pytest
import torch

from tspin_trl.metrics import TIE_TOLERANCE, MetricsLog, per_example_metrics


def test_per_example_metrics_count_ties_and_identical_pairs_apart():
    logps = torch.tensor([[-10.0, -10.0, -10.0, -20.0], [-12.0, -10.0 - TIE_TOLERANCE / 2, -10.0, -15.0]])
    zeros = torch.zeros(4)
    columns = per_example_metrics(
        logps,
        {},
        zeros,
        zeros,
        zeros,
        response_lengths=torch.tensor([[3, 4], [3, 2], [5, 5], [1, 9]]),
        synthetic_equals_real=torch.tensor([False, False, True, False]),
        alpha=1.0,
        loss_type="sigmoid",
        saturation_threshold=1.5,
    )
    assert columns["advantage/current"].tolist() == pytest.approx([2.0, TIE_TOLERANCE / 2, 0.0, -5.0], abs=1e-6)
    assert columns["advantage/current_accuracy"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert columns["rewards/ties"].tolist() == [0.0, 1.0, 0.0, 0.0], "identical pairs are not ties"
    assert columns["self_play/synthetic_equals_real"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert columns["advantage/saturated"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert columns["rewards/disagreement"].tolist() == [0.0] * 4, "T-SPIN's rewards are its likelihoods"
    assert all(math.isnan(v) for v in columns["logps/proto"].tolist() + columns["loss/historical"].tolist())
    assert columns["length/synthetic"].tolist() == [4.0, 2.0, 5.0, 9.0]
    # with reference log-probs the reward and the likelihood can disagree
    refs = {"ref_real_logps": torch.tensor([-5.0] * 4), "ref_synthetic_logps": torch.tensor([-20.0] * 4)}
    with_refs = per_example_metrics(
        logps, refs, zeros, zeros, zeros, torch.ones(4, 2), torch.zeros(4, dtype=torch.bool),
        alpha=1.0, loss_type="sigmoid", saturation_threshold=10.0,
    )  # fmt: skip
    assert with_refs["rewards/disagreement"].tolist() == [1.0, 0.0, 0.0, 0.0], "likelier, but rewarded less"


def test_the_metrics_log_averages_a_window_skipping_undefined_values():
    lines = []
    log = MetricsLog(emit=lines.append)
    seen = []
    log.add_listener(lambda mode, columns: seen.append((mode, sorted(columns))))
    log.add_columns("train", {"a": torch.tensor([1.0, float("nan")]), "b": torch.tensor([float("nan")] * 2)})
    log.add_columns("train", {"a": torch.tensor([3.0, 5.0]), "b": torch.tensor([float("nan")] * 2)})
    log.record("c", 2.0)
    log.record("c", 4.0)
    log.record("d", 1.0, mode="eval")
    assert log.flush("train") == {"a": 3.0, "c": 3.0}, "a column with no defined value is left out"
    assert log.flush("train") == {} and log.flush("eval") == {"d": 1.0}
    assert seen == [("train", ["a", "b"])] * 2
    log.log_now({"x": 1.0}, iteration=2)
    assert lines == [{"x": 1.0, "self_play/iteration": 2}]
