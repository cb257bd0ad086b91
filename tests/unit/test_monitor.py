"""`tspin_trl/monitor.py`: `IterationMonitor` summarises each iteration from all its steps (across a resume) and raises
the vanishing-advantage and saturation alarms."""

import pytest
import torch
from transformers import TrainerControl, TrainerState

from tests.support import make_context
from tspin_trl.clock import IterationPoint
from tspin_trl.monitor import IterationMonitor


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
            assert not control.should_log, "the logging windows are transformers' (logging_steps), as DPO's"
            monitor.on_epoch_end(context.args, state, control)
    summary = monitor.summaries[0]
    assert summary["advantage/current"] == pytest.approx(13.5) and summary["advantage/saturated"] == 0.5
    assert monitor.alarms == {"vanishing": [], "saturated": []}, "exactly half saturated is not most"
    line = logged[0]
    assert line["self_play/iteration"] == 0 and line["self_play/iteration_steps"] == 2.0
    assert context.metrics.take_riding()["iteration/advantage/current"] == pytest.approx(13.5), "for the next entry"
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
