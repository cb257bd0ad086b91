"""`IterationClock`: the one owner of self-play time.

Self-play iterations live in `transformers`' epochs: iteration `t` is epochs `[t * E, (t + 1) * E)` with
`E = epochs_per_iteration`, and one `train()` runs `num_iterations * E` epochs. Which iteration a step or an epoch
belongs to, where an iteration starts and ends, how many optimizer steps it has, and which iteration is running now:
every other module asks this object instead of computing it.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class IterationPoint:
    """
    Where the run stands when an iteration's triplets are prepared: the clock's answers, taken once and handed on.

    Args:
        iteration (`int`):
            The iteration being prepared.
        global_step (`int`):
            Optimizer steps taken so far (`state.global_step`).
        begun (`bool`):
            Whether training on `iteration` has taken a step already (a resume in its middle): its responses must
            exist, regenerating them would sample from a partly trained policy.
        at_start (`bool`):
            Whether `global_step` is exactly where `iteration` starts (not a resume in its middle).
    """

    iteration: int
    global_step: int
    begun: bool = False
    at_start: bool = False


class IterationClock:
    """
    Iteration arithmetic of one run, and the iteration running now.

    Optimizer steps are counted as `state.global_step` counts them: step `s >= 1` is the `s`-th optimizer step, and
    `global_step == s` after it. Iteration `t` is made of steps `t * S + 1 .. (t + 1) * S`, with `S` the steps per
    iteration, known once `train()` has sized its dataloader ([`set_steps_per_epoch`]).

    Args:
        num_iterations (`int`):
            Self-play iterations in one `train()`.
        epochs_per_iteration (`int`):
            Training epochs over one iteration's triplets.

    Example:

    ```python
    >>> from tspin_trl.clock import IterationClock

    >>> clock = IterationClock(num_iterations=3, epochs_per_iteration=2)
    >>> clock.num_train_epochs
    6
    >>> clock.set_steps_per_epoch(4)
    >>> clock.steps_per_iteration, clock.iteration_of_epoch(3.0), clock.iteration_of_step(9)
    (8, 1, 1)
    >>> clock.start_step(2), clock.is_iteration_end(16), clock.is_iteration_end(12)
    (16, True, False)
    >>> clock.has_begun(1, global_step=8), clock.has_begun(1, global_step=9)
    (False, True)
    ```
    """

    def __init__(self, num_iterations: int, epochs_per_iteration: int):
        self.num_iterations = num_iterations
        self.epochs_per_iteration = epochs_per_iteration
        self.steps_per_epoch: int | None = None
        self._current: int | None = None

    @classmethod
    def from_config(cls, args) -> "IterationClock":
        return cls(args.num_iterations, args.epochs_per_iteration)

    @property
    def current(self) -> int | None:
        """The iteration whose triplets are loaded (training on them, or about to); `None` before the first."""
        return self._current

    def enter(self, iteration: int) -> None:
        """Make `iteration` the current one: the only writer of [`current`] (called by
        `RunContext.start_iteration`)."""
        self._current = iteration

    def point(self, iteration: int, global_step: int) -> IterationPoint:
        """Where `iteration` stands at `global_step`: whether its training has begun, or starts exactly here."""
        return IterationPoint(
            iteration, global_step, self.has_begun(iteration, global_step), self.at_start(iteration, global_step)
        )

    @property
    def num_train_epochs(self) -> int:
        """Epochs of the whole run: `num_iterations * epochs_per_iteration`."""
        return self.num_iterations * self.epochs_per_iteration

    def set_steps_per_epoch(self, steps: int) -> None:
        """Called once `train()` knows how many optimizer steps an epoch has."""
        self.steps_per_epoch = steps

    @property
    def steps_per_iteration(self) -> int | None:
        """Optimizer steps of one iteration (`None` until `train()` has sized its dataloader)."""
        if self.steps_per_epoch is None:
            return None
        return self.steps_per_epoch * self.epochs_per_iteration

    def iteration_of_epoch(self, epoch: float | None) -> int:
        """The iteration an epoch belongs to (`state.epoch`, fractional within an epoch, `None` before training)."""
        whole = math.floor(epoch + 1e-6) if epoch else 0
        return min(whole // self.epochs_per_iteration, self.num_iterations - 1)

    def iteration_of_step(self, step: int) -> int:
        """The iteration optimizer step `step` (1-based, as `state.global_step` counts) belongs to."""
        return min(max(step - 1, 0) // self._steps(), self.num_iterations - 1)

    def start_step(self, iteration: int) -> int:
        """`global_step` when `iteration` starts (its first step is the next one)."""
        return iteration * self._steps()

    def end_step(self, iteration: int) -> int:
        """`global_step` after the last step of `iteration`."""
        return (iteration + 1) * self._steps()

    def is_iteration_end(self, global_step: int) -> bool:
        """Whether `global_step` is the last step of an iteration (`False` before the steps are known)."""
        steps = self.steps_per_iteration
        return bool(steps) and global_step > 0 and global_step % steps == 0

    def has_begun(self, iteration: int, global_step: int) -> bool:
        """Whether training on `iteration`'s triplets has taken at least one optimizer step by `global_step`."""
        return self.steps_per_iteration is not None and global_step > self.start_step(iteration)

    def at_start(self, iteration: int, global_step: int) -> bool:
        """Whether `global_step` is exactly where `iteration` starts (not a resume in its middle)."""
        return self.steps_per_iteration is not None and global_step == self.start_step(iteration)

    def run_is_over(self, epoch: float | None) -> bool:
        """Whether `state.epoch` has reached the end of the last iteration's last epoch."""
        return epoch is not None and epoch >= self.num_train_epochs - 1e-6

    def schedule_position(self, scheduler_step: int, total_steps: int | None = None) -> tuple[int, int, int]:
        """Where a learning-rate scheduler's step count falls: `(iteration, step within it, steps per iteration)`.

        A scheduler that has been stepped `k` times sets the rate of optimizer step `k + 1`. Before the steps per
        iteration are known, `total_steps` stands for them (one schedule over the whole run).
        """
        steps = self.steps_per_iteration or total_steps or 1
        return min(scheduler_step // steps, self.num_iterations - 1), scheduler_step % steps, steps

    def _steps(self) -> int:
        if self.steps_per_iteration is None:
            raise RuntimeError("The steps per iteration are known only once `train()` has sized its dataloader.")
        return self.steps_per_iteration
