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
    log = MetricsLog()
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


def test_self_play_quantities_wait_for_the_next_entry_that_takes_them():
    log = MetricsLog()
    log.log_now({"x": 1.0}, iteration=2)
    log.record("c", 2.0)
    assert log.announced == [{"x": 1.0, "self_play/iteration": 2}]
    assert log.flush("train") == {"c": 2.0}, "the averaged values are not the riding ones"
    assert log.take_riding() == {"x": 1.0}
    assert log.take_riding() == {}, "each rides once"
    log.log_now({"x": 5.0}, iteration=2)
    assert log.take_riding() == {} and len(log.announced) == 1, "a quantity of an iteration is logged once"
    log.log_now({"x": 3.0, "y": 4.0}, iteration=3)
    assert log.take_riding() == {"x": 3.0, "y": 4.0}


def test_a_name_logged_for_several_iterations_before_an_entry_keeps_every_value():
    log = MetricsLog()
    log.log_now({"self_play/score": 0.1})  # before training: no iteration
    log.log_now({"self_play/score": 0.2, "iteration/loss": 1.0}, iteration=0)
    log.log_now({"self_play/score": 0.3, "iteration/loss": 0.5}, iteration=1)
    assert log.take_riding() == {
        "self_play/score": 0.3,
        "iteration/loss": 0.5,
        "self_play/score/start": 0.1,
        "self_play/score/iteration_0": 0.2,
        "iteration/loss/iteration_0": 1.0,
    }


def test_a_checkpoint_keeps_what_is_pending_and_what_was_logged(tmp_path):
    log = MetricsLog()
    log.log_now({"x": 1.0}, iteration=0)
    assert log.take_riding() == {"x": 1.0}  # in the checkpoint's log_history
    log.log_now({"y": 2.0}, iteration=0)  # measured, not logged yet
    log.record("generation/seconds", torch.tensor(4.0))
    log.record("generation/seconds", 2.0)
    log.save(str(tmp_path))

    resumed = MetricsLog()
    resumed.restore(str(tmp_path))
    resumed.log_now({"x": 1.5, "y": 2.5}, iteration=0)  # the resume measures both again
    resumed.log_now({"x": 7.0}, iteration=1)
    assert resumed.take_riding() == {"y": 2.0, "x": 7.0}, "y still rides, x is not logged twice"
    assert resumed.flush("train") == {"generation/seconds": 3.0}


def test_a_checkpoint_without_the_file_restores_nothing(tmp_path, caplog):
    log = MetricsLog()
    log.log_now({"x": 1.0}, iteration=0)
    with caplog.at_level("WARNING"):
        log.restore(str(tmp_path))
    assert "No readable" in caplog.text and log.take_riding() == {"x": 1.0}, "left as it was"
