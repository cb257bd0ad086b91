"""Cases: a user's scorer that raises, returns NaN, inf, a string, `None` or a tensor, or comes without its data."""

from __future__ import annotations

from collections.abc import Callable

import torch
from datasets import Dataset

from .harness import (
    DEFECT,
    SURVIVED,
    WARNED,
    Ctx,
    Verdict,
    add,
    baseline,
    case,
    error_text,
    expect_error,
    judge_run,
    make_trainer,
    sorting_rows,
)


SCORE = "scorers"


def scorer_case(scorer: Callable, expect_warning: str) -> Callable[[Ctx], Verdict]:
    """A run with `scorer` (checkpoints every iteration): it must finish with the unscored run's model, keep both
    checkpoints, and warn with `expect_warning` (nothing to warn about when empty)."""

    def run(ctx):
        try:
            trainer = make_trainer(
                ctx.out,
                save_strategy="epoch",
                scorer=scorer,
                scorer_dataset=Dataset.from_list(sorting_rows(2)),
            )
            trainer.train()
        except Exception as error:  # noqa: BLE001
            return Verdict(DEFECT, f"crashed: {error_text(error)}")
        verdict = judge_run(ctx, trainer, baseline())
        if verdict.outcome == DEFECT:
            return verdict
        kept = sorted(p.name for p in ctx.out.glob("checkpoint-*"))
        expected = [ctx.checkpoint(4).name, ctx.checkpoint(8).name]
        if kept != expected:
            return Verdict(DEFECT, f"checkpoints lost: {kept}")
        text = ctx.warnings_text() + "\n" + "\n".join(r.getMessage() for r in ctx.records if r.levelno >= 40)
        if expect_warning and expect_warning.lower() not in text.lower():
            return Verdict(DEFECT, f"no warning naming the scorer's problem ({expect_warning!r})")
        if not expect_warning:
            return Verdict(SURVIVED, "scores recorded", verdict.detail)
        line = next(line for line in text.splitlines() if expect_warning.lower() in line.lower())
        return Verdict(WARNED, line, f"checkpoints kept: {kept}; " + verdict.detail)

    return run


def _raises(responses, rows):
    raise RuntimeError("scorer bug")


add(
    "scorer_raises",
    SCORE,
    "a scorer that raises RuntimeError",
    scorer_case(_raises, "raised"),
    quick=True,
    finding="7",
)
add("scorer_nan", SCORE, "a scorer that returns NaN", scorer_case(lambda r, rows: float("nan"), "nan"), finding="7")
add("scorer_inf", SCORE, "a scorer that returns inf", scorer_case(lambda r, rows: float("inf"), "inf"))
add("scorer_string", SCORE, "a scorer that returns 'abc'", scorer_case(lambda r, rows: "abc", "raised"))
add("scorer_none", SCORE, "a scorer that returns None", scorer_case(lambda r, rows: None, "raised"))
add("scorer_tensor", SCORE, "a scorer that returns a 0-d tensor", scorer_case(lambda r, rows: torch.tensor(0.5), ""))


@case(SCORE, "a scorer without scorer_dataset")
def scorer_without_dataset(ctx):
    return expect_error(
        lambda: make_trainer(ctx.out, rows=sorting_rows(4), scorer=lambda r, rows: 0.0), "scorer_dataset"
    )


# ---- issue 32: compute_metrics -------------------------------------------------------------------------------------------


def metrics_case(compute_metrics: Callable, *keywords: str) -> Callable[[Ctx], Verdict]:
    """A run evaluated every 4 steps with `compute_metrics`: a broken one must stop it before the first step."""

    def run(ctx):
        trainer = make_trainer(
            ctx.out,
            eval_dataset=Dataset.from_list(sorting_rows(2, offset=8)),
            eval_strategy="steps",
            eval_steps=4,
        )
        trainer.compute_metrics = compute_metrics
        verdict = expect_error(trainer.train, *keywords)
        if trainer.state.global_step > 0 and verdict.outcome != DEFECT:
            return Verdict(DEFECT, f"failed only at step {trainer.state.global_step}: {verdict.message}")
        return verdict

    return run


def _zero_division(prediction):
    return {"ratio": 1 / 0}


add(
    "compute_metrics_raises",
    SCORE,
    "a compute_metrics that raises",
    metrics_case(_zero_division, "compute_metrics"),
    finding="32",
)
add(
    "compute_metrics_returns_none",
    SCORE,
    "a compute_metrics that returns None",
    metrics_case(lambda prediction: None, "compute_metrics", "dict"),
    quick=True,
    finding="32",
)
