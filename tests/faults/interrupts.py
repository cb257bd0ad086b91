"""Cases: the notebook's Ctrl-C (`KeyboardInterrupt`) at several points of `train()`, then `train()` again on the same
trainer object, as a user of a notebook does; the result is compared with an uninterrupted run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import TrainerCallback

from tspin_trl import generation

from .harness import (
    CHECKPOINT_EVERY_STEP,
    DEFECT,
    Ctx,
    Verdict,
    add,
    baseline,
    case,
    classify_error,
    error_text,
    judge_run,
    make_trainer,
    sorting_rows,
    temporaries,
)
from .identity import with_own


CTRL_C = "Ctrl-C, then train() again on the same trainer"


class CtrlC(TrainerCallback):
    """Raises `KeyboardInterrupt` at the end of each step in `steps` (once each), as Ctrl-C in a notebook does."""

    def __init__(self, *steps: int):
        self.steps = set(steps)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            self.steps.discard(state.global_step)
            raise KeyboardInterrupt


def interrupted_then_resumed(
    ctx: Ctx,
    steps: tuple[int, ...] = (),
    reference: dict | None = None,
    resume: Any = True,
    between: Any = None,
    total_steps: int = 8,
    **overrides: Any,
) -> Verdict:
    """Train with Ctrl-C after each of `steps`; after each, `between(trainer)` (if given), then
    `train(resume_from_checkpoint=resume)` on the same object, to the end (`total_steps`); compare with
    `reference`."""
    trainer = make_trainer(ctx.out, callbacks=[CtrlC(*steps)], **(CHECKPOINT_EVERY_STEP | overrides))
    interruptions, call = 0, None
    while True:
        try:
            trainer.train(resume_from_checkpoint=call)
            break
        except KeyboardInterrupt:
            interruptions += 1
            if interruptions > len(steps) + 2:
                return Verdict(DEFECT, "more interruptions than Ctrl-Cs")
            if between is not None:
                between(trainer)
            call = resume
        except Exception as error:  # noqa: BLE001
            if interruptions == 0:
                return Verdict(DEFECT, f"crashed before any Ctrl-C: {error_text(error)}")
            return Verdict(DEFECT, f"train() after Ctrl-C failed: {error_text(error)}")
    if interruptions == 0:
        return Verdict(DEFECT, "the Ctrl-C never happened")
    steps_done = trainer.state.global_step
    verdict = judge_run(ctx, trainer, reference, note=f"{interruptions} Ctrl-C, {steps_done} steps")
    if verdict.outcome != DEFECT and steps_done != total_steps:
        return Verdict(DEFECT, f"ended after {steps_done} of {total_steps} steps")
    return verdict


for _label, _steps, _quick in [
    ("step3", (3,), True),
    ("step4", (4,), False),
    ("step6", (6,), False),
    ("steps_3_and_6", (3, 6), False),
]:
    add(
        f"ctrl_c_{_label}_then_resume",
        CTRL_C,
        f"KeyboardInterrupt after step(s) {', '.join(map(str, _steps))}; train(resume_from_checkpoint=True) on the "
        "same object after each",
        lambda ctx, _steps=_steps: interrupted_then_resumed(ctx, _steps, baseline()),
        quick=_quick,
        finding="20",
    )


@case(
    CTRL_C,
    "KeyboardInterrupt after step 10 (iteration 1 of 8 steps each: data mixing doubles them) with objective='spin' and "
    "mix_previous_iteration; resume, same object",
)
def ctrl_c_spin_mixing(ctx):
    overrides = {"objective": "spin", "mix_previous_iteration": True}
    return interrupted_then_resumed(ctx, (10,), baseline(**overrides), total_steps=16, **overrides)


@case(CTRL_C, "KeyboardInterrupt after step 6, the dataset bringing its own 'synthetic' column; resume, same object")
def ctrl_c_own_synthetic(ctx):
    rows = with_own("synthetic", "1 2")
    return interrupted_then_resumed(ctx, (6,), baseline(rows=rows), rows=rows)


def _eval_rows() -> Dataset:
    return Dataset.from_list(sorting_rows(4, offset=5))


@case(CTRL_C, "KeyboardInterrupt after step 6 with an eval_dataset (its triplets filled too); resume, same object")
def ctrl_c_with_eval_dataset(ctx):
    eval_settings = {"eval_strategy": "steps", "eval_steps": 4}
    reference = baseline(eval_dataset=_eval_rows(), **eval_settings)
    return interrupted_then_resumed(ctx, (6,), reference, eval_dataset=_eval_rows(), **eval_settings)


@case(CTRL_C, "KeyboardInterrupt after step 3; trainer.args.num_iterations 2 -> 3; resume on the same object")
def ctrl_c_then_resume_changed_setting(ctx):
    def change(trainer):
        trainer.args.num_iterations = 3

    verdict = interrupted_then_resumed(ctx, (3,), baseline(num_iterations=3), between=change)
    if verdict.outcome == DEFECT and verdict.message.startswith("train() after Ctrl-C failed"):
        message = verdict.message.removeprefix("train() after Ctrl-C failed: ")
        return classify_error(RuntimeError(message), ("Cannot resume", "num_iterations"))
    return verdict


@case(
    CTRL_C,
    "KeyboardInterrupt after step 3, then train() without resume_from_checkpoint on the same object (a fresh start "
    "from the object whose model has trained 3 steps)",
    quick=True,
    finding="20",
)
def ctrl_c_then_fresh_train(ctx):
    """A fresh `train()` from weights an earlier call trained must be refused (naming the resume) or end with the
    uninterrupted run's weights; training on from the trained weights as if they were the initial model's is a defect."""
    trainer = make_trainer(ctx.out, callbacks=[CtrlC(3)], **CHECKPOINT_EVERY_STEP)
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    else:
        return Verdict(DEFECT, "the Ctrl-C never happened")
    try:
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("resume_from_checkpoint", "new trainer"))
    verdict = judge_run(ctx, trainer, baseline(), note="fresh train() after a Ctrl-C")
    if verdict.outcome == DEFECT and "differ" in verdict.message:
        verdict.message += (
            " (the second train() started from the in-memory weights the first call had trained, while the run's "
            "identity, the proto cache and the kept iteration-0 responses are those of the initial model)"
        )
    return verdict


class _GenerateInterrupted:
    """`HFGenerationBackend.generate` raising `KeyboardInterrupt` at its `n`-th call in this process (restored after)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __enter__(self):
        self.original = original = generation.HFGenerationBackend.generate

        def generate(backend, *args, **kwargs):
            self.calls += 1
            if self.calls == self.n:
                raise KeyboardInterrupt
            return original(backend, *args, **kwargs)

        generation.HFGenerationBackend.generate = generate
        return self

    def __exit__(self, *exc):
        generation.HFGenerationBackend.generate = self.original


@case(
    CTRL_C,
    "KeyboardInterrupt in iteration 1's second generate() call (its first chunk written); resume on the same object",
    finding="20",
)
def ctrl_c_in_generation(ctx):
    reference = baseline()  # before generate is patched
    with _GenerateInterrupted(4):  # proto: calls 1-2 (two chunks), iteration 1: calls 3-4
        return interrupted_then_resumed(ctx, (), reference)


@case(
    CTRL_C,
    "KeyboardInterrupt in the proto generation (no step, no checkpoint yet); train() again on the same object",
    finding="20",
)
def ctrl_c_in_proto_generation(ctx):
    reference = baseline()
    with _GenerateInterrupted(2):
        return interrupted_then_resumed(ctx, (), reference, resume=None)


@case(CTRL_C, "KeyboardInterrupt while checkpoint-6 is saved (weights written, optimizer not); resume, same object")
def ctrl_c_in_checkpoint_save(ctx):
    trainer_holder: list = []

    def arm(trainer):
        original = trainer._save_optimizer_and_scheduler

        def save(output_dir):
            if trainer.state.global_step == 6 and not trainer_holder:
                trainer_holder.append(True)
                raise KeyboardInterrupt
            return original(output_dir)

        trainer._save_optimizer_and_scheduler = save

    trainer = make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP)
    arm(trainer)
    try:
        trainer.train()
        return Verdict(DEFECT, "the Ctrl-C never happened")
    except KeyboardInterrupt:
        pass
    try:
        trainer.train(resume_from_checkpoint=True)
    except Exception as error:  # noqa: BLE001
        return Verdict(DEFECT, f"train() after Ctrl-C failed: {error_text(error)}")
    return judge_run(ctx, trainer, baseline(), note="half-written checkpoint-6 skipped")


@case(
    CTRL_C,
    "KeyboardInterrupt inside the rename of iteration 1's responses file (its temporary written); resume, same object",
    finding="20",
)
def ctrl_c_in_iteration_file_rename(ctx):
    target = Path(ctx.iteration_file(1))
    original = os.replace
    fired: list = []

    def replace(source, destination, *args, **kwargs):
        if os.fspath(destination) == str(target) and not fired:
            fired.append(True)
            raise KeyboardInterrupt
        return original(source, destination, *args, **kwargs)

    reference = baseline()
    os.replace = replace
    try:
        verdict = interrupted_then_resumed(ctx, (), reference)
    finally:
        os.replace = original
    if not fired:
        return Verdict(DEFECT, "the Ctrl-C never happened")
    left = [str(p.relative_to(ctx.out)) for p in temporaries(ctx.out)]
    if verdict.outcome != DEFECT and left:
        return Verdict(DEFECT, f"temporary files left: {left}")
    return verdict
