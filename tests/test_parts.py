"""The self-play parts built and tested directly, on small inputs: the clock, the objective's policy, the metrics, the
iteration files, the run binding, the monitor and the scorer (each without a trainer or a `train()`)."""

import json
import math

import pytest
import torch
from datasets import Dataset
from helpers import make_context, sorting_rows
from transformers import TrainerControl, TrainerState

from tspin_trl.clock import IterationClock, IterationPoint
from tspin_trl.data import TripletDataset, TripletTokenizer, eos_token_ids
from tspin_trl.distributed import main_decides
from tspin_trl.metrics import TIE_TOLERANCE, MetricsLog, per_example_metrics
from tspin_trl.monitor import IterationMonitor
from tspin_trl.objective import ObjectivePolicy
from tspin_trl.run_folder import RunFolder
from tspin_trl.scoring import ScoringCallback
from tspin_trl.self_play import IterationFiles, RunBinding, SelfPlayError


# ---- the clock -----------------------------------------------------------------------------------------------------


def test_the_clock_places_steps_and_epochs_in_iterations():
    clock = IterationClock(num_iterations=3, epochs_per_iteration=2)
    assert clock.num_train_epochs == 6
    with pytest.raises(RuntimeError, match="sized its dataloader"):
        clock.iteration_of_step(1)
    assert not clock.is_iteration_end(4) and not clock.has_begun(0, 1)
    clock.set_steps_per_epoch(2)  # 4 steps per iteration
    assert clock.steps_per_iteration == 4
    assert [clock.iteration_of_step(s) for s in range(1, 13)] == [0] * 4 + [1] * 4 + [2] * 4
    assert clock.iteration_of_step(99) == 2, "steps past the end belong to the last iteration"
    assert [clock.iteration_of_epoch(e) for e in (None, 0.0, 0.5, 1.99, 2.0, 3.9999999, 5.0, 7.0)] == [
        0, 0, 0, 0, 1, 2, 2, 2,
    ]  # fmt: skip
    assert [s for s in range(13) if clock.is_iteration_end(s)] == [4, 8, 12]
    assert (clock.start_step(1), clock.end_step(1)) == (4, 8)
    assert clock.at_start(1, 4) and not clock.at_start(1, 5)
    assert not clock.has_begun(1, 4) and clock.has_begun(1, 5)
    # the scheduler's k-th step sets the rate of optimizer step k + 1
    assert [clock.schedule_position(k)[:2] for k in (0, 3, 4, 11, 12)] == [(0, 0), (0, 3), (1, 0), (2, 3), (2, 0)]
    fresh = IterationClock(num_iterations=2, epochs_per_iteration=1)
    assert fresh.schedule_position(5, total_steps=8) == (0, 5, 8), "one schedule over the run before steps are known"


# ---- the objective's policy ----------------------------------------------------------------------------------------


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


# ---- the metrics ---------------------------------------------------------------------------------------------------


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


def test_main_decides_in_one_process(tmp_path, tokenizer):
    context, _ = make_context(tmp_path, tokenizer)
    assert main_decides(context.accelerator, lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(KeyError, match="missing"):
        main_decides(context.accelerator, lambda: {}["missing"])


# ---- iteration files and the run binding -----------------------------------------------------------------------------


def _examples(tokenizer, n=3):
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", eos_token_ids(tokenizer))
    rows = [{"prompt": r["prompt"], "real": r["completion"][0]["content"]} for r in sorting_rows(n)]
    return TripletDataset([encode(row, i) for i, row in enumerate(rows)])


def test_iteration_files_are_used_only_when_intact_and_this_runs(tmp_path, tokenizer):
    dataset = _examples(tokenizer)
    dataset.set_column("synthetic_ids", [[5, 6], [7], [8, 9, 10]])
    dataset.set_column("ref_real_logps", [-1.0, -2.0, -3.0])
    files = IterationFiles(RunFolder(str(tmp_path)), vocab_size=len(tokenizer), identity_digest="run-a")
    rows = files.rows_of(dataset, tokenizer)
    assert rows[0]["synthetic"] == tokenizer.decode([5, 6], skip_special_tokens=True)
    files.write(1, "train", rows, {"global_step": 4})
    assert files.read(1, "train", 3) == rows
    assert files.read(1, "train", 4) is None, "another number of examples"
    assert files.read(2, "train", 3) is None, "absent"
    fresh = _examples(tokenizer)
    files.load_into(files.read(1, "train", 3), fresh)
    assert fresh.column("synthetic_ids") == [[5, 6], [7], [8, 9, 10]] and fresh.column("ref_real_logps")[2] == -3.0
    other_run = IterationFiles(files.folder, len(tokenizer), identity_digest="run-b")
    assert other_run.read(1, "train", 3) is None

    def written_with(bad_row):
        files.write(1, "train", [bad_row] + rows[1:], {})
        return files.read(1, "train", 3)

    assert written_with(rows[0] | {"synthetic_ids": []}) is None, "generation never yields an empty response"
    assert written_with(rows[0] | {"synthetic_ids": [len(tokenizer)]}) is None, "outside the vocabulary"
    assert written_with(rows[0] | {"synthetic_ids": [True]}) is None
    assert written_with(rows[0] | {"ref_real_logps": float("inf")}) is None
    files.write(1, "train", rows, {})
    path = files.path(1, "train")
    with open(path, "a") as f:
        f.write("\n")  # any change to the bytes breaks the checksum
    assert files.read(1, "train", 3) is None


def test_a_dataset_restores_what_it_was_given(tokenizer):
    dataset = _examples(tokenizer, n=2)
    dataset.set_column("synthetic_ids", [[1], [2]])
    given = TripletDataset([dict(e) for e in dataset.examples])  # a dataset that brought its own synthetic responses
    given.set_column("synthetic_ids", [[7], [8]])
    given.set_column("proto_ids", [[9], [9]])
    assert given[0]["synthetic_ids"] == [7]
    given.restore_given()
    assert given.column("synthetic_ids") == [[1], [2]] and not given.has("proto")
    bare = _examples(tokenizer, n=2)
    bare.set_column("synthetic_ids", [[3], [4]])
    bare.restore_given()
    assert not bare.has("synthetic")


def test_the_run_binding_refuses_another_runs_folder(tmp_path):
    folder = RunFolder(str(tmp_path))
    binding = RunBinding(folder)
    identity = {"data": {"train": "d1"}, "temperature": 1.0}
    binding.bind(identity, "digest-1", global_step=0)
    assert json.loads(open(folder.identity_path).read())["digest"] == "digest-1"
    for iteration in (0, 1):
        (tmp_path / "self_play" / f"iteration_{iteration}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "self_play" / f"iteration_{iteration}" / "train.jsonl").write_text("{}\n")
    folder.append_log({"step": 1})
    binding.bind(identity, "digest-1", global_step=0)  # a fresh start of the same run
    assert folder.iteration_numbers() == [0], "what the trained policy produced is dropped, iteration 0 kept"
    assert not (tmp_path / "self_play" / "logs.jsonl").exists()
    other = {"data": {"train": "d2"}, "temperature": 0.5}
    with pytest.raises(SelfPlayError, match=r"another run \(it differs in: data \(different content\), temperature"):
        binding.bind(other, "digest-2", global_step=0)
    with pytest.raises(SelfPlayError, match=r"Cannot resume.*temperature \(1\.0 -> 0\.5\)"):
        binding.bind(other, "digest-2", global_step=3)


# ---- the monitor ---------------------------------------------------------------------------------------------------


def _step_columns(current: list[float], saturated: list[float]) -> dict[str, torch.Tensor]:
    return {
        "advantage/current": torch.tensor(current),
        "logps/abs_margin": torch.tensor(current).abs(),
        "advantage/saturated": torch.tensor(saturated),
        "self_play/synthetic_equals_real": torch.zeros(len(current)),
    }


def test_the_monitor_summarises_each_iteration_from_all_its_steps(tmp_path, tokenizer, caplog):
    context, logged = make_context(tmp_path, tokenizer, steps_per_epoch=2, num_iterations=2)
    monitor = IterationMonitor(context)
    state, control = TrainerState(), TrainerControl()
    context.start_iteration(IterationPoint(0, global_step=0))
    steps = {1: ([1.0, 3.0], [0.0, 0.0]), 2: ([20.0, 30.0], [1.0, 1.0]), 3: ([0.01, 0.02], [0.0, 0.0])}
    with caplog.at_level("WARNING"):
        for step, (current, saturated) in steps.items():
            if step == 3:
                context.start_iteration(IterationPoint(1, global_step=2))
            context.metrics.add_columns("train", _step_columns(current, saturated))
            context.metrics.add_columns("eval", _step_columns([99.0], [1.0]))  # evaluation is not training
            state.global_step = step
            control = monitor.on_step_end(context.args, state, control)
            assert control.should_log == (step == 2), "the logging window ends with the iteration"
            control.should_log = False
            monitor.on_epoch_end(context.args, state, control)
    summary = monitor.summaries[0]
    assert summary["advantage/current"] == pytest.approx(13.5) and summary["advantage/saturated"] == 0.5
    assert monitor.alarms == {"vanishing": [], "saturated": []}, "exactly half saturated is not most"
    line = logged[0]
    assert line["self_play/iteration"] == 0 and line["self_play/iteration_steps"] == 2.0
    record = context.folder.iteration_records()[0]
    assert (record["first_step"], record["last_step"], record["complete"]) == (1, 2, True)

    # a checkpoint in the middle of iteration 1, and a new monitor resuming from it: the summary covers every step
    checkpoint = str(tmp_path / "checkpoint-3")
    monitor.save(checkpoint)
    resumed_context, resumed_logged = make_context(tmp_path, tokenizer, steps_per_epoch=2, num_iterations=2)
    resumed_context.start_train(resumed_from_checkpoint=checkpoint)  # as the trainer's `train()` does
    resumed_context.clock.set_steps_per_epoch(2)  # as `train()` does once it has sized the dataloader
    resumed_context.start_iteration(IterationPoint(1, global_step=3))
    resumed = IterationMonitor(resumed_context)
    state.global_step = 3
    resumed.on_train_begin(resumed_context.args, state, control)
    resumed_context.metrics.add_columns("train", _step_columns([0.03, 0.04], [0.0, 0.0]))
    state.global_step = 4
    resumed.on_step_end(resumed_context.args, state, control)
    with caplog.at_level("WARNING"):
        resumed.on_epoch_end(resumed_context.args, state, control)
    assert resumed.summaries[1]["advantage/current"] == pytest.approx(0.025)
    assert resumed.alarms["vanishing"] == [1] and "has vanished" in caplog.text
    assert (
        resumed_logged[-1]["self_play/iteration_steps"] == 2.0 and resumed_logged[-1]["self_play/advantage_vanished"]
    )


def test_the_monitor_raises_the_saturation_alarm(tmp_path, tokenizer, caplog):
    context, _ = make_context(tmp_path, tokenizer, steps_per_epoch=1)
    monitor = IterationMonitor(context)
    context.start_iteration(IterationPoint(0, global_step=0))
    context.metrics.add_columns("train", _step_columns([20.0, 30.0, 1.0], [1.0, 1.0, 0.0]))
    state = TrainerState(global_step=1)
    with caplog.at_level("WARNING"):
        monitor.on_epoch_end(context.args, state, TrainerControl())
    assert monitor.alarms["saturated"] == [0] and "Try a lower `alpha`" in caplog.text


# ---- the scorer ----------------------------------------------------------------------------------------------------


def test_the_scorer_scores_greedy_responses_once_per_label(tmp_path, tokenizer, caplog):
    held_out = Dataset.from_list(sorting_rows(3))
    calls = []

    def scorer(responses, rows):
        calls.append(len(responses))
        assert rows[1]["prompt"] == held_out[1]["prompt"]
        if len(calls) == 2:
            raise ZeroDivisionError("a bug in the user's scorer")
        return 0.5

    context, logged = make_context(tmp_path, tokenizer, steps_per_epoch=2, num_iterations=2, generation_batch_size=2)
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", context.eos_token_ids)
    scoring = ScoringCallback(context, scorer, held_out, encode)
    state, control = TrainerState(), TrainerControl()
    scoring.on_train_begin(context.args, state, control)
    context.start_iteration(IterationPoint(0, global_step=0))
    for step in (1, 2, 3):
        state.global_step = step
        with caplog.at_level("ERROR"):
            scoring.on_epoch_end(context.args, state, control)
    assert [s["label"] for s in scoring.scores] == ["start", "iteration_0"], "step 3 ends no iteration"
    assert math.isnan(scoring.scores[1]["score"]) and "ZeroDivisionError" in scoring.scores[1]["error"]
    assert "The scorer" in caplog.text and "training continues" in caplog.text
    assert [line["self_play/score"] for line in logged][0] == 0.5
    records = context.folder.scores()
    assert [len(r["responses"]) for r in records] == [3, 3]
    # greedy: the same policy gives the same responses
    assert records[0]["responses"] == records[1]["responses"]
    # a resumed run does not score a label again
    again = ScoringCallback(context, scorer, held_out, encode)
    again.on_train_begin(context.args, state, control)
    state.global_step = 2
    again.on_epoch_end(context.args, state, control)
    assert again.scores == [] and calls == [3, 3]


def test_deepspeed_cpu_notice_is_dropped_and_other_messages_pass():
    """Importing tspin_trl drops DeepSpeed's 'Setting accelerator to CPU' warning that every CPU run printed."""
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    code = (
        "import logging, tspin_trl, deepspeed\nlogging.getLogger('DeepSpeed').warning('another DeepSpeed warning')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Setting accelerator to CPU" not in output and "another DeepSpeed warning" in output
