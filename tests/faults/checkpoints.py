"""Cases: checkpoints (half-written, damaged, foreign) and what `resume_from_checkpoint` is given."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from tspin_trl.checkpoints import checkpoint_dir

from .harness import (
    CHECKPOINT_EVERY_STEP,
    DEFECT,
    Ctx,
    StopAfter,
    Verdict,
    add,
    baseline,
    error_text,
    expect_error,
    judge_run,
    make_trainer,
    params_of,
    run_and_judge,
    sorting_rows,
)


CKPT = "checkpoints and resume_from_checkpoint"


def resume_case(prepare: Callable[[Ctx], Any], *keywords: str, expect_ok: bool = False) -> Callable[[Ctx], Verdict]:
    """Interrupted at step 6, `prepare(ctx)` returns what `resume_from_checkpoint` is given: the resume must give the
    uninterrupted run's model (`expect_ok`) or stop with `keywords` in its message."""

    def run(ctx):
        ctx.use("interrupted")
        target = prepare(ctx)
        if expect_ok:
            return run_and_judge(ctx, baseline(), resume=target, **CHECKPOINT_EVERY_STEP)
        return expect_error(
            lambda: make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP).train(resume_from_checkpoint=target), *keywords
        )

    return run


def _half_written(ctx):
    ctx.checkpoint(99).mkdir()
    return True


def _no_weights(ctx):
    shutil.copytree(ctx.checkpoint(6), ctx.checkpoint(50))
    (ctx.checkpoint(50) / "model.safetensors").unlink()
    return True


def _state_garbage(ctx):
    shutil.copytree(ctx.checkpoint(6), ctx.checkpoint(7))
    (ctx.checkpoint(7) / "trainer_state.json").write_text("{garbage")
    return True


def _truncated_weights(ctx):
    path = ctx.checkpoint(6) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    return True


def _garbage_optimizer(ctx):
    (ctx.checkpoint(6) / "optimizer.pt").write_bytes(os.urandom(1000))
    return True


def _other_run_checkpoint(ctx):
    other = make_trainer(
        ctx.tmp / "other", rows=sorting_rows(8, offset=3), callbacks=[StopAfter(6)], **CHECKPOINT_EVERY_STEP
    )
    other.train()
    shutil.rmtree(ctx.out)
    ctx.out.mkdir()
    return checkpoint_dir(other.args.output_dir, 6)


add(
    "ckpt_half_written_dir",
    CKPT,
    "an empty checkpoint-99 (a save killed at its start), resume=True",
    resume_case(_half_written, expect_ok=True),
    quick=True,
    finding="5",
)
add(
    "ckpt_no_weights",
    CKPT,
    "checkpoint-50 without model.safetensors (disk full during the save), resume=True",
    resume_case(_no_weights, expect_ok=True),
    finding="5",
)
add(
    "ckpt_state_garbage",
    CKPT,
    "checkpoint-7 whose trainer_state.json is garbage, resume=True",
    resume_case(_state_garbage, expect_ok=True),
    finding="5",
)
add(
    "ckpt_non_numeric",
    CKPT,
    "a folder checkpoint-final next to the real ones, resume=True",
    resume_case(lambda c: (c.out / "checkpoint-final").mkdir() or True, expect_ok=True),
)
add(
    "ckpt_truncated_weights",
    CKPT,
    "the last checkpoint's model.safetensors truncated to 1000 bytes, resume=True",
    resume_case(_truncated_weights, "checkpoint-6"),
)
add(
    "ckpt_garbage_optimizer",
    CKPT,
    "the last checkpoint's optimizer.pt replaced by garbage, resume=True",
    resume_case(_garbage_optimizer, "checkpoint-6"),
)
add(
    "ckpt_path_missing",
    CKPT,
    "resume_from_checkpoint='/nonexistent/checkpoint-3'",
    resume_case(lambda c: "/nonexistent/checkpoint-3", "/nonexistent/checkpoint-3"),
    quick=True,
)
add(
    "ckpt_path_is_file",
    CKPT,
    "resume_from_checkpoint points at a file (the run's run.json)",
    resume_case(lambda c: c.folder.identity_path, "run.json"),
)
add(
    "ckpt_path_empty_dir",
    CKPT,
    "resume_from_checkpoint points at an empty folder",
    resume_case(lambda c: (c.tmp / "empty").mkdir() or str(c.tmp / "empty"), "empty"),
)
add("ckpt_yes_string", CKPT, "resume_from_checkpoint='yes'", resume_case(lambda c: "yes", "yes"))
add(
    "ckpt_none_found",
    CKPT,
    "resume_from_checkpoint=True in an empty output_dir",
    resume_case(lambda c: shutil.rmtree(c.out) or True, "No complete checkpoint"),
)
add(
    "ckpt_other_runs_checkpoint",
    CKPT,
    "resume_from_checkpoint = another run's checkpoint-6, empty output_dir",
    resume_case(_other_run_checkpoint, "iteration 1"),
)
add(
    "ckpt_resume_at_start_of_iteration",
    CKPT,
    "resume_from_checkpoint=checkpoint-4 (before the last 2 steps)",
    resume_case(lambda c: str(c.checkpoint(4)), expect_ok=True),
)


# ---- issue 32: Mixture-of-Experts checkpoints, a layout that does not round-trip, a file where a checkpoint goes ------


def _moe_rows() -> list[dict]:
    """Sorting rows with prompts of several lengths: a generation batch then has left padding."""
    rows = sorting_rows(8)
    for i, row in enumerate(rows[::2]):
        row["prompt"] = [{"role": "user", "content": row["prompt"][0]["content"] + " 5" * (i + 1)}]
    return rows


def _mixtral(**config):
    from tests.support import tiny_moe
    from tspin_trl.demo import build_char_tokenizer

    return tiny_moe(build_char_tokenizer(), "mixtral", **config)


def _moe_resume(ctx):
    uninterrupted = make_trainer(ctx.tmp / "uninterrupted", rows=_moe_rows(), model=_mixtral())
    uninterrupted.train()
    make_trainer(
        ctx.out, rows=_moe_rows(), model=_mixtral(), callbacks=[StopAfter(6)], **CHECKPOINT_EVERY_STEP
    ).train()
    resumed = make_trainer(ctx.out, rows=_moe_rows(), model=_mixtral(), **CHECKPOINT_EVERY_STEP)
    resumed.train(resume_from_checkpoint=True)
    return judge_run(ctx, resumed, params_of(uninterrupted), note="Mixtral, interrupted after step 6")


add(
    "moe_resume",
    CKPT,
    "a Mixtral (experts saved one by one, held fused) interrupted after step 6, resume_from_checkpoint=True",
    _moe_resume,
    quick=True,
    finding="32",
    timeout=240,
)


def _moe_router_logits(ctx):
    trainer = make_trainer(ctx.out, rows=_moe_rows(), model=_mixtral(output_router_logits=True))
    try:
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return Verdict(DEFECT, f"crashed: {error_text(error)}")
    return judge_run(ctx, trainer, None, note="Mixtral with output_router_logits=True in its config")


add(
    "moe_router_logits_in_config",
    CKPT,
    "a Mixtral whose config sets output_router_logits=True (its router loss), prompts of several lengths",
    _moe_router_logits,
    finding="32",
    timeout=180,
)


def _layout_not_round_trip(ctx):
    from tspin_trl.demo import build_char_tokenizer, build_tiny_model

    model = build_tiny_model(build_char_tokenizer())
    model._keys_to_ignore_on_save = {"model.norm.weight"}  # its saves leave a trained tensor out
    trainer = make_trainer(ctx.out, model=model, **CHECKPOINT_EVERY_STEP)
    verdict = expect_error(trainer.train, "checkpoint save and load", "model.norm.weight")
    if trainer.state.global_step > 0 and verdict.outcome != DEFECT:
        return Verdict(DEFECT, f"noticed only at step {trainer.state.global_step}: {verdict.message}")
    if verdict.message.startswith("accepted silently"):
        verdict.message = "trained; a resume would keep model.norm.weight at its current value (not in any checkpoint)"
    return verdict


add(
    "ckpt_layout_not_round_trip",
    CKPT,
    "a model whose saves leave a trained tensor out (model.norm.weight in _keys_to_ignore_on_save), checkpoints on",
    _layout_not_round_trip,
    finding="32",
)


def _checkpoint_name_is_a_file(ctx):
    ctx.out.mkdir(parents=True)
    (ctx.out / "checkpoint-2").write_text("a file where the checkpoint of step 2 goes")
    trainer = make_trainer(ctx.out, save_strategy="steps", save_steps=2)
    verdict = expect_error(trainer.train, "checkpoint-2", "file")
    if trainer.state.global_step > 0 and verdict.outcome != DEFECT:
        return Verdict(DEFECT, f"failed only at step {trainer.state.global_step}: {verdict.message}")
    return verdict


add(
    "ckpt_name_is_a_file",
    CKPT,
    "a file named checkpoint-2 in output_dir (saves every 2 steps)",
    _checkpoint_name_is_a_file,
    finding="32",
)
