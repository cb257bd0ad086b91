"""Cases: what a run is (its identity) against what its folder holds: stale files of an earlier run, a resume with a
changed setting, the dataset's own responses changed, and a fresh start in a used `output_dir` (what it moves aside,
and what a later resume then finds)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tspin_trl import TSPINTrainer
from tspin_trl.checkpoints import checkpoint_steps
from tspin_trl.demo import build_char_tokenizer, build_tiny_model

from .harness import (
    CHECKPOINT_EVERY_STEP,
    DEFECT,
    TEMPLATES,
    Ctx,
    StopAfter,
    Verdict,
    add,
    baseline,
    case,
    classify_error,
    completed,
    expect_error,
    interrupted,
    judge_run,
    make_trainer,
    run_and_judge,
    sorting_rows,
)
from .workers import start_worker


STALE = "stale files and changed settings"
RESUME = "resume with a changed setting"
OWN = "the dataset's own responses"
FRESH = "a fresh start in a used output_dir"


def with_own(role: str, text: str, change_row: int | None = None, as_message: bool = True) -> list[dict]:
    """The sorting rows with their own `role` column (`synthetic` or `proto`) holding `text` (in row `change_row`
    only `text`, the others `"0 0"`, when given)."""
    rows = []
    for i, row in enumerate(sorting_rows(8)):
        value = text if change_row is None or i == change_row else "0 0"
        rows.append(row | {role: [{"role": "assistant", "content": value}] if as_message else value})
    return rows


TEMPLATES.update(
    {
        "completed_own": lambda folder: completed(folder, rows=with_own("synthetic", "1 2")),
        "completed_own_proto": lambda folder: completed(folder, rows=with_own("proto", "1 2")),
        "interrupted_own": lambda folder: interrupted(folder, rows=with_own("synthetic", "1 2")),
    }
)


# ---- stale files ------------------------------------------------------------------------------------------------------


@case(STALE, "fresh run in the output_dir of a finished run, other data of the same size", quick=True, finding="1")
def stale_other_data_same_size(ctx):
    ctx.use("completed")
    rows = sorting_rows(8, offset=3)
    return expect_error(lambda: make_trainer(ctx.out, rows=rows).train(), "another run", "data", "output_dir")


@case(STALE, "fresh run in the output_dir of a finished run, temperature 1.0 -> 0.5", finding="1")
def stale_other_temperature(ctx):
    ctx.use("completed")
    return expect_error(lambda: make_trainer(ctx.out, temperature=0.5).train(), "another run", "temperature")


@case(STALE, "fresh run in the output_dir of a finished run, other data of another size", finding="1")
def stale_other_size(ctx):
    ctx.use("completed")
    return expect_error(lambda: make_trainer(ctx.out, rows=sorting_rows(10)).train(), "another run", "data")


@case(STALE, "fresh identical run in the output_dir of a finished run (result vs a clean folder)", finding="1")
def stale_identical_rerun(ctx):
    ctx.use("completed")
    return run_and_judge(ctx, baseline())


@case(STALE, "fresh identical run after run.json was deleted (the iteration files stay)", finding="1")
def stale_identity_deleted(ctx):
    ctx.use("completed")
    Path(ctx.folder.identity_path).unlink()
    return run_and_judge(ctx, baseline())


@case(STALE, "fresh identical run after run.json was overwritten with garbage", finding="1")
def stale_identity_garbage(ctx):
    ctx.use("completed")
    Path(ctx.folder.identity_path).write_text("{not json")
    return run_and_judge(ctx, baseline())


@case(STALE, "fresh run, other data, after run.json was replaced by a JSON list", finding="1")
def stale_identity_list_other_data(ctx):
    ctx.use("completed")
    Path(ctx.folder.identity_path).write_text("[1, 2]")
    rows = sorting_rows(8, offset=3)
    return run_and_judge(ctx, baseline(rows=sorting_rows(8, offset=3)), rows=rows)


@case(STALE, "fresh run whose run.json was copied from another run (forged identity)", finding="1")
def stale_identity_forged(ctx):
    ctx.use("completed")
    other = make_trainer(ctx.tmp / "other", rows=sorting_rows(8, offset=3), num_iterations=1)
    other.train()
    shutil.copy(other.run_folder.identity_path, ctx.folder.identity_path)
    return expect_error(lambda: make_trainer(ctx.out).train(), "another run")


# ---- a resume with a changed setting: one per identity field, and settings that must not matter -----------------------

RESUME_CHANGES: list[tuple[str, dict[str, Any], str, str]] = [
    ("objective", {"objective": "tspin_ref"}, "objective", "1"),
    ("alpha", {"alpha": 0.5}, "alpha", "1"),
    ("beta", {"beta": 0.2}, "beta", "1"),
    ("beta_first_iteration", {"beta_first_iteration": 0.1}, "beta_first_iteration", "1"),
    ("loss_type", {"loss_type": "exponential"}, "loss_type", "1"),
    ("real_nll_weight", {"real_nll_weight": 0.1}, "real_nll_weight", "1"),
    ("num_iterations", {"num_iterations": 3}, "num_iterations", "1"),
    ("epochs_per_iteration", {"epochs_per_iteration": 2}, "epochs_per_iteration", "1"),
    ("restart_each_iteration", {"restart_each_iteration": False}, "restart_each_iteration", "1"),
    ("mix_previous_iteration", {"mix_previous_iteration": True}, "mix_previous_iteration", "1"),
    ("reuse_proto", {"reuse_proto_as_first_synthetic": False}, "reuse_proto_as_first_synthetic", "1"),
    ("max_length", {"max_length": 48}, "max_length", "1"),
    ("max_prompt_length", {"max_prompt_length": 30}, "max_prompt_length", "1"),
    ("truncation_mode", {"truncation_mode": "keep_start"}, "truncation_mode", "1"),
    ("seed", {"seed": 7}, "seed", "1"),
    ("data_seed", {"data_seed": 7}, "data_seed", "1"),
    ("learning_rate", {"learning_rate": 5e-4}, "learning_rate", "1"),
    ("lr_scheduler_type", {"lr_scheduler_type": "constant"}, "lr_scheduler_type", "1"),
    ("warmup_steps", {"warmup_steps": 2}, "warmup_steps", "1"),
    ("optim", {"optim": "adamw_torch"}, "optim", "1"),
    ("optim_args", {"optim_args": "momentum=0.5"}, "optim_args", "20"),
    ("adam_beta1", {"adam_beta1": 0.8}, "adam_beta1", "20"),
    ("adam_beta2", {"adam_beta2": 0.99}, "adam_beta2", "20"),
    ("adam_epsilon", {"adam_epsilon": 1e-6}, "adam_epsilon", "20"),
    ("lr_scheduler_kwargs", {"lr_scheduler_kwargs": {"last_epoch": -1}}, "lr_scheduler_kwargs", "20"),
    ("weight_decay", {"weight_decay": 0.1}, "weight_decay", "1"),
    ("max_grad_norm", {"max_grad_norm": 0.5}, "max_grad_norm", "1"),
    ("per_device_train_batch_size", {"per_device_train_batch_size": 4}, "per_device_train_batch_size", "1"),
    ("gradient_accumulation_steps", {"gradient_accumulation_steps": 2}, "gradient_accumulation_steps", "1"),
    ("temperature", {"temperature": 0.5}, "temperature", "1"),
    ("top_p", {"top_p": 0.9}, "top_p", "1"),
    ("top_k", {"top_k": 5}, "top_k", "1"),
    ("max_completion_length", {"max_completion_length": 8}, "max_new_tokens", "1"),
    ("generation_kwargs", {"generation_kwargs": {"repetition_penalty": 1.1}}, "repetition_penalty", "1"),
    ("data_same_size", {"rows": sorting_rows(8, offset=3)}, "data", "1"),
    ("data_other_size", {"rows": sorting_rows(10)}, "data", "1"),
    ("initial_model", {"model_seed": 1}, "initial_model", "1"),
    ("tokenizer", {"chat_template_suffix": " "}, "tokenizer", "1"),
]
# Settings outside the run identity: a resume with them changed must give the uninterrupted run's model. Interrupted
# at step 3 (inside iteration 0), so that iteration 1 is generated after the resume.
RESUME_HARMLESS: list[tuple[str, dict[str, Any]]] = [
    ("logging_steps", {"logging_steps": 2}),
    ("save_steps", {"save_steps": 2}),
    ("generation_batch_size", {"generation_batch_size": 8}),
    ("logps_batch_size", {"logps_batch_size": 1}),
]


def _resume_with(ctx: Ctx, change: dict[str, Any]) -> TSPINTrainer:
    change = dict(change)
    tokenizer = build_char_tokenizer()
    if "chat_template_suffix" in change:
        tokenizer.chat_template += change.pop("chat_template_suffix")
    model = build_tiny_model(tokenizer, seed=change.pop("model_seed", 0))
    return make_trainer(ctx.out, model=model, tokenizer=tokenizer, **(CHECKPOINT_EVERY_STEP | change))


def resume_changed(change: dict[str, Any], keyword: str, template_name: str = "interrupted") -> Callable:
    def run(ctx):
        ctx.use(template_name)
        return expect_error(
            lambda: _resume_with(ctx, change).train(resume_from_checkpoint=True), "Cannot resume", keyword
        )

    return run


def resume_harmless(change: dict[str, Any]) -> Callable:
    def run(ctx):
        ctx.use("interrupted3")
        try:
            trainer = _resume_with(ctx, change)
            trainer.train(resume_from_checkpoint=True)
        except Exception as error:  # noqa: BLE001
            return classify_error(error, ("Cannot resume", next(iter(change))))
        return judge_run(ctx, trainer, baseline())

    return run


for _label, _change, _keyword, _finding in RESUME_CHANGES:
    add(
        f"resume_changed_{_label}",
        RESUME,
        f"interrupted at step 6, resumed with {_label} changed",
        resume_changed(_change, _keyword),
        quick=_label in ("temperature", "data_same_size", "num_iterations", "optim_args"),
        finding=_finding,
    )
for _label, _change in RESUME_HARMLESS:
    add(
        f"resume_changed_{_label}",
        RESUME,
        f"interrupted at step 3, resumed with {_label} changed (outside the run identity)",
        resume_harmless(_change),
    )


# ---- the dataset's own responses ------------------------------------------------------------------------------------------


def own_fresh(template_name: str, rows: Callable[[], Any], *keywords: str) -> Callable:
    """A finished run with its own responses, then a fresh run in its output_dir with `rows`: refused (`keywords`)."""

    def run(ctx):
        ctx.use(template_name)
        return expect_error(lambda: make_trainer(ctx.out, rows=rows()).train(), *keywords)

    return run


add(
    "own_synthetic_changed_fresh",
    OWN,
    "finished run with its own 'synthetic' column; a fresh run in its output_dir with that column changed",
    own_fresh("completed_own", lambda: with_own("synthetic", "3 4"), "another run", "data"),
    quick=True,
    finding="20",
)
add(
    "own_synthetic_one_row_changed_fresh",
    OWN,
    "as above, with the 'synthetic' response of one row of 8 changed",
    own_fresh("completed_own", lambda: with_own("synthetic", "1 2", change_row=5), "another run", "data"),
    finding="20",
)
add(
    "own_synthetic_dropped_fresh",
    OWN,
    "finished run with its own 'synthetic' column; a fresh run in its output_dir without it",
    own_fresh("completed_own", lambda: sorting_rows(8), "another run", "data"),
    finding="20",
)
add(
    "own_proto_changed_fresh",
    OWN,
    "finished run with its own 'proto' column; a fresh run in its output_dir with that column changed",
    own_fresh("completed_own_proto", lambda: with_own("proto", "3 4"), "another run", "data"),
    finding="20",
)


@case(OWN, "interrupted run with its own 'synthetic' column, resumed with that column changed", finding="20")
def own_synthetic_changed_resume(ctx):
    ctx.use("interrupted_own")
    rows = with_own("synthetic", "3 4")
    return expect_error(
        lambda: make_trainer(ctx.out, rows=rows, **CHECKPOINT_EVERY_STEP).train(resume_from_checkpoint=True),
        "Cannot resume",
        "data",
    )


@case(OWN, "interrupted run with its own 'synthetic' column, resumed with the same column", finding="20")
def own_synthetic_same_resume(ctx):
    ctx.use("interrupted_own")
    rows = with_own("synthetic", "1 2")
    return run_and_judge(ctx, baseline(rows=rows), resume=True, rows=rows, **CHECKPOINT_EVERY_STEP)


@case(OWN, "finished run with its own 'synthetic' column; the identical fresh run again (vs a clean folder)")
def own_synthetic_identical_rerun(ctx):
    ctx.use("completed_own")
    rows = with_own("synthetic", "1 2")
    return run_and_judge(ctx, baseline(rows=rows), rows=rows)


@case(
    OWN,
    "finished run with its own 'synthetic' column as messages; a fresh run with the same texts as plain strings "
    "(the same tokens: the same run)",
    finding="20",
)
def own_synthetic_same_tokens_other_form(ctx):
    ctx.use("completed_own")
    rows = with_own("synthetic", "1 2", as_message=False)
    return run_and_judge(ctx, baseline(rows=with_own("synthetic", "1 2")), rows=rows)


# ---- a fresh start in a used output_dir -------------------------------------------------------------------------------


def _all_checkpoints(ctx: Ctx) -> list[str]:
    """Every complete-looking checkpoint under `output_dir`, moved aside or not (relative paths)."""
    return sorted(str(p.parent.relative_to(ctx.out)) for p in ctx.out.rglob("checkpoint-*/trainer_state.json"))


def _replaced_records(ctx: Ctx) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(ctx.folder.replaced_dir).glob("*/replaced.json"))]


def fresh_stopped_then_resumed(stops: tuple[int, ...]) -> Callable:
    """A finished run (a checkpoint per step); fresh identical reruns stopped after each of `stops` steps; then a
    resume, which must finish with the uninterrupted run's weights, the earlier checkpoints kept under replaced/."""

    def run(ctx):
        ctx.use("completed_checkpointed")
        for stop in stops:
            make_trainer(ctx.out, callbacks=[StopAfter(stop)], **CHECKPOINT_EVERY_STEP).train()
        verdict = run_and_judge(ctx, baseline(), resume=True, **CHECKPOINT_EVERY_STEP)
        moved = [m for record in _replaced_records(ctx) for m in record["moved"]]
        kept = _all_checkpoints(ctx)
        expected = 8 + sum(stops[:-1]) + 8  # the finished run's, the stopped reruns' but the last, and the resume's
        if verdict.outcome != DEFECT and len(kept) < expected:
            return Verdict(DEFECT, f"checkpoints lost: {len(kept)} of {expected} remain ({kept})")
        verdict.detail += f"; replaced/ records: {len(_replaced_records(ctx))}, moved: {sorted(set(moved))[:6]}..."
        return verdict

    return run


add(
    "fresh_rerun_stopped_then_resume",
    FRESH,
    "finished run; the identical run started fresh in its output_dir, stopped after step 3; resume_from_checkpoint=True",
    fresh_stopped_then_resumed((3,)),
    quick=True,
    finding="20",
)
add(
    "fresh_rerun_stopped_in_iteration1_then_resume",
    FRESH,
    "as above, the fresh rerun stopped after step 6 (inside iteration 1)",
    fresh_stopped_then_resumed((6,)),
    finding="20",
)
add(
    "fresh_rerun_twice_then_resume",
    FRESH,
    "finished run; two fresh reruns stopped after steps 3 and 2 (two replaced/ folders); resume_from_checkpoint=True",
    fresh_stopped_then_resumed((3, 2)),
    finding="20",
)


@case(
    FRESH, "finished run; a fresh run with other data in its output_dir is refused: is anything moved?", finding="20"
)
def fresh_refused_moves_nothing(ctx):
    ctx.use("completed_checkpointed")
    before = _all_checkpoints(ctx)
    verdict = expect_error(
        lambda: make_trainer(ctx.out, rows=sorting_rows(8, offset=3), **CHECKPOINT_EVERY_STEP).train(),
        "another run",
        "data",
    )
    after = sorted(p.name for p in ctx.out.glob("checkpoint-*"))
    if Path(ctx.folder.replaced_dir).exists() or after != [Path(c).name for c in before]:
        return Verdict(DEFECT, f"the refused run moved the earlier run's files: {after} left of {before}")
    return verdict


@case(FRESH, "finished run; self_play/replaced exists as a file (not a folder); the identical run started fresh")
def fresh_replaced_is_a_file(ctx):
    ctx.use("completed_checkpointed")
    Path(ctx.folder.replaced_dir).write_text("not a folder")
    try:
        trainer = make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP)
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("replaced",))
    return judge_run(ctx, trainer, baseline())


@case(
    FRESH,
    "finished run; a fresh rerun SIGKILLed after moving the first of the earlier checkpoints aside; then "
    "resume_from_checkpoint=True",
    finding="20",
    timeout=150,
)
def fresh_rerun_killed_while_moving_aside(ctx):
    ctx.use("completed_checkpointed")
    run = start_worker(ctx, fault={"kind": "kill_in_move_aside", "n": 1}, overrides=CHECKPOINT_EVERY_STEP)
    result = run.wait()
    if not result.get("killed"):
        return Verdict(DEFECT, f"the fault was not triggered: {str(result)[:300]}")
    left = sorted(checkpoint_steps(str(ctx.out)))
    verdict = run_and_judge(
        ctx, baseline(), resume=True, note=f"checkpoints left in place: {left}", **CHECKPOINT_EVERY_STEP
    )
    kept = _all_checkpoints(ctx)
    if verdict.outcome != DEFECT and not any(k.endswith("checkpoint-8") and "replaced" in k for k in kept):
        return Verdict(DEFECT, f"the earlier run's checkpoint-8 is gone: {kept}")
    return verdict


@case(
    FRESH,
    "finished run; a fresh rerun SIGKILLed in its first training step (before any checkpoint); "
    "resume_from_checkpoint=True",
    finding="20",
    timeout=150,
)
def fresh_rerun_killed_before_a_step_then_resume(ctx):
    ctx.use("completed_checkpointed")
    run = start_worker(ctx, fault={"kind": "kill_in_step", "n": 1}, overrides=CHECKPOINT_EVERY_STEP)
    result = run.wait()
    if not result.get("killed"):
        return Verdict(DEFECT, f"the fault was not triggered: {str(result)[:300]}")
    left = sorted(checkpoint_steps(str(ctx.out)))
    if left:
        return Verdict(DEFECT, f"the earlier run's checkpoints {left} are still where a resume takes them")
    return expect_error(
        lambda: make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP).train(resume_from_checkpoint=True), "checkpoint"
    )
