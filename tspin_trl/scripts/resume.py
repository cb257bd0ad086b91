"""Resuming `tspin-trl train`: what `--resume_from_checkpoint` means, the command that resumes an interrupted run, and
the line a resumed run prints about where it continues.

`--resume_from_checkpoint` is a string, as in TRL's scripts and transformers' `TrainingArguments` (a YAML config may
give a boolean): `last` or `true` is the last complete checkpoint of `output_dir` (`trainer.train(
resume_from_checkpoint=True)`, which takes the last one complete on every node), `false` or `none` is no resume, and
anything else is a checkpoint folder (`./last` for a folder named `last`).
"""

import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence

from transformers import TrainerCallback

from tspin_trl.checkpoints import last_complete_checkpoint, step_of

from .errors import InputNotFoundError


LAST = ("last", "true")
NO_RESUME = ("none", "false", "")
FLAG = "--resume_from_checkpoint"
_SPELLINGS = (FLAG, "--resume-from-checkpoint")


def resume_target(value: str | bool | None, output_dir: str) -> str | bool | None:
    """
    `--resume_from_checkpoint` as `trainer.train(resume_from_checkpoint=...)` takes it, checked before anything loads.

    Args:
        value (`str`, `bool` or `None`):
            The flag's value: `last`/`true` (any case, or `True` from a YAML file), `false`/`none` (or `False`), or a
            checkpoint folder.
        output_dir (`str`):
            The run's output folder, where `last` looks.

    Returns:
        `True` (the last complete checkpoint, as the trainer finds it on every node), `None` (no resume), or the
        folder.

    Raises:
        [`InputNotFoundError`]: `last` without a complete checkpoint in `output_dir`, or a folder that does not exist.
    """
    if value is None or value is False:
        return None
    if value is True or value.strip().lower() in LAST:
        if last_complete_checkpoint(output_dir) is None:
            raise InputNotFoundError(
                f"{FLAG} {'last' if value is True else value} found no complete checkpoint in output_dir "
                f"{output_dir!r} (checkpoint-* folders with trainer_state.json and model weights): the run saved none "
                f"before it stopped, or output_dir is another. Run the command without {FLAG} to start from the "
                "beginning, or set --output_dir to the interrupted run's folder."
            )
        return True
    if value.strip().lower() in NO_RESUME:
        return None
    if not os.path.isdir(os.path.expanduser(value)):
        last = last_complete_checkpoint(output_dir)
        hint = f" ({last} in output_dir)" if last else f" (output_dir {output_dir!r} has none)"
        raise InputNotFoundError(
            f"The checkpoint folder {value!r} given to {FLAG} does not exist. {FLAG} takes a checkpoint folder, "
            f"`last` (or `true`) for the last complete checkpoint of output_dir{hint}, or `none`."
        )
    return os.path.expanduser(value)


def program() -> list[str]:
    """How this process was started, as a person would type it again: `tspin-trl` (the console script),
    `python -m tspin_trl`, or the path of either when the one found on `PATH` is another."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(os.path.dirname(os.path.abspath(script))) == "tspin_trl" and script.endswith("__main__.py"):
        for name in ("python", "python3"):
            found = shutil.which(name)
            if found and os.path.abspath(found) == os.path.abspath(sys.executable):
                return [name, "-m", "tspin_trl"]
        return [sys.executable, "-m", "tspin_trl"]
    if os.path.basename(script).startswith("tspin-trl"):
        found = shutil.which("tspin-trl")
        return ["tspin-trl"] if found and os.path.abspath(found) == os.path.abspath(script) else [script]
    return ["tspin-trl"]


def without_resume(argv: Sequence[str]) -> list[str]:
    """`argv` without any `--resume_from_checkpoint X` (or `--resume-from-checkpoint X`, `--resume_from_checkpoint=X`)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _SPELLINGS:
            skip = True
        elif not arg.startswith(tuple(f"{spelling}=" for spelling in _SPELLINGS)):
            kept.append(arg)
    return kept


def with_resume(argv: Sequence[str], value: str = "last") -> list[str]:
    """`argv` with its `--resume_from_checkpoint`, if any, replaced by `--resume_from_checkpoint value` at the end."""
    return [*without_resume(argv), FLAG, value]


def given_resume(argv: Sequence[str]) -> str | None:
    """The value `argv` gives `--resume_from_checkpoint`, if any (the last one wins, as in argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg in _SPELLINGS and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(tuple(f"{spelling}=" for spelling in _SPELLINGS)):
            value = arg.split("=", 1)[1]
    return value


def launcher(env: Mapping[str, str] | None = None) -> str | None:
    """`"accelerate launch"` when this process was started by it (every accelerate launcher sets
    `ACCELERATE_MIXED_PRECISION`), `"your launcher"` for another that started several processes (`WORLD_SIZE`), else
    `None`."""
    env = os.environ if env is None else env
    if "ACCELERATE_MIXED_PRECISION" in env:
        return "accelerate launch"
    if env.get("WORLD_SIZE", "1") not in ("", "1"):
        return "your launcher"
    return None


def interrupted_note(command: Sequence[str], train_argv: Sequence[str], output_dir: str) -> str:
    """
    What an interrupted run prints after "interrupted.": the checkpoint a resume starts from and the command that
    resumes, quoted for a shell, or that no checkpoint was saved and the command that starts the run again.

    Args:
        command (`Sequence[str]`):
            How the command was started and its subcommand (see [`program`]), e.g. `["tspin-trl", "train"]`.
        train_argv (`Sequence[str]`):
            The arguments after the subcommand, as given.
        output_dir (`str`):
            The run's output folder.
    """
    last = last_complete_checkpoint(output_dir)
    given = given_resume(train_argv)
    if last is not None:
        total = _max_steps(last)
        text = f"The last complete checkpoint is {last} (step {step_of(last)}{f' of {total}' if total else ''}). "
        text += "To resume from it"
        argv = with_resume(train_argv, "last")
    elif given is not None and given.strip().lower() not in (*LAST, *NO_RESUME):
        text = f"No checkpoint was saved in {output_dir} this time. To resume from {given} again"
        argv = list(train_argv)
    else:
        text = (
            f"No checkpoint was saved yet (none in {output_dir}): the run starts again from the beginning. To start it"
        )
        argv = without_resume(train_argv)
    via = launcher()
    if via == "accelerate launch":
        text += ", run your `accelerate launch` command with the same launch options and these arguments"
        line = "accelerate launch [the same options] " + shlex.join(["-m", "tspin_trl", *command[-1:], *argv])
    else:
        text += f", start the processes with {via} as before, each running" if via else ", run"
        line = shlex.join([*command, *argv])
    return f"{text} (in {os.getcwd()}):\n  {line}"


def _max_steps(checkpoint: str) -> int | None:
    """The run's total steps as the checkpoint's `trainer_state.json` records them."""
    try:
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            steps = json.load(f).get("max_steps")
    except (OSError, ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) and steps > 0 else None


class ResumeNotice(TrainerCallback):
    """
    Prints, as a resumed `train()` starts (main process), the checkpoint it resumed from and where training continues:
    the step, and the iteration (starting, or continuing in its middle).

    Args:
        context ([`~tspin_trl.context.RunContext`]):
            The run's context: the checkpoint resumed from and the iteration clock.
        prog (`str`):
            The name the line starts with.
    """

    def __init__(self, context, prog: str = "tspin-trl train"):
        self.context = context
        self.prog = prog

    def on_train_begin(self, args, state, control, **kwargs):
        checkpoint = self.context.resumed_from_checkpoint
        if checkpoint is None or not state.is_world_process_zero:
            return
        print(f"{self.prog}: {resumed_message(checkpoint, state, self.context.clock)}", flush=True)


def resumed_message(checkpoint: str, state, clock) -> str:
    """Where a resumed run continues: `state` is the trainer state loaded from `checkpoint`, `clock` the run's
    [`~tspin_trl.clock.IterationClock`] (its steps per epoch known)."""
    done, total = state.global_step, state.max_steps
    start = f"resuming from {checkpoint} (saved after step {done} of {total})"
    if done >= total:
        return f"{start}: the run had finished all its steps; nothing is left to train."
    iteration, of = clock.iteration_of_epoch(state.epoch), f"of {clock.num_iterations}, counted from 0"
    steps = f"steps {clock.start_step(iteration) + 1}-{clock.end_step(iteration)}"
    if clock.at_start(iteration, done):
        return f"{start}: iteration {iteration} ({of}) starts with step {done + 1} ({steps})."
    return f"{start}: iteration {iteration} ({of}) continues with step {done + 1} ({steps})."
