"""`tspin_trl/clock.py`: which iteration a step or an epoch belongs to, where iterations start and end, and
where the learning-rate schedule stands."""

import pytest

from tspin_trl.clock import IterationClock


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
