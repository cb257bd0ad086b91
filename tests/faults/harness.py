"""The harness of the fault campaign: the reference run, the outcomes and how a case is classified, the case registry,
templates (runs built once that cases copy) and uninterrupted baselines.

The runs are those of the tests (`tests/support/builders.py`: 8 sorting rows, the tiny preset, 2 iterations of 4 steps
in batches of 2, generation in chunks of 4 prompts); paths inside a run are those of the run folder itself
(`RunFolder`, `checkpoint_dir`), never spelled here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tests.support import SELF_PLAY_SETTINGS, StopAfter, make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.checkpoints import checkpoint_dir
from tspin_trl.demo import build_char_tokenizer
from tspin_trl.run_folder import RunFolder


ROOT = Path(__file__).resolve().parents[2]

CLEAR, SURVIVED, WARNED, DEFECT = "clear error", "survived, nothing lost", "warned and recovered", "DEFECT"
OUTCOMES = (CLEAR, SURVIVED, WARNED, DEFECT)
TOL = 1e-6  # max |difference| of final parameters that still counts as "the same model"
CASE_TIMEOUT = 90  # seconds; a case that takes longer is a hang
WORKER_TIMEOUT = 120

QUIET = {"disable_tqdm": True}
CHECKPOINT_EVERY_STEP = {"save_strategy": "steps", "save_steps": 1}


# ---- the reference run ------------------------------------------------------------------------------------------------


def config(out: str | Path, **overrides: Any) -> TSPINConfig:
    """The reference run's configuration (the tests' `self_play_trainer` settings) with `overrides`."""
    return make_config(out, **(SELF_PLAY_SETTINGS | QUIET | overrides))


def make_trainer(
    out: str | Path, rows: Any = None, model: Any = None, tokenizer: Any = None, **overrides: Any
) -> TSPINTrainer:
    """The reference run's trainer (`self_play_trainer`: 8 sorting rows, the tiny preset) with `overrides` (settings,
    or `eval_dataset`, `callbacks`, `scorer`, `scorer_dataset`); a list of rows is wrapped in a `Dataset`."""
    return self_play_trainer(out, tokenizer or build_char_tokenizer(), rows=rows, model=model, **(QUIET | overrides))


def raw_trainer(out: str | Path, train_dataset: Any, **overrides: Any) -> TSPINTrainer:
    """A trainer given `train_dataset` exactly as it is (a Python list, `None`, a dict...)."""
    from tspin_trl.demo import build_tiny_model

    tokenizer = build_char_tokenizer()
    return TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=config(out, **overrides),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )


def params_of(trainer: TSPINTrainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        return math.inf
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ---- the session: baselines and templates, built once ------------------------------------------------------------------


class Session:
    """The campaign's scratch folder, the uninterrupted baselines and the templates built in it."""

    folder: Path = Path(tempfile.gettempdir())
    baselines: dict[str, dict[str, torch.Tensor]] = {}
    templates: dict[str, Path] = {}


class _CacheAt:
    """`$TSPIN_TRL_CACHE` pointed at `folder` for a block (restored after)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self):
        self.previous = os.environ.get("TSPIN_TRL_CACHE")
        os.environ["TSPIN_TRL_CACHE"] = str(self.folder)

    def __exit__(self, *exc):
        os.environ["TSPIN_TRL_CACHE"] = self.previous or ""


def baseline(**overrides: Any) -> dict[str, torch.Tensor]:
    """Final parameters of an uninterrupted run in a clean folder with a clean cache (memoised per settings)."""
    key = json.dumps(overrides, sort_keys=True, default=str)
    if key not in Session.baselines:
        folder = Path(tempfile.mkdtemp(prefix="baseline-", dir=Session.folder))
        try:
            with _CacheAt(folder / "cache"):
                trainer = make_trainer(folder / "out", **overrides)
                trainer.train()
            Session.baselines[key] = params_of(trainer)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return Session.baselines[key]


def template(name: str, build: Callable[[Path], None]) -> Path:
    """A folder built once by `build(folder)` (e.g. an interrupted run in `folder/out`, its cache in `folder/cache`)
    that cases copy with `Ctx.use`; never modified after it is built."""
    if name not in Session.templates:
        folder = Path(tempfile.mkdtemp(prefix=f"template-{name}-", dir=Session.folder))
        with _CacheAt(folder / "cache"):
            build(folder)
        Session.templates[name] = folder
    return Session.templates[name]


def interrupted(folder: Path, stop_after: int = 6, **overrides: Any) -> None:
    """A 2-iteration run stopped after `stop_after` steps (iteration 1 is steps 5..8), a checkpoint per step."""
    make_trainer(folder / "out", callbacks=[StopAfter(stop_after)], **(CHECKPOINT_EVERY_STEP | overrides)).train()


def completed(folder: Path, **overrides: Any) -> None:
    make_trainer(folder / "out", **overrides).train()


# The templates cases share, by name.
TEMPLATES: dict[str, Callable[[Path], None]] = {
    "completed": completed,
    "completed_checkpointed": lambda folder: completed(folder, **CHECKPOINT_EVERY_STEP),
    "interrupted": interrupted,
    "interrupted3": lambda folder: interrupted(folder, stop_after=3),
    "cached": lambda folder: completed(folder, num_iterations=1),
}


# ---- what a case gets, and its verdict -----------------------------------------------------------------------------------


@dataclass
class Verdict:
    outcome: str
    message: str
    detail: str = ""


class Ctx:
    """What a case gets: its own folder, its own proto cache (also in `$TSPIN_TRL_CACHE`), the warnings logged, and
    the run folder's paths (`ctx.folder`: a `RunFolder` of `ctx.out`)."""

    def __init__(self, folder: Path, records: list[logging.LogRecord]):
        self.tmp = folder
        self.out = folder / "out"
        self.cache = folder / "cache"
        self.records = records
        self.folder = RunFolder(str(self.out))

    def iteration_file(self, iteration: int = 1, name: str = "train") -> Path:
        """The responses file of `iteration` (its sidecar: `.with_name(...)` or `iteration_meta`)."""
        return Path(self.folder.iteration_files(iteration, name)[0])

    def iteration_meta(self, iteration: int = 1, name: str = "train") -> Path:
        return Path(self.folder.iteration_files(iteration, name)[1])

    def checkpoint(self, step: int) -> Path:
        return Path(checkpoint_dir(str(self.out), step))

    def warnings_text(self) -> str:
        """The distinct warnings of `tspin_trl`, a stale lock's take-over last; the training monitor's advice on
        saturated or vanished advantages (normal on the tiny preset) is left out."""
        messages = []
        for record in self.records:
            message = record.getMessage()
            if not record.name.startswith("tspin_trl") or message.startswith("Self-play iteration"):
                continue
            if message not in messages:
                messages.append(message)
        return "\n".join(sorted(messages, key=lambda m: m.startswith("Taking over")))

    def use(self, name: str) -> None:
        """Copy the template `name`'s `out/` and `cache/` (built on first use) into this case's folder."""
        source = template(name, TEMPLATES[name])
        for sub in ("out", "cache"):
            if (source / sub).exists():
                shutil.copytree(source / sub, self.tmp / sub)


class CaseTimeout(BaseException):
    """A case ran past its timeout (BaseException: no `except Exception` in the code under test swallows it)."""


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def classify_error(error: BaseException, keywords: tuple[str, ...]) -> Verdict:
    """`clear error` when the message holds every keyword (the field or file, and the fix), else `DEFECT`."""
    message = error_text(error)
    missing = [k for k in keywords if k.lower() not in message.lower()]
    if isinstance(error, CaseTimeout):
        return Verdict(DEFECT, f"hang: {message}")
    if missing:
        return Verdict(DEFECT, f"unclear error (does not mention {missing}): {message}")
    return Verdict(CLEAR, message)


def expect_error(
    call: Callable[[], Any], *keywords: str, on_success: Callable[[Any], Verdict] | None = None
) -> Verdict:
    try:
        result = call()
    except Exception as error:  # noqa: BLE001 - every error is classified by its message
        return classify_error(error, keywords)
    if on_success is not None:
        return on_success(result)
    return Verdict(DEFECT, "accepted silently (no error, no warning)")


def judge_run(ctx: Ctx, trainer: TSPINTrainer, reference: dict[str, torch.Tensor] | None, note: str = "") -> Verdict:
    """A run that completed: compared with the uninterrupted reference, and whether a warning said what happened."""
    final = params_of(trainer)
    if not all(torch.isfinite(p).all() for p in final.values()):
        return Verdict(DEFECT, "silent wrong result: non-finite parameters after training")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses and not all(math.isfinite(v) for v in losses):
        return Verdict(DEFECT, f"silent wrong result: non-finite logged loss {losses}")
    detail = note
    if reference is not None:
        diff = max_diff(final, reference)
        detail = f"max |param - uninterrupted| = {diff:.2e}" + (f"; {note}" if note else "")
        if diff > TOL:
            return Verdict(
                DEFECT, f"silent wrong result: final parameters differ from an uninterrupted run by {diff:.3g}"
            )
    warned = ctx.warnings_text()
    if warned:
        return Verdict(WARNED, " | ".join(warned.splitlines()), detail)
    return Verdict(SURVIVED, "completed" + (" with the uninterrupted run's parameters" if reference else ""), detail)


def run_and_judge(ctx: Ctx, reference: dict | None, resume: Any = None, note: str = "", **kwargs: Any) -> Verdict:
    try:
        trainer = make_trainer(ctx.out, **kwargs)
        trainer.train(resume_from_checkpoint=resume)
    except Exception as error:  # noqa: BLE001
        return Verdict(DEFECT, f"crashed: {error_text(error)}")
    return judge_run(ctx, trainer, reference, note)


def temporaries(root: Path) -> list[Path]:
    """The temporary files `atomic_write` leaves when its process dies between writing and renaming
    (`<name>.<random>.tmp`) under `root`."""
    return sorted(p for p in root.rglob("*.tmp") if p.name.count(".") >= 2) if root.exists() else []


def read_rows(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- the case registry -----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    category: str
    action: str
    run: Callable[[Ctx], Verdict]
    quick: bool = False
    finding: str | None = None
    timeout: int = CASE_TIMEOUT


CASES: list[Case] = []


def add(
    name: str,
    category: str,
    action: str,
    function: Callable[[Ctx], Verdict],
    quick: bool = False,
    finding: str | None = None,
    timeout: int = CASE_TIMEOUT,
) -> None:
    """Register a case (its name is unique in the campaign)."""
    if any(existing.name == name for existing in CASES):
        raise ValueError(f"two fault cases are named {name!r}")
    CASES.append(Case(name, category, action, function, quick, finding, timeout))


def case(category: str, action: str, quick: bool = False, finding: str | None = None, timeout: int = CASE_TIMEOUT):
    """Decorator form of [`add`]: the function's name is the case's."""

    def register(function: Callable[[Ctx], Verdict]) -> Callable[[Ctx], Verdict]:
        add(function.__name__, category, action, function, quick, finding, timeout)
        return function

    return register


__all__ = [
    "CASES",
    "CASE_TIMEOUT",
    "CHECKPOINT_EVERY_STEP",
    "CLEAR",
    "DEFECT",
    "OUTCOMES",
    "ROOT",
    "SURVIVED",
    "StopAfter",
    "TOL",
    "WARNED",
    "WORKER_TIMEOUT",
    "Case",
    "CaseTimeout",
    "Ctx",
    "Session",
    "Verdict",
    "add",
    "baseline",
    "case",
    "classify_error",
    "completed",
    "config",
    "error_text",
    "expect_error",
    "interrupted",
    "judge_run",
    "make_trainer",
    "max_diff",
    "params_of",
    "raw_trainer",
    "read_rows",
    "run_and_judge",
    "sorting_rows",
    "template",
    "temporaries",
]
