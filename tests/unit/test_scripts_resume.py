"""`tspin_trl/scripts/resume.py`: what `--resume_from_checkpoint` means, the command an interrupted run prints, and the
line a resumed run prints about where it continues."""

import json
import os
import shlex
import sys

import pytest
from transformers import TrainerState

from tspin_trl.clock import IterationClock
from tspin_trl.scripts.errors import InputNotFoundError
from tspin_trl.scripts.resume import (
    given_resume,
    interrupted_note,
    launcher,
    program,
    resume_target,
    resumed_message,
    with_resume,
    without_resume,
)


def checkpoint(output_dir, step: int, max_steps: int = 16, complete: bool = True) -> str:
    """A `checkpoint-<step>` folder as transformers leaves it: `trainer_state.json` and weights (or, incomplete, the
    weights of a save killed before its state)."""
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    return str(folder)


def test_last_and_true_mean_the_last_complete_checkpoint_and_need_one(tmp_path):
    out = tmp_path / "out"
    for value in ("last", "true", "True", "LAST", " last ", True):
        with pytest.raises(InputNotFoundError, match="found no complete checkpoint in output_dir") as error:
            resume_target(value, str(out))
        assert "without --resume_from_checkpoint to start from the beginning" in str(error.value)
    checkpoint(out, 3)
    checkpoint(out, 6, complete=False)  # a save killed midway does not count
    for value in ("last", "true", "True", True):
        assert resume_target(value, str(out)) is True  # the trainer takes the last one complete on every node


def test_false_and_none_mean_no_resume(tmp_path):
    for value in ("false", "none", "None", "FALSE", "", False, None):
        assert resume_target(value, str(tmp_path)) is None


def test_a_folder_must_exist_and_the_error_names_the_last_checkpoint(tmp_path):
    out = tmp_path / "out"
    folder = checkpoint(out, 3)
    assert resume_target(folder, str(out)) == folder
    with pytest.raises(InputNotFoundError) as error:
        resume_target(str(out / "checkpoint-4"), str(out))
    message = str(error.value)
    assert message.startswith(f"The checkpoint folder '{out}/checkpoint-4' given to --resume_from_checkpoint does not")
    assert f"({folder} in output_dir)" in message and "`last` (or `true`)" in message
    with pytest.raises(InputNotFoundError, match=r"output_dir '.*empty' has none"):
        resume_target("nope", str(tmp_path / "empty"))


def test_a_folder_named_like_a_keyword_is_given_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("last")
    assert resume_target("./last", "out") == "./last"
    with pytest.raises(InputNotFoundError, match="no complete checkpoint"):
        resume_target("last", "out")


def test_the_resume_flag_is_replaced_in_every_spelling():
    argv = ["--task", "sorting", "--resume_from_checkpoint", "out/checkpoint-3", "--output_dir", "out"]
    assert with_resume(argv) == ["--task", "sorting", "--output_dir", "out", "--resume_from_checkpoint", "last"]
    assert without_resume(["--resume-from-checkpoint", "x", "--a", "1", "--resume_from_checkpoint=y"]) == ["--a", "1"]
    assert given_resume(argv) == "out/checkpoint-3"
    assert given_resume(["--resume_from_checkpoint=a", "--resume-from-checkpoint", "b"]) == "b"
    assert given_resume(["--task", "sorting"]) is None


ARGV = ["--model_name_or_path", "preset:tiny", "--task", "sorting", "--output_dir", "my out", "--debug"]


def test_an_interrupted_run_names_its_checkpoint_and_the_command_that_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "my out"
    checkpoint(out, 3)
    checkpoint(out, 6, max_steps=16)
    checkpoint(out, 9, complete=False)
    note = interrupted_note(["tspin-trl", "train"], ARGV, "my out")
    text, line = note.split("\n")
    assert (
        text
        == f"The last complete checkpoint is my out/checkpoint-6 (step 6 of 16). To resume from it, run (in {tmp_path}):"
    )
    assert (
        line
        == "  tspin-trl train --model_name_or_path preset:tiny --task sorting --output_dir 'my out' --debug "
        + ("--resume_from_checkpoint last")
    )
    assert shlex.split(line)[-2:] == ["--resume_from_checkpoint", "last"]  # a shell reads it back as the same argv


def test_an_interrupted_run_without_a_checkpoint_says_it_starts_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    note = interrupted_note(["tspin-trl", "train"], [*ARGV, "--resume_from_checkpoint", "last"], "my out")
    text, line = note.split("\n")
    assert text.startswith("No checkpoint was saved yet (none in my out): the run starts again from the beginning.")
    assert "--resume_from_checkpoint" not in line  # `last` would find none
    folder = checkpoint(tmp_path / "elsewhere", 4)
    note = interrupted_note(["tspin-trl", "train"], [*ARGV, "--resume_from_checkpoint", folder], "my out")
    assert note.startswith(f"No checkpoint was saved in my out this time. To resume from {folder} again, run")
    assert note.endswith(f"--resume_from_checkpoint {folder}")


def test_under_a_launcher_the_note_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint(tmp_path / "my out", 3)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert launcher() == "accelerate launch"
    text, line = interrupted_note([sys.executable, "-m", "tspin_trl", "train"], ARGV, "my out").split("\n")
    assert text.endswith(
        f"run your `accelerate launch` command with the same launch options and these arguments (in {tmp_path}):"
    )
    assert line.startswith("  accelerate launch [the same options] -m tspin_trl train --model_name_or_path")
    assert line.endswith("--resume_from_checkpoint last")
    assert launcher({"WORLD_SIZE": "2"}) == "your launcher" and launcher({"WORLD_SIZE": "1"}) is None


def test_the_program_is_named_as_it_was_started(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", [os.path.join("x", "tspin_trl", "__main__.py"), "train"])
    started = program()
    assert started[-2:] == ["-m", "tspin_trl"] and started[0] in ("python", "python3", sys.executable)
    script = tmp_path / "bin" / "tspin-trl"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "train"])
    monkeypatch.setenv("PATH", str(script.parent))
    assert program() == ["tspin-trl"]  # the one on PATH
    monkeypatch.setenv("PATH", str(tmp_path))
    assert program() == [str(script)]  # another one: its path


def _state(global_step: int, max_steps: int, epoch: float) -> TrainerState:
    state = TrainerState()
    state.global_step, state.max_steps, state.epoch = global_step, max_steps, epoch
    return state


def test_a_resumed_run_says_where_it_continues():
    clock = IterationClock(num_iterations=2, epochs_per_iteration=1)
    clock.set_steps_per_epoch(8)
    middle = resumed_message("out/checkpoint-3", _state(3, 16, 0.375), clock)
    assert middle == (
        "resuming from out/checkpoint-3 (saved after step 3 of 16): iteration 0 (of 2, counted from 0) continues with step 4 "
        "(steps 1-8)."
    )
    boundary = resumed_message("out/checkpoint-8", _state(8, 16, 1.0), clock)
    assert boundary == (
        "resuming from out/checkpoint-8 (saved after step 8 of 16): iteration 1 (of 2, counted from 0) starts with step 9 "
        "(steps 9-16)."
    )
    done = resumed_message("out/checkpoint-16", _state(16, 16, 2.0), clock)
    assert done.endswith("the run had finished all its steps; nothing is left to train.")
    two_epochs = IterationClock(num_iterations=2, epochs_per_iteration=2)
    two_epochs.set_steps_per_epoch(4)
    assert "iteration 0 (of 2, counted from 0) continues with step 5 (steps 1-8)" in resumed_message(
        "c", _state(4, 16, 1.0), two_epochs
    )
