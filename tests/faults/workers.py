"""Runs in a subprocess with a fault injected (a SIGKILL at a hook, a file-size limit, a slowed step or generation, a
hold until a file appears), and a full disk (`/dev/full`) for a block of the campaign's own process.

`start_worker` runs `python -m tests.faults --worker <spec>`, whose `worker(spec)` trains the reference run with the
fault and writes the final parameters and a result record; `killed_then_resumed` starts the same run again in the
campaign's process and judges it against an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import (
    CHECKPOINT_EVERY_STEP,
    DEFECT,
    ROOT,
    WORKER_TIMEOUT,
    Ctx,
    Verdict,
    error_text,
    make_trainer,
    params_of,
    run_and_judge,
    sorting_rows,
)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _limit_file_size(size: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def _patch_generation(kind: str, fault: dict[str, Any], counter: dict[str, int]) -> None:
    from tspin_trl import generation

    original_write, original_generate = generation.ChunkStore.write, generation.HFGenerationBackend.generate
    n = fault.get("n", 1)

    def write(self, chunk, items):
        original_write(self, chunk, items)
        counter["chunks"] = counter.get("chunks", 0) + 1
        if kind == "kill_after_chunk_write" and counter["chunks"] == n:
            _kill_self()

    def generate(self, *args, **kwargs):
        counter["generate"] = counter.get("generate", 0) + 1
        if kind == "kill_in_generate" and counter["generate"] == n:
            _kill_self()
        if kind == "slow_generate":
            time.sleep(fault["seconds"])
        return original_generate(self, *args, **kwargs)

    generation.ChunkStore.write, generation.HFGenerationBackend.generate = write, generate


def _patch_renames(kind: str, fault: dict[str, Any]) -> None:
    """`kill_in_rename`: SIGKILL just before the rename onto a path matching the regular expression `fault["pattern"]`
    (its temporary file is written); `kill_in_move_aside`: SIGKILL after the `n`-th folder a fresh start moves to
    `replaced/`."""
    original = os.replace
    moved = {"count": 0}

    def replace(source, destination, *args, **kwargs):
        destination_text = os.fspath(destination)
        if kind == "kill_in_rename" and re.search(fault["pattern"], destination_text):
            _kill_self()
        result = original(source, destination, *args, **kwargs)
        if kind == "kill_in_move_aside" and f"{os.sep}replaced{os.sep}" in destination_text:
            moved["count"] += 1
            if moved["count"] == fault.get("n", 1):
                _kill_self()
        return result

    os.replace = replace


def patch_full_disk(kind: str, fault: dict[str, Any]) -> Callable[[], None]:
    """A full disk for the files whose path matches the regular expression `fault["pattern"]`: their writes go to
    `/dev/full` (a real `ENOSPC`) while the file itself is still created where it would be. `full_disk`: the
    temporary files of `atomic_write`; `full_disk_lock`: lock files (created with `os.open`). Returns the function
    that undoes the patch."""
    import tempfile

    original_mkstemp, original_open = tempfile.mkstemp, os.open

    def full(fd: int) -> int:
        os.close(fd)
        return original_open("/dev/full", os.O_WRONLY)

    def mkstemp(*args, **kwargs):
        fd, name = original_mkstemp(*args, **kwargs)
        return (full(fd) if re.search(fault["pattern"], name) else fd), name

    def open_(path, flags, *args, **kwargs):
        fd = original_open(path, flags, *args, **kwargs)
        return full(fd) if re.search(fault["pattern"], os.fspath(path)) else fd

    if kind == "full_disk":
        tempfile.mkstemp = mkstemp
    else:
        os.open = open_

    def undo() -> None:
        tempfile.mkstemp, os.open = original_mkstemp, original_open

    return undo


def worker(spec: dict[str, Any]) -> None:
    """Run one configuration with the fault `spec["fault"]`; write the final parameters and a result record."""
    import torch
    from transformers import TrainerCallback

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    os.environ["TSPIN_TRL_CACHE"] = spec["cache"]
    fault = spec.get("fault", {})
    kind, n = fault.get("kind"), fault.get("n", 1)
    counter: dict[str, int] = {}

    if kind in ("kill_after_chunk_write", "slow_generate", "kill_in_generate"):
        _patch_generation(kind, fault, counter)
    if kind in ("kill_in_rename", "kill_in_move_aside"):
        _patch_renames(kind, fault)
    if kind == "kill_in_iteration_write":
        from tspin_trl.checked_io import atomic_write
        from tspin_trl.self_play import iteration_files

        original = iteration_files.write_checked_jsonl

        def write_checked(data_path, meta_path, rows, meta):
            if meta.get("iteration") == n:
                atomic_write(data_path, "".join(json.dumps(row) + "\n" for row in rows))
                _kill_self()  # the data file is written, its sidecar is not
            original(data_path, meta_path, rows, meta)

        iteration_files.write_checked_jsonl = write_checked

    class Faults(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if kind == "slow_steps":
                time.sleep(fault["seconds"])
            if kind == "hold_until" and state.global_step == 1:
                deadline = time.time() + WORKER_TIMEOUT
                while not os.path.exists(fault["path"]) and time.time() < deadline:
                    time.sleep(0.05)

        def on_save(self, args, state, control, **kwargs):
            if kind == "fsize_after_save" and state.global_step == n:
                _limit_file_size(fault["bytes"])

    rows = sorting_rows(spec.get("rows", 8), offset=spec.get("offset", 0))
    trainer = make_trainer(spec["out"], rows=rows, callbacks=[Faults()], **spec.get("overrides", {}))
    if kind == "kill_in_step":
        original_step = trainer.training_step

        def training_step(*args, **kwargs):
            loss = original_step(*args, **kwargs)  # forward and backward done, optimizer step not yet
            if trainer.state.global_step + 1 == n:
                _kill_self()
            return loss

        trainer.training_step = training_step
    if kind in ("kill_in_save", "fsize_in_save"):
        original_save = trainer._save_optimizer_and_scheduler

        def save_optimizer(output_dir):
            if trainer.state.global_step == n:
                if kind == "kill_in_save":
                    _kill_self()  # the weights are written, the optimizer and trainer_state.json are not
                _limit_file_size(fault["bytes"])
            return original_save(output_dir)

        trainer._save_optimizer_and_scheduler = save_optimizer
    if kind == "fsize_in_weights":
        original_model_save = trainer._save

        def save_model(output_dir=None, state_dict=None):
            if trainer.state.global_step == n:
                _limit_file_size(fault["bytes"])  # the weights (safetensors) are the first large file written
            return original_model_save(output_dir, state_dict)

        trainer._save = save_model
    result: dict[str, Any] = {"pid": os.getpid()}
    try:
        trainer.train(resume_from_checkpoint=spec.get("resume"))
        result.update(ok=True, generate_calls=trainer.self_play.generate_calls)
        result["passes"] = sorted(trainer.self_play.generation_stats)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        torch.save(params_of(trainer), spec["params"])
    except Exception as error:  # noqa: BLE001
        result.update(ok=False, error=error_text(error), traceback=traceback.format_exc()[-2000:])
    with open(spec["result"], "w") as f:
        json.dump(result, f)


@dataclass
class WorkerRun:
    process: subprocess.Popen
    spec: dict[str, Any]
    log: Path

    def wait(self, timeout: float = WORKER_TIMEOUT) -> dict[str, Any]:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return {"ok": False, "hang": True, "error": f"no exit within {timeout} s"}
        if self.process.returncode == -signal.SIGKILL:
            return {"ok": False, "killed": True}
        try:
            with open(self.spec["result"]) as f:
                return json.load(f)
        except (OSError, ValueError):
            tail = self.log.read_text()[-1500:] if self.log.exists() else ""
            return {"ok": False, "error": f"exit {self.process.returncode}, no result: {tail}"}

    def params(self):
        import torch

        return torch.load(self.spec["params"], weights_only=True)


def start_worker(
    ctx: Ctx, name: str = "w", out: Path | None = None, unprivileged: bool = False, **spec: Any
) -> WorkerRun:
    """Start `worker(spec)` in a subprocess; `unprivileged`: without the capability to bypass file permissions, so
    that a `chmod 555` folder is read-only even for root."""
    spec = {
        "out": str(out or ctx.out),
        "cache": str(ctx.cache),
        "params": str(ctx.tmp / f"{name}.params.pt"),
        "result": str(ctx.tmp / f"{name}.result.json"),
    } | spec
    log = ctx.tmp / f"{name}.log"
    env = os.environ | {"TSPIN_TRL_CACHE": spec["cache"]}
    command = [sys.executable, "-m", "tests.faults", "--worker", json.dumps(spec)]
    if unprivileged and os.getuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    with open(log, "w") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
    return WorkerRun(process, spec, log)


def killed_then_resumed(ctx: Ctx, fault: dict, resume: Any, reference: dict, **overrides: Any) -> Verdict:
    """A worker killed by `fault`, then the same run started again in this process (resumed when `resume`)."""
    run = start_worker(ctx, fault=fault, overrides=CHECKPOINT_EVERY_STEP | overrides)
    result = run.wait()
    if not result.get("killed") and result.get("ok", False):
        return Verdict(DEFECT, f"the fault was not triggered: {result}")
    note = "first run: " + ("SIGKILL" if result.get("killed") else result.get("error", "?")[:200])
    return run_and_judge(ctx, reference, resume=resume, note=note, **(CHECKPOINT_EVERY_STEP | overrides))
