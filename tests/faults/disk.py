"""Cases: the disk under a run: full (`/dev/full`: a real `ENOSPC`), read-only folders, temporary files a killed writer
left, and the modes files are created with (the user's umask)."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from transformers import TrainerCallback

from .harness import (
    CHECKPOINT_EVERY_STEP,
    CLEAR,
    DEFECT,
    SURVIVED,
    TEMPLATES,
    Ctx,
    Verdict,
    baseline,
    case,
    classify_error,
    error_text,
    judge_run,
    make_trainer,
    run_and_judge,
    template,
    temporaries,
)
from .workers import patch_full_disk, start_worker


DISK = "disk: full, read-only, temporaries, file modes"


# ---- a full disk: the error names the file, and the run resumes once there is room -----------------------------------


def _full_disk_then_resumed(ctx: Ctx, fault: dict, named: str, resume) -> Verdict:
    """A run whose writes matching `fault` hit `/dev/full`: its error must name the file (`named`, and "No space
    left"); the same run started again once there is room must give the uninterrupted run's model and leave no
    temporary file."""
    reference = baseline()  # before the disk fills
    undo = patch_full_disk(fault["kind"], fault)
    try:
        make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP).train()
    except Exception as error:  # noqa: BLE001
        verdict = classify_error(error, ("No space left", named))
    else:
        return Verdict(DEFECT, f"the full disk went unnoticed: {fault}")
    finally:
        undo()
    if verdict.outcome != CLEAR:
        return verdict
    recovered = run_and_judge(ctx, reference, resume=resume, **CHECKPOINT_EVERY_STEP)
    if recovered.outcome == DEFECT:
        return Verdict(DEFECT, f"after the full disk: {recovered.message}", verdict.message[:200])
    left = [str(p.relative_to(ctx.tmp)) for p in temporaries(ctx.tmp)]
    if left:
        return Verdict(DEFECT, f"temporary files left after the full disk: {left}")
    verdict.detail = "then resumed with room: " + (recovered.detail or recovered.message)
    return verdict


@case(
    DISK,
    "disk full (/dev/full) while iteration 1's responses are written (after checkpoint-4); resume=True",
    quick=True,
    finding="20",
)
def full_disk_iteration_file(ctx):
    fault = {"kind": "full_disk", "pattern": re.escape(ctx.folder.iteration_dir(1) + os.sep)}
    return _full_disk_then_resumed(ctx, fault, ctx.folder.iteration_dir(1), True)


@case(DISK, "disk full (/dev/full) while the proto cache entry is written; the same run again", finding="20")
def full_disk_proto_cache(ctx):
    fault = {"kind": "full_disk", "pattern": re.escape(str(ctx.cache))}
    return _full_disk_then_resumed(ctx, fault, str(ctx.cache), None)


@case(DISK, "disk full (/dev/full) while the proto cache's lock file is written; the same run again", finding="20")
def full_disk_cache_lock(ctx):
    fault = {"kind": "full_disk_lock", "pattern": re.escape(str(ctx.cache)) + r"/.*\.lock$"}
    return _full_disk_then_resumed(ctx, fault, ".lock", None)


@case(DISK, "disk full (/dev/full) while run.json is written at the first start; the same run again", finding="20")
def full_disk_run_json(ctx):
    fault = {"kind": "full_disk", "pattern": re.escape(ctx.folder.identity_path + ".")}
    return _full_disk_then_resumed(ctx, fault, ctx.folder.identity_path, None)


@case(DISK, "self_play/logs.jsonl is a link to /dev/full (every log line fails to be written)", finding="20")
def full_disk_logs(ctx):
    logs = Path(ctx.folder.logs_path)
    logs.parent.mkdir(parents=True)
    logs.symlink_to("/dev/full")
    try:
        trainer = make_trainer(ctx.out)
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("No space left", "logs.jsonl"))
    return judge_run(ctx, trainer, baseline(), note="the log lines were lost without an error")


# ---- read-only folders ------------------------------------------------------------------------------------------------


def _read_only(ctx: Ctx, readonly: str) -> Verdict:
    ctx.out.mkdir()
    ctx.cache.mkdir()
    getattr(ctx, readonly).chmod(0o555)
    run = start_worker(ctx, unprivileged=True)
    result = run.wait()
    getattr(ctx, readonly).chmod(0o755)
    if result.get("ok"):
        return Verdict(DEFECT, "trained although the folder is read-only?")
    return classify_error(RuntimeError(result.get("error", "")), (str(getattr(ctx, readonly)),))


@case(DISK, "output_dir read-only (chmod 555, no capability to bypass it)", timeout=150)
def readonly_output_dir(ctx):
    return _read_only(ctx, readonly="out")


@case(DISK, "proto cache folder read-only (chmod 555, no capability to bypass it)", timeout=150)
def readonly_cache(ctx):
    return _read_only(ctx, readonly="cache")


# ---- temporary files a killed writer left ------------------------------------------------------------------------------


@case(
    DISK,
    "temporaries of a killed writer in self_play/ (iteration_0/train.jsonl.k1ll3d.tmp, run.json.x.tmp) and a user's "
    "results.v1.tmp in output_dir; the identical run started fresh",
    finding="20",
)
def stale_temporaries_in_run_folder(ctx):
    ctx.use("completed")
    ours = [Path(f"{ctx.iteration_file(0)}.k1ll3d.tmp"), Path(f"{ctx.folder.identity_path}.x9y8.tmp")]
    for path in ours:
        path.write_text("half")
    user = ctx.out / "results.v1.tmp"
    user.write_text("the user's own file")
    verdict = run_and_judge(ctx, baseline())
    left = [str(p.relative_to(ctx.out)) for p in ours if p.exists()]
    if not user.exists():
        return Verdict(DEFECT, "a file of the user outside self_play/ was deleted as a temporary")
    if verdict.outcome != DEFECT and left:
        return Verdict(DEFECT, f"temporaries left: {left}")
    verdict.detail += "; the killed writer's temporaries removed, the user's file kept"
    return verdict


@case(
    DISK,
    "a proto cache with this entry's temporary (a killed writer) and another entry's (a live writer); a new run",
    finding="20",
)
def stale_temporaries_in_cache(ctx):
    shutil.copytree(template("cached", TEMPLATES["cached"]) / "cache", ctx.cache)
    entry = next(ctx.cache.glob("*.jsonl"))
    key = entry.stem
    entry.unlink()
    entry.with_suffix(".json").unlink()
    dead = ctx.cache / f"{key}.jsonl.d3ad.tmp"
    live = ctx.cache / f"{'f' * len(key)}.jsonl.l1ve.tmp"
    dead.write_text("half")
    live.write_text("being written by another run")
    verdict = run_and_judge(ctx, baseline(num_iterations=1), num_iterations=1)
    if not live.exists():
        return Verdict(DEFECT, "another entry's temporary (a live writer's) was deleted")
    if verdict.outcome != DEFECT and dead.exists():
        return Verdict(DEFECT, f"the killed writer's temporary {dead.name} was left")
    verdict.detail += "; this entry's temporary removed, the other entry's kept"
    return verdict


# ---- file modes follow the umask ------------------------------------------------------------------------------------


def umask_case(umask: int):
    """A run under `umask` (a checkpoint included): every file of `self_play/` and of the proto cache must have the
    mode a plain `open(path, "w")` gives (`0o666 & ~umask`); the modes of the checkpoint's files, which transformers
    and safetensors write, are reported alongside."""

    def run(ctx):
        previous = os.umask(umask)
        try:
            make_trainer(ctx.out, num_iterations=1, save_strategy="steps", save_steps=4).train()
        except Exception as error:  # noqa: BLE001
            return Verdict(DEFECT, f"the run failed: {error_text(error)}"[:300])
        finally:
            os.umask(previous)
        expected = 0o666 & ~umask

        def modes(root: Path) -> dict[str, str]:
            return {
                str(p.relative_to(ctx.tmp)): oct(stat.S_IMODE(p.lstat().st_mode))
                for p in sorted(root.rglob("*"))
                if p.is_file()
            }

        ours = modes(Path(ctx.folder.root)) | modes(ctx.cache)
        checkpoint = {name: mode for name, mode in modes(ctx.checkpoint(4)).items() if mode != oct(expected)}
        note = f"checkpoint files of another mode (written by transformers/safetensors): {checkpoint or 'none'}"
        wrong = {name: mode for name, mode in ours.items() if mode != oct(expected)}
        if wrong:
            return Verdict(
                DEFECT, f"files not created with mode {oct(expected)} under umask {umask:03o}: {wrong}", note
            )
        return Verdict(
            SURVIVED, f"every file of self_play/ and the proto cache ({len(ours)}) is {oct(expected)}", note
        )

    return run


for _umask in (0o022, 0o027, 0o077):
    from .harness import add as _add

    _add(
        f"umask_{_umask:03o}",
        DISK,
        f"a run under umask {_umask:03o}: the modes of every file in output_dir and the proto cache",
        umask_case(_umask),
        quick=_umask == 0o027,
        finding="20",
        timeout=150,
    )


# ---- issue 32: a full disk while a checkpoint is written (torch's and Python's writers name no file) -------------------


class _FullDiskAt(TrainerCallback):
    """Puts `/dev/full` behind the file `name` of checkpoint-`step`, just before it is saved."""

    def __init__(self, step: int, name: str):
        self.step, self.name = step, name

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            folder = Path(args.output_dir) / f"checkpoint-{self.step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / self.name).symlink_to("/dev/full")


def _full_disk_in_checkpoint(ctx: Ctx, name: str) -> Verdict:
    reference = baseline()
    target = ctx.checkpoint(6) / name
    try:
        make_trainer(ctx.out, callbacks=[_FullDiskAt(6, name)], **CHECKPOINT_EVERY_STEP).train()
    except Exception as error:  # noqa: BLE001
        verdict = classify_error(error, (str(target),))
    else:
        return Verdict(DEFECT, f"the full disk behind {target} went unnoticed")
    target.unlink()  # room again
    if verdict.outcome != CLEAR:
        return verdict
    recovered = run_and_judge(ctx, reference, resume=True, **CHECKPOINT_EVERY_STEP)
    if recovered.outcome == DEFECT:
        return Verdict(DEFECT, f"after the full disk: {recovered.message}", verdict.message[:200])
    verdict.detail = "then resumed with room: " + (recovered.detail or recovered.message)
    return verdict


@case(DISK, "disk full (/dev/full) while checkpoint-6's optimizer.pt is written (torch); resume=True", finding="32")
def full_disk_checkpoint_optimizer(ctx):
    return _full_disk_in_checkpoint(ctx, "optimizer.pt")


@case(
    DISK,
    "disk full (/dev/full) while checkpoint-6's trainer_state.json is written (Python); resume=True",
    quick=True,
    finding="32",
)
def full_disk_checkpoint_state(ctx):
    return _full_disk_in_checkpoint(ctx, "trainer_state.json")
