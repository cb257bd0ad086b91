"""Cases: a worker SIGKILLed at several points (generation, a training step, a checkpoint save, between an iteration
file and its sidecar, inside a rename, from outside), or stopped by a file-size limit; then the same run started again
and compared with an uninterrupted run."""

from __future__ import annotations

import os
import re
import time

from .harness import (
    CHECKPOINT_EVERY_STEP,
    CLEAR,
    DEFECT,
    WORKER_TIMEOUT,
    Verdict,
    baseline,
    case,
    classify_error,
    run_and_judge,
    temporaries,
)
from .workers import killed_then_resumed, start_worker


KILL = "SIGKILL and full disk"


@case(
    KILL,
    "SIGKILL after the first of two chunks of the proto generation (step 0); the same run started again",
    quick=True,
    timeout=150,
)
def kill_mid_proto_generation(ctx):
    return killed_then_resumed(ctx, {"kind": "kill_after_chunk_write", "n": 1}, None, baseline())


@case(KILL, "SIGKILL inside the first generate() call (nothing written yet); the same run started again", timeout=150)
def kill_in_first_generate(ctx):
    return killed_then_resumed(ctx, {"kind": "kill_in_generate", "n": 1}, None, baseline())


@case(KILL, "SIGKILL after iteration 1's first generation chunk (step 4), resume=True", timeout=150)
def kill_mid_iteration_generation(ctx):
    return killed_then_resumed(ctx, {"kind": "kill_after_chunk_write", "n": 3}, True, baseline())


@case(
    KILL, "SIGKILL in training step 6 after backward, before the optimizer step, resume=True", quick=True, timeout=150
)
def kill_mid_training_step(ctx):
    return killed_then_resumed(ctx, {"kind": "kill_in_step", "n": 6}, True, baseline())


@case(
    KILL,
    "SIGKILL during checkpoint-6's save (weights written, no optimizer/trainer_state), resume=True",
    quick=True,
    finding="5",
    timeout=150,
)
def kill_mid_checkpoint_save(ctx):
    return killed_then_resumed(ctx, {"kind": "kill_in_save", "n": 6}, True, baseline())


@case(KILL, "SIGKILL between iteration 1's responses file and its sidecar, resume=True", timeout=150)
def kill_mid_iteration_file_write(ctx):
    return killed_then_resumed(ctx, {"kind": "kill_in_iteration_write", "n": 1}, True, baseline())


def _killed_in_rename(ctx, pattern: str, resume, reference, where: str) -> Verdict:
    """A worker SIGKILLed just before the rename onto a path matching `pattern` (its temporary file written); the
    same run started again must give `reference` and leave no temporary file under `where`."""
    verdict = killed_then_resumed(ctx, {"kind": "kill_in_rename", "pattern": pattern}, resume, reference)
    root = ctx.tmp / where
    left = [str(p.relative_to(ctx.tmp)) for p in temporaries(root)]
    if verdict.outcome != DEFECT and left:
        return Verdict(DEFECT, f"temporary files of the killed writer left behind: {left}", verdict.detail)
    verdict.detail += "; no temporary file left"
    return verdict


@case(
    KILL,
    "SIGKILL inside the rename of iteration 1's responses file (its .tmp written), resume=True: no .tmp left",
    finding="20",
    timeout=150,
)
def kill_in_rename_iteration_file(ctx):
    target = os.path.relpath(ctx.folder.iteration_files(1, "train")[0], ctx.out)
    return _killed_in_rename(ctx, re.escape(target) + "$", True, baseline(), "out")


@case(
    KILL,
    "SIGKILL inside the rename of the proto cache entry (its .tmp written); the same run again: no .tmp left",
    finding="20",
    timeout=150,
)
def kill_in_rename_cache_entry(ctx):
    pattern = re.escape(str(ctx.cache)) + r"/[0-9a-f]+\.jsonl$"
    return _killed_in_rename(ctx, pattern, None, baseline(), "cache")


@case(KILL, "SIGKILL in training step 6 with objective='spin' and mix_previous_iteration, resume=True", timeout=150)
def kill_mid_step_spin_mixing(ctx):
    overrides = {"objective": "spin", "mix_previous_iteration": True}
    return killed_then_resumed(ctx, {"kind": "kill_in_step", "n": 6}, True, baseline(**overrides), **overrides)


@case(KILL, "SIGKILL from outside once checkpoint-3 exists (steps slowed to 0.3 s), resume=True", timeout=150)
def kill_from_outside(ctx):
    run = start_worker(ctx, fault={"kind": "slow_steps", "seconds": 0.3}, overrides=CHECKPOINT_EVERY_STEP)
    deadline = time.time() + WORKER_TIMEOUT
    while not (ctx.checkpoint(3) / "trainer_state.json").exists() and time.time() < deadline:
        if run.process.poll() is not None:
            return Verdict(DEFECT, f"the first run ended before the kill: {run.wait()}")
        time.sleep(0.05)
    run.process.kill()
    run.wait()
    return run_and_judge(ctx, baseline(), resume=True, note="killed from outside", **CHECKPOINT_EVERY_STEP)


@case(KILL, "file-size limit hit while saving checkpoint-6 (like a full disk), resume=True", finding="5", timeout=150)
def disk_full_during_save(ctx):
    return killed_then_resumed(ctx, {"kind": "fsize_in_save", "n": 6, "bytes": 50_000}, True, baseline())


@case(
    KILL,
    "file-size limit hit while writing iteration 1's chunks and responses (after checkpoint-4), resume=True",
    timeout=150,
)
def disk_full_during_generation(ctx):
    return killed_then_resumed(ctx, {"kind": "fsize_after_save", "n": 4, "bytes": 600}, True, baseline())


@case(
    KILL,
    "file-size limit hit while checkpoint-6's weights are written (safetensors: a full disk), resume=True",
    finding="32",
    timeout=150,
)
def disk_full_during_weights_save(ctx):
    run = start_worker(
        ctx, fault={"kind": "fsize_in_weights", "n": 6, "bytes": 50_000}, overrides=CHECKPOINT_EVERY_STEP
    )
    result = run.wait()
    if result.get("ok") or result.get("killed"):
        return Verdict(DEFECT, f"the fault was not triggered: {result}")
    first = classify_error(RuntimeError(result.get("error", "")), (str(ctx.checkpoint(6) / "model.safetensors"),))
    if first.outcome != CLEAR:
        return first
    recovered = run_and_judge(ctx, baseline(), resume=True, **CHECKPOINT_EVERY_STEP)
    if recovered.outcome == DEFECT:
        return Verdict(DEFECT, f"after the full disk: {recovered.message}", first.message[:200])
    first.detail = "then resumed with room: " + (recovered.detail or recovered.message)
    return first
