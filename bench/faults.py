"""A fault campaign: bad inputs and faults tried on the tiny preset as a careless or hostile user would.

Every case runs in isolation (its own temporary folder and `TSPIN_TRL_CACHE`; a subprocess where a crash, a SIGKILL, a
file-size limit, another user or a second concurrent run is involved) and is classified automatically:

- `clear error`: raised before any compute is wasted, the message names the field or file (checked on its text);
- `survived, nothing lost`: the run completed or resumed, and where that applies its final parameters equal those of
  an uninterrupted run with the same settings (compared to `TOL`);
- `warned and recovered`: as above, and a warning of `tspin_trl` said what was ignored or taken over;
- `DEFECT`: a crash with an unclear message, a hang (every case has a timeout), or a silently wrong result.

    python bench/faults.py            # every case (~130), writes bench/results/faults.json
    python bench/faults.py --quick    # a subset of every category, in under 3 minutes
    python bench/faults.py --only resume --out /tmp/x.json

Imports only `tspin_trl` and standard or already-required libraries (no `bench.common`), so it runs on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench  # noqa: E402, F401  (first: the benchmark environment, set before torch is imported)


# isort: split
import torch  # noqa: E402
from datasets import Dataset, IterableDataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from tspin_trl import TSPINConfig, TSPINTrainer  # noqa: E402
from tspin_trl.checked_io import atomic_write, json_digest, sha256_hex  # noqa: E402
from tspin_trl.demo import build_char_tokenizer, build_tiny_model  # noqa: E402


CLEAR, SURVIVED, WARNED, DEFECT = "clear error", "survived, nothing lost", "warned and recovered", "DEFECT"
OUTCOMES = (CLEAR, SURVIVED, WARNED, DEFECT)
TOL = 1e-6  # max |difference| of final parameters that still counts as "the same model"
CASE_TIMEOUT = 90  # seconds; a case that takes longer is a hang
WORKER_TIMEOUT = 120

# The reference run: 8 sorting prompts, 2 iterations of 4 steps (batch 2), generation in chunks of 4 prompts.
BASE = dict(
    per_device_train_batch_size=2,
    per_device_eval_batch_size=4,
    num_iterations=2,
    generation_batch_size=4,
    max_completion_length=10,
    max_length=64,
    learning_rate=1e-3,
    warmup_steps=0,
    logging_steps=1,
    report_to=[],
    gradient_checkpointing=False,
    save_strategy="no",
    use_cpu=True,
    dataloader_pin_memory=False,
    disable_tqdm=True,
)
CHECKPOINT_EVERY_STEP = dict(save_strategy="steps", save_steps=1)


def sorting_rows(n: int = 8, conversational: bool = True, offset: int = 0) -> list[dict]:
    """The rows of `tests/helpers.py::sorting_rows` (`offset` shifts the digits: other data of the same size)."""
    rows = []
    for i in range(n):
        digits = [((i + offset) * 7 + k * 3) % 10 for k in range(4)]
        prompt = "sort: " + " ".join(map(str, digits))
        answer = " ".join(map(str, sorted(digits)))
        if conversational:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": answer}],
                }
            )
        else:
            rows.append({"prompt": prompt + "\n", "completion": answer})
    return rows


# ---- running one configuration ---------------------------------------------------------------------------------------


class StopAfter(TrainerCallback):
    """Stops training gracefully after `step` steps (an interruption that leaves a checkpoint at every step)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def make_trainer(
    out: str | Path,
    rows: Any = ...,
    model: Any = None,
    tokenizer: Any = None,
    eval_dataset: Any = None,
    callbacks: list | None = None,
    raw_rows: bool = False,
    **overrides: Any,
) -> TSPINTrainer:
    """The reference run's trainer (`BASE` settings, 8 sorting rows, the tiny preset) with `overrides`; a list of
    rows is wrapped in a `Dataset` unless `raw_rows`."""
    tokenizer = tokenizer or build_char_tokenizer()
    if rows is ...:
        rows = sorting_rows(8)
    if isinstance(rows, list) and not raw_rows:
        rows = Dataset.from_list(rows)
    return TSPINTrainer(
        model=model or build_tiny_model(tokenizer),
        args=TSPINConfig(output_dir=str(out), **(BASE | overrides)),
        train_dataset=rows,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def params_of(trainer: TSPINTrainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        return math.inf
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


_BASELINES: dict[str, dict[str, torch.Tensor]] = {}
_TEMPLATES: dict[str, Path] = {}
SESSION: Path = Path(".")


def baseline(**overrides: Any) -> dict[str, torch.Tensor]:
    """Final parameters of an uninterrupted run in a clean folder with a clean cache (memoised per settings)."""
    key = json.dumps(overrides, sort_keys=True, default=str)
    if key not in _BASELINES:
        folder = Path(tempfile.mkdtemp(prefix="baseline-", dir=SESSION))
        previous = os.environ.get("TSPIN_TRL_CACHE")
        os.environ["TSPIN_TRL_CACHE"] = str(folder / "cache")
        try:
            trainer = make_trainer(folder / "out", **overrides)
            trainer.train()
            _BASELINES[key] = params_of(trainer)
        finally:
            os.environ["TSPIN_TRL_CACHE"] = previous or ""
            shutil.rmtree(folder, ignore_errors=True)
    return _BASELINES[key]


def template(name: str, build: Callable[[Path], None]) -> Path:
    """A folder built once (e.g. an interrupted run) that cases copy; never modified after it is built."""
    if name not in _TEMPLATES:
        folder = Path(tempfile.mkdtemp(prefix=f"template-{name}-", dir=SESSION))
        previous = os.environ.get("TSPIN_TRL_CACHE")
        os.environ["TSPIN_TRL_CACHE"] = str(folder / "cache")
        try:
            build(folder)
        finally:
            os.environ["TSPIN_TRL_CACHE"] = previous or ""
        _TEMPLATES[name] = folder
    return _TEMPLATES[name]


def interrupted(folder: Path, stop_after: int = 6, **overrides: Any) -> None:
    """A 2-iteration run stopped after `stop_after` steps (inside iteration 1: steps 5..8), a checkpoint per step."""
    trainer = make_trainer(folder / "out", callbacks=[StopAfter(stop_after)], **(CHECKPOINT_EVERY_STEP | overrides))
    trainer.train()


def completed(folder: Path, **overrides: Any) -> None:
    make_trainer(folder / "out", **overrides).train()


# ---- verdicts ----------------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    outcome: str
    message: str
    detail: str = ""


class Ctx:
    """What a case gets: its own folder, its own proto cache (also in `$TSPIN_TRL_CACHE`), and the warnings logged."""

    def __init__(self, folder: Path, records: list[logging.LogRecord]):
        self.tmp = folder
        self.out = folder / "out"
        self.cache = folder / "cache"
        self.records = records

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
        """Copy a template's `out/` and `cache/` into this case's folder."""
        source = _TEMPLATES[name]
        for sub in ("out", "cache"):
            if (source / sub).exists():
                shutil.copytree(source / sub, self.tmp / sub)


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


# ---- the worker: one run in a subprocess, with a fault injected -----------------------------------------------------


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def worker(spec: dict[str, Any]) -> None:
    """Run one configuration with the fault `spec["fault"]`; write the final parameters and a result record."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    os.environ["TSPIN_TRL_CACHE"] = spec["cache"]
    from tspin_trl import generation, self_play

    fault = spec.get("fault", {})
    kind, n = fault.get("kind"), fault.get("n", 1)
    counter = {"calls": 0}
    callbacks: list[TrainerCallback] = []

    if kind in ("kill_after_chunk_write", "slow_generate", "kill_in_generate"):
        original_write, original_generate = generation.ChunkStore.write, generation.HFGenerationBackend.generate

        def write(self, chunk, items):
            original_write(self, chunk, items)
            counter["calls"] += 1
            if kind == "kill_after_chunk_write" and counter["calls"] == n:
                _kill_self()

        def generate(self, *args, **kwargs):
            counter["generate"] = counter.get("generate", 0) + 1
            if kind == "kill_in_generate" and counter["generate"] == n:
                _kill_self()
            if kind == "slow_generate":
                time.sleep(fault["seconds"])
            return original_generate(self, *args, **kwargs)

        generation.ChunkStore.write, generation.HFGenerationBackend.generate = write, generate
    if kind == "kill_in_iteration_write":
        original = self_play.write_checked_jsonl

        def write_checked(data_path, meta_path, rows, meta):
            if meta.get("iteration") == n:
                atomic_write(data_path, "".join(json.dumps(row) + "\n" for row in rows))
                _kill_self()  # the data file is written, its sidecar is not
            original(data_path, meta_path, rows, meta)

        self_play.write_checked_jsonl = write_checked

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
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails like a full disk
                resource.setrlimit(resource.RLIMIT_FSIZE, (fault["bytes"], fault["bytes"]))

    callbacks.append(Faults())
    rows = sorting_rows(spec.get("rows", 8), offset=spec.get("offset", 0))
    trainer = make_trainer(spec["out"], rows=rows, callbacks=callbacks, **spec.get("overrides", {}))
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
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fault["bytes"], fault["bytes"]))
            return original_save(output_dir)

        trainer._save_optimizer_and_scheduler = save_optimizer
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

    def params(self) -> dict[str, torch.Tensor]:
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
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
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


# ---- the cases ------------------------------------------------------------------------------------------------------------


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


def case(category: str, action: str, quick: bool = False, finding: str | None = None, timeout: int = CASE_TIMEOUT):
    def register(function: Callable[[Ctx], Verdict]) -> Callable[[Ctx], Verdict]:
        CASES.append(Case(function.__name__, category, action, function, quick, finding, timeout))
        return function

    return register


def add(name, category, action, function, quick=False, finding=None, timeout=CASE_TIMEOUT):
    CASES.append(Case(name, category, action, function, quick, finding, timeout))


# -- configuration values ----------------------------------------------------------------------------------------------

CFG = "configuration values"


def probe_config(
    field_name: str, value: Any, expect: str = "error", keywords: tuple[str, ...] | None = None
) -> Callable[[Ctx], Verdict]:
    """Build the config; if accepted, train one iteration and check the result is finite and something was learned.

    `expect="error"`: the value is invalid (refused, or DEFECT). `expect="accept"`: the value is legal (a known
    meaning, e.g. `max_grad_norm <= 0` turns clipping off): it must train to a finite, changed model.
    `expect="warn"`: legal, but a warning must say so. `keywords`: what a clear error names (default: the field).
    """
    keywords = keywords or (field_name,)

    def run(ctx: Ctx) -> Verdict:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                TSPINConfig(output_dir=str(ctx.out), **(BASE | {field_name: value}))
            except Exception as error:  # noqa: BLE001
                verdict = classify_error(error, keywords)
                if expect != "error" and verdict.outcome == CLEAR:
                    return Verdict(DEFECT, f"a legal value refused: {verdict.message}")
                return verdict
            user_warnings = [str(w.message) for w in caught if field_name in str(w.message)]
        try:
            trainer = make_trainer(ctx.out, **{field_name: value, "num_iterations": 1})
            initial = params_of(trainer)
            trainer.train()
        except Exception as error:  # noqa: BLE001
            verdict = classify_error(error, keywords)
            verdict.detail = "accepted by TSPINConfig, failed in the trainer"
            return verdict
        verdict = judge_run(ctx, trainer, None)
        if verdict.outcome == DEFECT:
            return Verdict(DEFECT, f"accepted {field_name}={value!r}, then {verdict.message}")
        text = "; ".join(user_warnings) or ctx.warnings_text()
        if expect == "warn":
            return Verdict(WARNED, text) if text else Verdict(DEFECT, "accepted without the expected warning")
        if max_diff(params_of(trainer), initial) == 0:
            return Verdict(DEFECT, f"accepted {field_name}={value!r}, and training silently changed nothing")
        if expect == "accept":
            return Verdict(SURVIVED, f"legal value, trained to a finite model ({text or 'no warning'})"[:300])
        return Verdict(DEFECT, f"accepted {field_name}={value!r} silently and trained on it")

    return run


TSPIN_FLOATS = [
    "learning_rate",
    "warmup_steps",
    "alpha",
    "beta",
    "beta_first_iteration",
    "real_nll_weight",
    "temperature",
    "top_p",
    "vanishing_advantage_threshold",
    "saturation_threshold",
    "vllm_server_timeout",
    "vllm_gpu_memory_utilization",
]
HF_FLOATS = ["weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm"]
QUICK_CONFIG = {"beta", "alpha", "real_nll_weight", "temperature", "weight_decay"}

for _name in TSPIN_FLOATS + HF_FLOATS:
    add(f"nan_{_name}", CFG, f"{_name}=nan", probe_config(_name, math.nan), quick=_name in QUICK_CONFIG, finding="2")
for _name in TSPIN_FLOATS + ["max_grad_norm", "weight_decay"]:
    add(f"inf_{_name}", CFG, f"{_name}=inf", probe_config(_name, math.inf), quick=_name == "beta", finding="2")
for _name in ["alpha", "learning_rate", "temperature"]:
    add(f"neginf_{_name}", CFG, f"{_name}=-inf", probe_config(_name, -math.inf), finding="2")
for _name, _value, _expect in [
    ("learning_rate", -1e-3, "error"),
    ("warmup_steps", -1.0, "error"),
    ("alpha", -1.0, "error"),
    ("alpha", 0.0, "error"),
    ("beta", -0.1, "error"),
    ("beta_first_iteration", -0.1, "error"),
    ("real_nll_weight", -1.0, "error"),
    ("temperature", 0.0, "error"),
    ("temperature", -1.0, "error"),
    ("top_p", 0.0, "error"),
    ("top_p", 1.5, "error"),
    ("vanishing_advantage_threshold", -1.0, "error"),
    ("saturation_threshold", -1.0, "error"),
    ("weight_decay", -0.1, "error"),
    ("adam_epsilon", -1e-8, "accept"),  # unused by the default RMSProp
    ("max_grad_norm", -1.0, "accept"),  # transformers: <= 0 turns clipping off
    ("vllm_gpu_memory_utilization", 1.5, "error"),
]:
    add(f"value_{_name}_{_value}", CFG, f"{_name}={_value}", probe_config(_name, _value, _expect))
for _name, _value in [
    ("alpha", 1e30),
    ("beta", 1e30),
    ("beta_first_iteration", 1e30),
    ("real_nll_weight", 1e30),
    ("temperature", 1e30),
    ("learning_rate", 1e30),
    ("weight_decay", 1e30),
    ("warmup_steps", 1e30),
]:
    add(f"absurd_{_name}", CFG, f"{_name}={_value}", probe_config(_name, _value), quick=_name == "beta", finding="2")
for _name, _value in [
    ("objective", "dpo"),
    ("loss_type", "hinge"),
    ("truncation_mode", "middle"),
    ("packed_attention", "sparse"),
    ("vllm_mode", "remote"),
    ("vllm_dtype", "int3"),
    ("optim", "nonsense_optimizer"),
    ("lr_scheduler_type", "nonsense_schedule"),
]:
    # transformers' own message for a bad schedule names the value and the choices, not the field
    _keys = ("nonsense_schedule", "select one of") if _name == "lr_scheduler_type" else None
    add(
        f"enum_{_name}",
        "configuration enums",
        f"{_name}={_value!r}",
        probe_config(_name, _value, keywords=_keys),
        quick=_name == "objective",
    )
add(
    "enum_plateau_with_restarts",
    "configuration enums",
    "lr_scheduler_type='reduce_lr_on_plateau' with restart_each_iteration",
    probe_config("lr_scheduler_type", "reduce_lr_on_plateau"),
)
for _name, _value in [
    ("num_iterations", 0),
    ("num_iterations", -1),
    ("num_iterations", "3"),
    ("epochs_per_iteration", 0),
    ("max_completion_length", 0),
    ("max_length", 1),
    ("max_prompt_length", 0),
    ("max_prompt_length", 64),
    ("top_k", -1),
    ("generation_batch_size", 0),
    ("logps_batch_size", 0),
    ("pad_to_multiple_of", 0),
    ("per_device_train_batch_size", 0),
    ("gradient_accumulation_steps", 0),
    ("vllm_server_port", 0),
    ("vllm_tensor_parallel_size", 0),
    ("dataloader_persistent_workers", True),
]:
    add(
        f"int_{_name}_{_value}",
        "configuration integers",
        f"{_name}={_value!r}",
        probe_config(_name, _value),
        quick=_name in ("num_iterations", "per_device_train_batch_size"),
    )
add(
    "int_max_completion_length_huge",
    "configuration integers",
    "max_completion_length=200 with max_length=64 (97% of generated tokens cut)",
    probe_config("max_completion_length", 200, expect="warn"),
    finding="7",
)


@case("configuration integers", "generation_kwargs={'nonsense_kw': 1} (a typo in a generate() argument)")
def generation_kwargs_typo(ctx):
    return expect_error(lambda: make_trainer(ctx.out, generation_kwargs={"nonsense_kw": 1}).train(), "nonsense_kw")


@case("configuration integers", "objective='tspin_ref' with mix_previous_iteration=True (a legal combination)")
def tspin_ref_with_mixing(ctx):
    return run_and_judge(ctx, None, objective="tspin_ref", mix_previous_iteration=True)


@case("configuration integers", "max_steps=3 with num_iterations=2 (training ends inside iteration 0)")
def max_steps_short(ctx):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verdict = run_and_judge(ctx, None, max_steps=3)
    text = [str(w.message) for w in caught if "max_steps" in str(w.message)]
    if verdict.outcome in (SURVIVED, WARNED) and text:
        return Verdict(WARNED, text[0], verdict.detail)
    return verdict if verdict.outcome == DEFECT else Verdict(DEFECT, "no warning that iterations are skipped")


# -- datasets ----------------------------------------------------------------------------------------------------------

DATA = "datasets"


def data_case(name, action, rows_factory, *keywords, quick=False, finding=None, expect_ok=False, **overrides):
    def run(ctx):
        rows = rows_factory()
        if expect_ok:
            return run_and_judge(ctx, None, rows=rows, **overrides)
        return expect_error(lambda: make_trainer(ctx.out, rows=rows, **overrides).train(), *keywords)

    add(name, DATA, action, run, quick=quick, finding=finding)


def _rows_with(change: Callable[[list[dict]], list[dict]], conversational: bool = True):
    return lambda: Dataset.from_list(change(sorting_rows(8, conversational)))


data_case(
    "data_missing_columns",
    "columns 'question'/'answer'",
    lambda: Dataset.from_list([{"question": "q", "answer": "a"}] * 4),
    "columns",
    "prompt",
    quick=True,
)
data_case(
    "data_empty",
    "an empty Dataset with the right columns",
    lambda: Dataset.from_list(sorting_rows(2)).select([]),
    "empty",
)
data_case("data_none_dataset", "train_dataset=None", lambda: None, "train_dataset")
data_case(
    "data_python_list",
    "a Python list of rows instead of a Dataset",
    lambda: sorting_rows(8),
    "Dataset.from_list",
    quick=True,
    finding="7",
    raw_rows=True,
)
data_case(
    "data_dict_of_lists",
    "a dict of columns instead of a Dataset",
    lambda: {"prompt": ["a"], "completion": ["b"]},
    "Dataset",
)
data_case(
    "data_none_completion",
    "one completion is None",
    _rows_with(lambda r: r[:3] + [{"prompt": r[3]["prompt"], "completion": None}] + r[4:]),
    "row 3",
    "completion",
)
data_case(
    "data_mixed_prompts",
    "plain-text and conversational prompts mixed (an IterableDataset)",
    lambda: IterableDataset.from_generator(lambda: iter(sorting_rows(4, False) + sorting_rows(4))),
    "mix",
)
data_case(
    "data_int_completion",
    "completions are integers",
    lambda: Dataset.from_list([{"prompt": "sort: 2 1\n", "completion": 12}] * 4),
    "completion",
    "string",
)
data_case(
    "data_int_prompt",
    "prompts are integers",
    lambda: Dataset.from_list([{"prompt": 5, "completion": "x"}] * 4),
    "prompt",
)
data_case(
    "data_empty_response",
    "empty completions",
    _rows_with(lambda r: [x | {"completion": ""} for x in r], conversational=False),
    "empty",
    quick=True,
)
data_case(
    "data_blank_prompt",
    "whitespace-only prompts",
    _rows_with(lambda r: [x | {"prompt": "   "} for x in r], conversational=False),
    "prompt",
    "empty",
)
data_case(
    "data_huge_prompt",
    "prompts of 5000 characters with max_length=64 (truncation_mode='keep_end': cut from the left)",
    _rows_with(lambda r: [x | {"prompt": "sort: " + "1 " * 2500 + "\n"} for x in r], conversational=False),
    expect_ok=True,
    quick=True,
)
data_case(
    "data_huge_prompt_keep_start",
    "prompts of 5000 characters with max_length=64 and truncation_mode='keep_start' (every row dropped)",
    _rows_with(lambda r: [x | {"prompt": "sort: " + "1 " * 2500 + "\n"} for x in r], conversational=False),
    "No row",
    "max_prompt_length",
    truncation_mode="keep_start",
)
data_case(
    "data_image_column",
    "an 'images' column (vision-language data)",
    _rows_with(lambda r: [x | {"images": [None]} for x in r]),
    "images",
    "not supported",
)
data_case(
    "data_huge_prompt_truncated",
    "prompts of 5000 characters with max_prompt_length=32",
    _rows_with(lambda r: [x | {"prompt": "sort: " + "1 " * 2500 + "\n"} for x in r], conversational=False),
    expect_ok=True,
    max_prompt_length=32,
)
data_case(
    "data_message_no_content",
    "a message without 'content'",
    _rows_with(lambda r: [x | {"prompt": [{"role": "user", "text": "hi"}]} for x in r]),
    "content",
)
data_case(
    "data_multimodal_content",
    "message content is a list (multimodal)",
    _rows_with(lambda r: [x | {"prompt": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]} for x in r]),
    "content",
    "string",
)
data_case(
    "data_completion_two_turns",
    "a completion with two assistant messages",
    _rows_with(lambda r: [x | {"completion": x["completion"] * 2} for x in r]),
    "one assistant message",
)
data_case(
    "data_messages_end_with_user",
    "'messages' rows ending with a user turn",
    lambda: Dataset.from_list(
        [
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            }
        ]
        * 4
    ),
    "last message",
    "assistant",
)
data_case(
    "data_partial_synthetic",
    "a 'synthetic' column empty in half the rows",
    _rows_with(
        lambda r: [x | {"synthetic": "1 2 3" if i % 2 else None} for i, x in enumerate(r)], conversational=False
    ),
    "synthetic",
    "rows",
)
data_case(
    "data_full_synthetic",
    "a complete 'synthetic' column",
    _rows_with(lambda r: [x | {"synthetic": "1 2 3"} for x in r], conversational=False),
    expect_ok=True,
)
data_case("data_one_row", "a dataset of one row", lambda: Dataset.from_list(sorting_rows(1)), expect_ok=True)
data_case(
    "data_extra_columns",
    "extra unrelated columns",
    _rows_with(lambda r: [x | {"id": i, "meta": {"a": 1}} for i, x in enumerate(r)]),
    expect_ok=True,
)
data_case(
    "data_unknown_characters",
    "prompts of characters outside the vocabulary (unk tokens)",
    _rows_with(lambda r: [x | {"prompt": "排序: 3 1 2\n"} for x in r], conversational=False),
    expect_ok=True,
)


@case(DATA, "conversational rows and a tokenizer without a chat template")
def data_tokenizer_without_template(ctx):
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = None
    return expect_error(lambda: make_trainer(ctx.out, tokenizer=tokenizer).train(), "chat template")


@case(DATA, "an IterableDataset of the same rows (results compared with the Dataset run)", quick=True)
def data_iterable(ctx):
    rows = sorting_rows(8)
    iterable = IterableDataset.from_generator(lambda: iter(rows))
    return run_and_judge(ctx, baseline(), rows=iterable)


@case(DATA, "scorer_dataset without a 'prompt' column")
def data_scorer_dataset_no_prompt(ctx):
    def call():
        tokenizer = build_char_tokenizer()
        return TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=TSPINConfig(output_dir=str(ctx.out), **BASE),
            train_dataset=Dataset.from_list(sorting_rows(4)),
            processing_class=tokenizer,
            scorer=lambda responses, rows: 0.0,
            scorer_dataset=Dataset.from_list([{"question": "x"}]),
        )

    return expect_error(call, "scorer_dataset", "prompt")


# -- eval datasets -------------------------------------------------------------------------------------------------------

EVAL = "eval datasets"


def eval_case(name, action, eval_factory, *keywords, expect_ok=False, quick=False, finding=None, **overrides):
    def run(ctx):
        eval_dataset = eval_factory()
        if expect_ok:
            return run_and_judge(ctx, None, eval_dataset=eval_dataset, **overrides)
        return expect_error(lambda: make_trainer(ctx.out, eval_dataset=eval_dataset, **overrides), *keywords)

    add(name, EVAL, action, run, quick=quick, finding=finding)


def _eval():
    return Dataset.from_list(sorting_rows(4))


eval_case(
    "eval_key_traversal",
    "eval_dataset={'../../x': ...}",
    lambda: {"../../x": _eval()},
    "../../x",
    "file names",
    quick=True,
    finding="7",
)
eval_case("eval_key_slash", "eval_dataset={'a/b': ...}", lambda: {"a/b": _eval()}, "a/b")
eval_case("eval_key_empty", "eval_dataset={'': ...}", lambda: {"": _eval()}, "file names")
eval_case("eval_key_hidden", "eval_dataset={'.hidden': ...}", lambda: {".hidden": _eval()}, ".hidden")
eval_case("eval_key_absolute", "eval_dataset={'/etc/x': ...}", lambda: {"/etc/x": _eval()}, "/etc/x")
eval_case("eval_key_int", "eval_dataset={1: ...} (an integer key)", lambda: {1: _eval()}, "1")
eval_case(
    "eval_value_list", "eval_dataset={'a': [rows]} (a list)", lambda: {"a": sorting_rows(4)}, "Dataset.from_list"
)
eval_case("eval_value_empty", "eval_dataset={'a': empty Dataset}", lambda: {"a": _eval().select([])}, "empty")
eval_case(
    "eval_value_bad_columns",
    "eval_dataset={'a': Dataset with columns q/a}",
    lambda: {"a": Dataset.from_list([{"q": "x", "a": "y"}])},
    "columns",
)
eval_case(
    "eval_two_splits",
    "eval_dataset={'easy': ..., 'hard': ...} with evaluation every 4 steps",
    lambda: {"easy": _eval(), "hard": _eval()},
    expect_ok=True,
    eval_strategy="steps",
    eval_steps=4,
)
eval_case(
    "eval_empty_dict_with_strategy",
    "eval_dataset={} with eval_strategy='steps'",
    lambda: {},
    "eval_dataset",
    eval_strategy="steps",
    eval_steps=4,
)


# -- issue item 1: stale files and changed settings ------------------------------------------------------------------

STALE = "stale files and changed settings"


def _completed(folder):
    completed(folder)


def _interrupted(folder):
    interrupted(folder)


@case(STALE, "fresh run in the output_dir of a finished run, other data of the same size", quick=True, finding="1")
def stale_other_data_same_size(ctx):
    template("completed", _completed)
    ctx.use("completed")
    rows = sorting_rows(8, offset=3)
    return expect_error(lambda: make_trainer(ctx.out, rows=rows).train(), "another run", "data", "output_dir")


@case(STALE, "fresh run in the output_dir of a finished run, temperature 1.0 -> 0.5", finding="1")
def stale_other_temperature(ctx):
    template("completed", _completed)
    ctx.use("completed")
    return expect_error(lambda: make_trainer(ctx.out, temperature=0.5).train(), "another run", "temperature")


@case(STALE, "fresh run in the output_dir of a finished run, other data of another size", finding="1")
def stale_other_size(ctx):
    template("completed", _completed)
    ctx.use("completed")
    return expect_error(lambda: make_trainer(ctx.out, rows=sorting_rows(10)).train(), "another run", "data")


@case(STALE, "fresh identical run in the output_dir of a finished run (result vs a clean folder)", finding="1")
def stale_identical_rerun(ctx):
    template("completed", _completed)
    ctx.use("completed")
    return run_and_judge(ctx, baseline())


@case(STALE, "fresh identical run after run.json was deleted (the iteration files stay)", finding="1")
def stale_identity_deleted(ctx):
    template("completed", _completed)
    ctx.use("completed")
    (ctx.out / "self_play" / "run.json").unlink()
    return run_and_judge(ctx, baseline())


@case(STALE, "fresh identical run after run.json was overwritten with garbage", finding="1")
def stale_identity_garbage(ctx):
    template("completed", _completed)
    ctx.use("completed")
    (ctx.out / "self_play" / "run.json").write_text("{not json")
    return run_and_judge(ctx, baseline())


@case(STALE, "fresh run, other data, after run.json was replaced by a JSON list", finding="1")
def stale_identity_list_other_data(ctx):
    template("completed", _completed)
    ctx.use("completed")
    (ctx.out / "self_play" / "run.json").write_text("[1, 2]")
    rows = sorting_rows(8, offset=3)
    return run_and_judge(ctx, baseline(rows=sorting_rows(8, offset=3)), rows=rows)


@case(STALE, "fresh run whose run.json was copied from another run (forged identity)", finding="1")
def stale_identity_forged(ctx):
    template("completed", _completed)
    ctx.use("completed")
    other = ctx.tmp / "other"
    make_trainer(other, rows=sorting_rows(8, offset=3), num_iterations=1).train()
    shutil.copy(other / "self_play" / "run.json", ctx.out / "self_play" / "run.json")
    return expect_error(lambda: make_trainer(ctx.out).train(), "another run")


# one resume per identity field (and a few settings that must not matter)
RESUME_CHANGES: list[tuple[str, dict[str, Any], str]] = [
    ("objective", {"objective": "tspin_ref"}, "objective"),
    ("alpha", {"alpha": 0.5}, "alpha"),
    ("beta", {"beta": 0.2}, "beta"),
    ("beta_first_iteration", {"beta_first_iteration": 0.1}, "beta_first_iteration"),
    ("loss_type", {"loss_type": "exponential"}, "loss_type"),
    ("real_nll_weight", {"real_nll_weight": 0.1}, "real_nll_weight"),
    ("num_iterations", {"num_iterations": 3}, "num_iterations"),
    ("epochs_per_iteration", {"epochs_per_iteration": 2}, "epochs_per_iteration"),
    ("restart_each_iteration", {"restart_each_iteration": False}, "restart_each_iteration"),
    ("mix_previous_iteration", {"mix_previous_iteration": True}, "mix_previous_iteration"),
    ("reuse_proto", {"reuse_proto_as_first_synthetic": False}, "reuse_proto_as_first_synthetic"),
    ("max_length", {"max_length": 48}, "max_length"),
    ("max_prompt_length", {"max_prompt_length": 30}, "max_prompt_length"),
    ("truncation_mode", {"truncation_mode": "keep_start"}, "truncation_mode"),
    ("seed", {"seed": 7}, "seed"),
    ("data_seed", {"data_seed": 7}, "data_seed"),
    ("learning_rate", {"learning_rate": 5e-4}, "learning_rate"),
    ("lr_scheduler_type", {"lr_scheduler_type": "constant"}, "lr_scheduler_type"),
    ("warmup_steps", {"warmup_steps": 2}, "warmup_steps"),
    ("optim", {"optim": "adamw_torch"}, "optim"),
    ("weight_decay", {"weight_decay": 0.1}, "weight_decay"),
    ("max_grad_norm", {"max_grad_norm": 0.5}, "max_grad_norm"),
    ("per_device_train_batch_size", {"per_device_train_batch_size": 4}, "per_device_train_batch_size"),
    ("gradient_accumulation_steps", {"gradient_accumulation_steps": 2}, "gradient_accumulation_steps"),
    ("temperature", {"temperature": 0.5}, "temperature"),
    ("top_p", {"top_p": 0.9}, "top_p"),
    ("top_k", {"top_k": 5}, "top_k"),
    ("max_completion_length", {"max_completion_length": 8}, "max_new_tokens"),
    ("generation_kwargs", {"generation_kwargs": {"repetition_penalty": 1.1}}, "repetition_penalty"),
    ("data_same_size", {"rows": sorting_rows(8, offset=3)}, "data"),
    ("data_other_size", {"rows": sorting_rows(10)}, "data"),
    ("initial_model", {"model_seed": 1}, "initial_model"),
    ("tokenizer", {"chat_template_suffix": " "}, "tokenizer"),
]
# Settings outside the run identity: a resume with them changed must give the uninterrupted run's model.
# Settings outside the run identity: a resume with them changed must give the uninterrupted run's model. Interrupted
# at step 3 (inside iteration 0), so that iteration 1 is generated after the resume.
RESUME_HARMLESS: list[tuple[str, dict[str, Any]]] = [
    ("logging_steps", {"logging_steps": 2}),
    ("save_steps", {"save_steps": 2}),
    ("generation_batch_size", {"generation_batch_size": 8}),
    ("logps_batch_size", {"logps_batch_size": 1}),
]


def _interrupted3(folder):
    interrupted(folder, stop_after=3)


def _resume_with(ctx: Ctx, change: dict[str, Any]) -> TSPINTrainer:
    change = dict(change)
    tokenizer = build_char_tokenizer()
    if "chat_template_suffix" in change:
        tokenizer.chat_template += change.pop("chat_template_suffix")
    model = build_tiny_model(tokenizer, seed=change.pop("model_seed", 0))
    return make_trainer(ctx.out, model=model, tokenizer=tokenizer, **(CHECKPOINT_EVERY_STEP | change))


def resume_changed(change: dict[str, Any], keyword: str) -> Callable[[Ctx], Verdict]:
    def run(ctx):
        template("interrupted", _interrupted)
        ctx.use("interrupted")
        return expect_error(
            lambda: _resume_with(ctx, change).train(resume_from_checkpoint=True), "Cannot resume", keyword
        )

    return run


def resume_harmless(change: dict[str, Any]) -> Callable[[Ctx], Verdict]:
    def run(ctx):
        template("interrupted3", _interrupted3)
        ctx.use("interrupted3")
        try:
            trainer = _resume_with(ctx, change)
            trainer.train(resume_from_checkpoint=True)
        except Exception as error:  # noqa: BLE001
            return classify_error(error, ("Cannot resume", next(iter(change))))
        return judge_run(ctx, trainer, baseline())

    return run


for _label, _change, _keyword in RESUME_CHANGES:
    add(
        f"resume_changed_{_label}",
        "resume with a changed setting",
        f"interrupted at step 6, resumed with {_label} changed",
        resume_changed(_change, _keyword),
        quick=_label in ("temperature", "data_same_size", "num_iterations"),
        finding="1",
    )
for _label, _change in RESUME_HARMLESS:
    add(
        f"resume_changed_{_label}",
        "resume with a changed setting",
        f"interrupted at step 3, resumed with {_label} changed (outside the run identity)",
        resume_harmless(_change),
    )


# -- issue item 4 / self_play files ----------------------------------------------------------------------------------

FILES = "files in self_play/"


def _forge(data: Path, rows: list, meta_update: dict | None = None) -> None:
    """Rewrite an iteration file with `rows` and a sidecar whose checksum and count match (a forged file)."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    data.write_text(text)
    meta_path = data.with_name(data.name.replace(".jsonl", ".meta.json"))
    meta = json.loads(meta_path.read_text())
    meta.update(sha256=sha256_hex(text.encode()), count=len(rows), **(meta_update or {}))
    meta_path.write_text(json.dumps(meta))


def _iteration_file(ctx: Ctx, iteration: int = 1) -> Path:
    return ctx.out / "self_play" / f"iteration_{iteration}" / "train.jsonl"


def corrupt_then_resume(corrupt: Callable[[Ctx], None], *keywords: str) -> Callable[[Ctx], Verdict]:
    """Interrupted inside iteration 1, the iteration-1 file damaged, resumed: must stop and name the way out."""

    def run(ctx):
        template("interrupted", _interrupted)
        ctx.use("interrupted")
        corrupt(ctx)
        return expect_error(
            lambda: make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP).train(resume_from_checkpoint=True), *keywords
        )

    return run


def _rows(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


ITER_CORRUPTIONS = [
    (
        "truncated",
        "iteration-1 responses truncated by 20 bytes",
        lambda c: _iteration_file(c).write_text(_iteration_file(c).read_text()[:-20]),
        True,
    ),
    ("deleted", "iteration-1 responses deleted", lambda c: _iteration_file(c).unlink(), False),
    (
        "meta_list",
        "iteration-1 sidecar replaced by a JSON list",
        lambda c: _iteration_file(c).with_name("train.meta.json").write_text("[1, 2]"),
        False,
    ),
    (
        "meta_garbage",
        "iteration-1 sidecar is binary garbage",
        lambda c: _iteration_file(c).with_name("train.meta.json").write_bytes(os.urandom(64)),
        False,
    ),
    (
        "oov_ids",
        "iteration-1 synthetic ids out of the vocabulary, checksum recomputed",
        lambda c: _forge(_iteration_file(c), [r | {"synthetic_ids": [10**6]} for r in _rows(_iteration_file(c))]),
        True,
    ),
    (
        "float_ids",
        "iteration-1 synthetic ids are floats, checksum recomputed",
        lambda c: _forge(_iteration_file(c), [r | {"synthetic_ids": [1.5, 2.0]} for r in _rows(_iteration_file(c))]),
        False,
    ),
    (
        "negative_ids",
        "iteration-1 proto ids negative, checksum recomputed",
        lambda c: _forge(_iteration_file(c), [r | {"proto_ids": [-1]} for r in _rows(_iteration_file(c))]),
        False,
    ),
    (
        "rows_not_objects",
        "iteration-1 rows replaced by lists, checksum recomputed",
        lambda c: _forge(_iteration_file(c), [[1, 2] for _ in _rows(_iteration_file(c))]),
        False,
    ),
    (
        "fewer_rows",
        "iteration-1 file with 7 of 8 rows, checksum and count recomputed",
        lambda c: _forge(_iteration_file(c), _rows(_iteration_file(c))[:7]),
        False,
    ),
    (
        "foreign_identity",
        "iteration-1 file stamped with another run's identity, checksum right",
        lambda c: _forge(_iteration_file(c), _rows(_iteration_file(c)), {"identity": "0" * 64}),
        False,
    ),
    (
        "other_iteration",
        "iteration-0 file copied over iteration 1 (its checksum is right)",
        lambda c: [
            shutil.copy(_iteration_file(c, 0), _iteration_file(c)),
            shutil.copy(
                _iteration_file(c, 0).with_name("train.meta.json"), _iteration_file(c).with_name("train.meta.json")
            ),
        ],
        False,
    ),
]
for _label, _action, _corrupt, _quick in ITER_CORRUPTIONS:
    add(
        f"iteration_file_{_label}",
        FILES,
        f"interrupted at step 6 (inside iteration 1), {_action}, resume_from_checkpoint=True",
        corrupt_then_resume(_corrupt, "iteration 1", "resume from the checkpoint"),
        quick=_quick,
        finding="4" if _label == "truncated" else "6",
    )


@case(FILES, "iteration-1 file truncated, resumed from checkpoint-4 (the iteration's start)", finding="4")
def iteration_file_truncated_resume_at_start(ctx):
    template("interrupted", _interrupted)
    ctx.use("interrupted")
    data = _iteration_file(ctx)
    data.write_text(data.read_text()[:-20])
    return run_and_judge(ctx, baseline(), resume=str(ctx.out / "checkpoint-4"), **CHECKPOINT_EVERY_STEP)


@case(FILES, "interrupted at step 3 (iteration 0), iteration-0 file truncated, resumed: iteration 0 has begun")
def iteration0_file_truncated_mid_iteration(ctx):
    template("interrupted3", _interrupted3)
    ctx.use("interrupted3")
    data = _iteration_file(ctx, 0)
    data.write_text(data.read_text()[:-20])
    return expect_error(
        lambda: make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP).train(resume_from_checkpoint=True),
        "iteration 0",
        "resume from the checkpoint",
    )


@case(FILES, "finished run (tspin_ref), iteration-0 ref log-probs set to NaN with checksum right, rerun identical")
def iteration_file_nan_logps(ctx):
    template("completed_ref", lambda f: completed(f, objective="tspin_ref", num_iterations=1))
    ctx.use("completed_ref")
    data = _iteration_file(ctx, 0)
    _forge(data, [r | {"ref_real_logps": float("nan")} for r in _rows(data)])
    return run_and_judge(
        ctx, baseline(objective="tspin_ref", num_iterations=1), objective="tspin_ref", num_iterations=1
    )


@case(
    FILES,
    "interrupted at step 6, logs.jsonl ends with a truncated line, resumed (every step logged once)",
    finding="7",
)
def logs_truncated_then_resume(ctx):
    template("interrupted", _interrupted)
    ctx.use("interrupted")
    logs = ctx.out / "self_play" / "logs.jsonl"
    with open(logs, "a") as f:
        f.write('{"loss": 0.5, "st')
    verdict = run_and_judge(ctx, baseline(), resume=True, **CHECKPOINT_EVERY_STEP)
    steps = [r.get("step") for r in map(_try_json, logs.read_text().splitlines()) if r and "loss" in r]
    if verdict.outcome != DEFECT and len(steps) != len(set(steps)):
        return Verdict(DEFECT, f"steps logged twice after the resume: {steps}")
    verdict.detail += f"; loss lines for steps {steps}"
    return verdict


def _try_json(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


@case(FILES, "iterations.jsonl and scores.jsonl replaced by binary garbage, resumed")
def records_garbage_then_resume(ctx):
    template("interrupted", _interrupted)
    ctx.use("interrupted")
    (ctx.out / "self_play" / "iterations.jsonl").write_bytes(os.urandom(300))
    (ctx.out / "self_play" / "scores.jsonl").write_bytes(os.urandom(300))
    return run_and_judge(ctx, baseline(), resume=True, **CHECKPOINT_EVERY_STEP)


@case(FILES, "tspin-plot on a finished run whose logs.jsonl ends with a truncated line", finding="7")
def plot_truncated_logs(ctx):
    template("completed", _completed)
    ctx.use("completed")
    with open(ctx.out / "self_play" / "logs.jsonl", "a") as f:
        f.write('{"loss": 0.5, "st')
    from tspin_trl.plot import plot_run

    try:
        written = plot_run(str(ctx.out))
    except Exception as error:  # noqa: BLE001
        return Verdict(DEFECT, f"crashed: {error_text(error)}")
    return judge_plot(ctx, written)


def judge_plot(ctx, written):
    if not written:
        return Verdict(DEFECT, "no figure written")
    text = ctx.warnings_text()
    return Verdict(WARNED if text else SURVIVED, text.splitlines()[0] if text else f"{len(written)} files written")


# -- chunk stores (a generation pass killed midway) ----------------------------------------------------------------

CHUNKS = "generation chunks"


def _killed_mid_iteration1(folder: Path) -> None:
    """A worker SIGKILLed after writing the first chunk of iteration 1's generation (step 4, checkpoint-4 saved)."""
    ctx = Ctx(folder, [])
    run = start_worker(ctx, fault={"kind": "kill_after_chunk_write", "n": 3}, overrides=CHECKPOINT_EVERY_STEP)
    result = run.wait()
    if not result.get("killed"):
        raise RuntimeError(f"the worker was not killed: {result}")


def _chunk_dir(ctx: Ctx) -> Path:
    return ctx.out / "self_play" / "iteration_1" / "train_chunks"


def _rewrite_manifest(directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["chunks"] = {
        k: sha256_hex((directory / f"chunk_{int(k):05d}.jsonl").read_bytes()) for k in manifest["chunks"]
    }
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    (directory / "manifest.json").write_text(json.dumps({**body, "sha256": json_digest(body)}))


CHUNK_CORRUPTIONS = [
    ("intact", "left as the killed run left them", lambda d: None, True),
    (
        "manifest_garbage",
        "manifest.json replaced by '{not json'",
        lambda d: (d / "manifest.json").write_text("{not json"),
        False,
    ),
    (
        "manifest_list",
        "manifest.json replaced by a JSON list",
        lambda d: (d / "manifest.json").write_text("[1]"),
        False,
    ),
    (
        "chunk_forged_length",
        "chunk 0 forged: right prompts, empty responses, manifest not updated",
        lambda d: (d / "chunk_00000.jsonl").write_text(
            "".join(
                json.dumps([json.loads(line)[0], []]) + "\n"
                for line in (d / "chunk_00000.jsonl").read_text().splitlines()
            )
        ),
        True,
    ),
    (
        "chunk_oov_manifest_fixed",
        "chunk 0 ids out of vocabulary, manifest checksums recomputed",
        lambda d: [
            (d / "chunk_00000.jsonl").write_text(
                "".join(
                    json.dumps([json.loads(line)[0], [10**6]]) + "\n"
                    for line in (d / "chunk_00000.jsonl").read_text().splitlines()
                )
            ),
            _rewrite_manifest(d),
        ],
        False,
    ),
    (
        "chunk_garbage",
        "chunk 0 replaced by binary garbage",
        lambda d: (d / "chunk_00000.jsonl").write_bytes(os.urandom(100)),
        False,
    ),
    (
        "chunk_wrong_prompts",
        "chunk 0 holds other prompt indices, manifest recomputed",
        lambda d: [
            (d / "chunk_00000.jsonl").write_text("".join(json.dumps([99 + i, [10]]) + "\n" for i in range(4))),
            _rewrite_manifest(d),
        ],
        False,
    ),
    (
        "manifest_other_key",
        "manifest.json of another pass (other key, checksum right)",
        lambda d: [
            (d / "manifest.json").write_text(
                json.dumps({"key": "x", "chunks": {}, "sha256": json_digest({"key": "x", "chunks": {}})})
            )
        ],
        False,
    ),
]


def chunk_case(corrupt: Callable[[Path], None]) -> Callable[[Ctx], Verdict]:
    def run(ctx):
        template("killed_iter1", _killed_mid_iteration1)
        ctx.use("killed_iter1")
        directory = _chunk_dir(ctx)
        if not (directory / "chunk_00000.jsonl").exists():
            return Verdict(DEFECT, f"the killed run left no chunk in {directory}")
        corrupt(directory)
        return run_and_judge(ctx, baseline(), resume=True, **CHECKPOINT_EVERY_STEP)

    return run


for _label, _action, _corrupt, _quick in CHUNK_CORRUPTIONS:
    add(
        f"chunks_{_label}",
        CHUNKS,
        f"SIGKILL after iteration 1's first generation chunk; chunks {_action}; resume_from_checkpoint=True",
        chunk_case(_corrupt),
        quick=_quick,
        finding="6",
        timeout=150,
    )


# -- the proto cache ------------------------------------------------------------------------------------------------------

CACHE = "proto cache"


def _cached_once(folder: Path) -> None:
    completed(folder, num_iterations=1)


def _entry(ctx: Ctx) -> tuple[Path, Path]:
    data = next(ctx.cache.glob("*.jsonl"))
    return data, data.with_suffix(".json")


def _forge_entry(ctx: Ctx, change: Callable[[list], list]) -> None:
    data, meta = _entry(ctx)
    rows = change([json.loads(line) for line in data.read_text().splitlines()])
    text = "".join(json.dumps(row) + "\n" for row in rows)
    data.write_text(text)
    record = json.loads(meta.read_text())
    record.update(sha256=sha256_hex(text.encode()), count=len(rows))
    meta.write_text(json.dumps(record))


CACHE_CORRUPTIONS = [
    (
        "checksum_wrong",
        "one byte of the data changed, sidecar untouched",
        lambda c: _entry(c)[0].write_text(_entry(c)[0].read_text().replace("]", " ]", 1)),
        False,
    ),
    (
        "truncated",
        "data truncated by 10 bytes",
        lambda c: _entry(c)[0].write_text(_entry(c)[0].read_text()[:-10]),
        False,
    ),
    ("meta_list", "sidecar replaced by a JSON list", lambda c: _entry(c)[1].write_text("[1, 2]"), True),
    ("meta_garbage", "sidecar replaced by binary garbage", lambda c: _entry(c)[1].write_bytes(os.urandom(50)), False),
    ("meta_missing", "sidecar deleted", lambda c: _entry(c)[1].unlink(), False),
    (
        "oov_ids",
        "ids 10**6 (out of vocabulary), checksum recomputed",
        lambda c: _forge_entry(c, lambda r: [[10**6]] + r[1:]),
        True,
    ),
    ("negative_ids", "ids -1, checksum recomputed", lambda c: _forge_entry(c, lambda r: [[-1]] + r[1:]), False),
    ("float_ids", "ids 1.5, checksum recomputed", lambda c: _forge_entry(c, lambda r: [[1.5]] + r[1:]), False),
    (
        "string_ids",
        "a response is the string 'abc', checksum recomputed",
        lambda c: _forge_entry(c, lambda r: ["abc"] + r[1:]),
        False,
    ),
    (
        "nested_ids",
        "a response is [[1, 2]], checksum recomputed",
        lambda c: _forge_entry(c, lambda r: [[[1, 2]]] + r[1:]),
        False,
    ),
    (
        "bool_ids",
        "a response is [true, false], checksum recomputed",
        lambda c: _forge_entry(c, lambda r: [[True, False]] + r[1:]),
        False,
    ),
    (
        "fewer_rows",
        "7 of 8 responses, checksum and count recomputed",
        lambda c: _forge_entry(c, lambda r: r[:7]),
        False,
    ),
    ("empty_data", "data file emptied, checksum and count recomputed", lambda c: _forge_entry(c, lambda r: []), False),
]


def cache_case(corrupt: Callable[[Ctx], None]) -> Callable[[Ctx], Verdict]:
    def run(ctx):
        template("cached", _cached_once)
        shutil.copytree(_TEMPLATES["cached"] / "cache", ctx.cache)
        corrupt(ctx)
        verdict = run_and_judge(ctx, baseline(num_iterations=1), num_iterations=1)
        return verdict

    return run


for _label, _action, _corrupt, _quick in CACHE_CORRUPTIONS:
    add(
        f"cache_{_label}",
        CACHE,
        f"proto cache entry: {_action}; a new run with the same model and data",
        cache_case(_corrupt),
        quick=_quick,
        finding="6",
    )


@case(CACHE, "proto cache entry of another model renamed to this run's key (checksum and count right)", finding="6")
def cache_entry_of_another_key(ctx):
    template("cached", _cached_once)
    # the entry this run would use
    shutil.copytree(_TEMPLATES["cached"] / "cache", ctx.tmp / "mine")
    mine = next((ctx.tmp / "mine").glob("*.jsonl"))
    # another model's entry, for the same prompts and settings
    tokenizer = build_char_tokenizer()
    os.environ["TSPIN_TRL_CACHE"] = str(ctx.tmp / "theirs")
    make_trainer(
        ctx.tmp / "other", model=build_tiny_model(tokenizer, seed=5), tokenizer=tokenizer, num_iterations=1
    ).train()
    os.environ["TSPIN_TRL_CACHE"] = str(ctx.cache)
    theirs = next((ctx.tmp / "theirs").glob("*.jsonl"))
    ctx.cache.mkdir()
    shutil.copy(theirs, ctx.cache / mine.name)
    shutil.copy(theirs.with_suffix(".json"), ctx.cache / mine.with_suffix(".json").name)
    return run_and_judge(ctx, baseline(num_iterations=1), num_iterations=1)


@case(CACHE, "a model differing from the cached one in one weight in the middle of a tensor", quick=True, finding="7")
def cache_fingerprint_middle_weight(ctx):
    template("cached", _cached_once)
    shutil.copytree(_TEMPLATES["cached"] / "cache", ctx.cache)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer)
    with torch.no_grad():
        weight = model.model.layers[0].mlp.up_proj.weight
        weight.view(-1)[weight.numel() // 2] += 1e-3
    try:
        trainer = make_trainer(ctx.out, model=model, tokenizer=tokenizer, num_iterations=1)
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return Verdict(DEFECT, f"crashed: {error_text(error)}")
    if "proto/train" not in trainer.self_play.generation_stats:
        return Verdict(DEFECT, "silent wrong result: the other model's cached proto responses were used")
    return Verdict(
        SURVIVED,
        "cache miss: proto responses sampled from this model",
        "generation passes: " + ", ".join(sorted(trainer.self_play.generation_stats)),
    )


@case(CACHE, "use_proto_cache=False (result vs the cached run)")
def cache_off(ctx):
    return run_and_judge(ctx, baseline(), use_proto_cache=False)


@case(CACHE, "proto_cache_dir points at a regular file")
def cache_dir_is_file(ctx):
    ctx.tmp.joinpath("afile").write_text("x")
    target = str(ctx.tmp / "afile")
    return expect_error(lambda: make_trainer(ctx.out, proto_cache_dir=target).train(), target)


@case(CACHE, "a second run with generation_batch_size=8 after one with 4 filled the cache (vs an empty cache)")
def cache_batch_size_dependence(ctx):
    template("completed", _completed)
    shutil.copytree(_TEMPLATES["completed"] / "cache", ctx.cache)
    return run_and_judge(
        ctx,
        baseline(generation_batch_size=8),
        generation_batch_size=8,
        note="the proto responses a run trains on must not depend on what is cached",
    )


# -- checkpoints and resume_from_checkpoint -------------------------------------------------------------------------

CKPT = "checkpoints and resume_from_checkpoint"


def resume_case(prepare: Callable[[Ctx], Any], *keywords: str, expect_ok: bool = False) -> Callable[[Ctx], Verdict]:
    def run(ctx):
        template("interrupted", _interrupted)
        ctx.use("interrupted")
        target = prepare(ctx)
        if expect_ok:
            return run_and_judge(ctx, baseline(), resume=target, **CHECKPOINT_EVERY_STEP)
        return expect_error(
            lambda: make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP).train(resume_from_checkpoint=target), *keywords
        )

    return run


def _half_written(ctx):
    (ctx.out / "checkpoint-99").mkdir()
    return True


def _no_weights(ctx):
    shutil.copytree(ctx.out / "checkpoint-6", ctx.out / "checkpoint-50")
    (ctx.out / "checkpoint-50" / "model.safetensors").unlink()
    return True


def _state_garbage(ctx):
    shutil.copytree(ctx.out / "checkpoint-6", ctx.out / "checkpoint-7")
    (ctx.out / "checkpoint-7" / "trainer_state.json").write_text("{garbage")
    return True


def _truncated_weights(ctx):
    path = ctx.out / "checkpoint-6" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    return True


def _garbage_optimizer(ctx):
    (ctx.out / "checkpoint-6" / "optimizer.pt").write_bytes(os.urandom(1000))
    return True


def _other_run_checkpoint(ctx):
    other = ctx.tmp / "other"
    make_trainer(other, rows=sorting_rows(8, offset=3), callbacks=[StopAfter(6)], **CHECKPOINT_EVERY_STEP).train()
    shutil.rmtree(ctx.out)
    ctx.out.mkdir()
    return str(other / "checkpoint-6")


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
    resume_case(lambda c: str(c.out / "self_play" / "run.json"), "run.json"),
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
    resume_case(lambda c: str(c.out / "checkpoint-4"), expect_ok=True),
)


# -- SIGKILL at several points ----------------------------------------------------------------------------------------

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


@case(KILL, "SIGKILL in training step 6 with objective='spin' and mix_previous_iteration, resume=True", timeout=150)
def kill_mid_step_spin_mixing(ctx):
    overrides = {"objective": "spin", "mix_previous_iteration": True}
    return killed_then_resumed(ctx, {"kind": "kill_in_step", "n": 6}, True, baseline(**overrides), **overrides)


@case(KILL, "SIGKILL from outside once checkpoint-3 exists (steps slowed to 0.3 s), resume=True", timeout=150)
def kill_from_outside(ctx):
    run = start_worker(ctx, fault={"kind": "slow_steps", "seconds": 0.3}, overrides=CHECKPOINT_EVERY_STEP)
    deadline = time.time() + WORKER_TIMEOUT
    while not (ctx.out / "checkpoint-3" / "trainer_state.json").exists() and time.time() < deadline:
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


@case(KILL, "output_dir read-only (chmod 555, no capability to bypass it)", timeout=150)
def readonly_output_dir(ctx):
    return _read_only(ctx, readonly="out")


@case(KILL, "proto cache folder read-only (chmod 555, no capability to bypass it)", timeout=150)
def readonly_cache(ctx):
    return _read_only(ctx, readonly="cache")


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


# -- concurrency --------------------------------------------------------------------------------------------------------

CONC = "concurrency"


def _write_many(path: str, tag: str, count: int) -> None:
    for i in range(count):
        atomic_write(path, f"{tag} {i}\n")


@case(CONC, "two processes each writing one file 5000 times through atomic_write", finding="3")
def concurrent_atomic_writes(ctx):
    path = str(ctx.tmp / "shared.jsonl")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(path, tag, 5000)) for tag in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    codes = [writer.exitcode for writer in writers]
    leftovers = list(ctx.tmp.glob("*.tmp"))
    if codes != [0, 0] or leftovers:
        return Verdict(DEFECT, f"exit codes {codes}, temporary files left: {leftovers}")
    return Verdict(SURVIVED, "10000 writes, no collision, no temporary file left")


@case(
    CONC,
    "two trainers started on one output_dir (the first holds after step 1 until the second ends)",
    quick=True,
    finding="3",
    timeout=200,
)
def concurrent_same_output_dir(ctx):
    release = ctx.tmp / "release"
    first = start_worker(ctx, "first", fault={"kind": "hold_until", "path": str(release)})
    lock = ctx.out / "self_play" / "run.lock"
    deadline = time.time() + WORKER_TIMEOUT
    while not lock.exists() and time.time() < deadline and first.process.poll() is None:
        time.sleep(0.05)
    second = start_worker(ctx, "second")
    second_result = second.wait()
    release.touch()  # the first run holds after its first step until the second has ended
    first_result = first.wait()
    if not first_result.get("ok"):
        return Verdict(DEFECT, f"the first run failed: {first_result.get('error')}")
    diff = max_diff(first.params(), baseline())
    if diff > TOL:
        return Verdict(DEFECT, f"the first run's model differs from an undisturbed one by {diff:.3g}")
    if second_result.get("ok"):
        return Verdict(DEFECT, "both runs trained in one output_dir")
    verdict = classify_error(
        RuntimeError(second_result.get("error", "")), ("OutputDirLockedError", f"process {first_result['pid']}")
    )
    verdict.detail = f"first run unharmed (max diff {diff:.1e})"
    return verdict


@case(
    CONC,
    "two trainers with one proto cache, other output_dirs, started together (generate slowed to 1 s)",
    finding="3",
    timeout=240,
)
def concurrent_same_cache(ctx):
    runs = [
        start_worker(ctx, name, out=ctx.tmp / name, fault={"kind": "slow_generate", "seconds": 1.0})
        for name in ("a", "b")
    ]
    results = [run.wait(200) for run in runs]
    if not all(r.get("ok") for r in results):
        return Verdict(DEFECT, f"a run failed: {[r.get('error') for r in results]}")
    diffs = [max_diff(run.params(), baseline()) for run in runs]
    if max(diffs) > TOL:
        return Verdict(DEFECT, f"a model differs from an undisturbed run by {max(diffs):.3g}")
    proto = [("proto/train" in r["passes"]) for r in results]
    detail = f"generate calls {[r['generate_calls'] for r in results]}, proto generated by {proto}"
    if all(proto):
        return Verdict(SURVIVED, "both correct, but both generated the proto responses (duplicated work)", detail)
    return Verdict(SURVIVED, "both correct; the proto responses were generated once and shared", detail)


@case(CONC, "run.lock held by a live process on this host", quick=True, finding="3")
def lock_live_process(ctx):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = ctx.out / "self_play" / "run.lock"
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "started": time.time()}))
        return expect_error(
            lambda: make_trainer(ctx.out).train(), "OutputDirLockedError", f"process {sleeper.pid}", "run.lock"
        )
    finally:
        sleeper.kill()
        sleeper.wait()


@case(CONC, "run.lock held by a process on another host", finding="3")
def lock_other_host(ctx):
    lock = ctx.out / "self_play" / "run.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 1234, "host": "node-17", "started": time.time()}))
    return expect_error(lambda: make_trainer(ctx.out).train(), "node-17", "run.lock")


@case(CONC, "run.lock left by a dead process (stale)", finding="3")
def lock_stale(ctx):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = ctx.out / "self_play" / "run.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": time.time()}))
    return run_and_judge(ctx, baseline())


@case(CONC, "run.lock is binary garbage")
def lock_garbage(ctx):
    lock = ctx.out / "self_play" / "run.lock"
    lock.parent.mkdir(parents=True)
    lock.write_bytes(os.urandom(40))
    return run_and_judge(ctx, baseline())


@case(CONC, "a proto cache entry lock left by a dead process (stale)", finding="3")
def cache_lock_stale(ctx):
    template("cached", _cached_once)
    key = next((_TEMPLATES["cached"] / "cache").glob("*.jsonl")).stem
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ctx.cache.mkdir()
    (ctx.cache / f"{key}.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    return run_and_judge(ctx, baseline(num_iterations=1), num_iterations=1)


@case(CONC, "a proto cache entry lock naming a live process that is not generating (e.g. a reused pid)", timeout=45)
def cache_lock_live_unrelated(ctx):
    template("cached", _cached_once)
    key = next((_TEMPLATES["cached"] / "cache").glob("*.jsonl")).stem
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        ctx.cache.mkdir()
        (ctx.cache / f"{key}.lock").write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))
        return run_and_judge(ctx, baseline(num_iterations=1), num_iterations=1)
    finally:
        sleeper.kill()
        sleeper.wait()


@case(CONC, "a first run crashed on a typo (generation_kwargs), the corrected run started in the same output_dir")
def rerun_after_typo(ctx):
    with contextlib.suppress(Exception):
        make_trainer(ctx.out, generation_kwargs={"nonsense_kw": 1}).train()
    try:
        trainer = make_trainer(ctx.out)
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("another run", "output_dir"))
    return judge_run(ctx, trainer, baseline())


# -- scorers ------------------------------------------------------------------------------------------------------------

SCORE = "scorers"


def scorer_case(scorer: Callable, expect_warning: str) -> Callable[[Ctx], Verdict]:
    def run(ctx):
        tokenizer = build_char_tokenizer()
        try:
            trainer = TSPINTrainer(
                model=build_tiny_model(tokenizer),
                args=TSPINConfig(output_dir=str(ctx.out), **(BASE | {"save_strategy": "epoch"})),
                train_dataset=Dataset.from_list(sorting_rows(8)),
                processing_class=tokenizer,
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
        if kept != ["checkpoint-4", "checkpoint-8"]:
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
    def call():
        tokenizer = build_char_tokenizer()
        return TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=TSPINConfig(output_dir=str(ctx.out), **BASE),
            train_dataset=Dataset.from_list(sorting_rows(4)),
            processing_class=tokenizer,
            scorer=lambda r, rows: 0.0,
        )

    return expect_error(call, "scorer_dataset")


# ---- the campaign -----------------------------------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """A case ran past its timeout (BaseException: no `except Exception` in the code under test swallows it)."""


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def run_case(item: Case) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"{item.name}-", dir=SESSION))
    handler = _Records()
    logging.getLogger().addHandler(handler)
    os.environ["TSPIN_TRL_CACHE"] = str(folder / "cache")

    def on_alarm(signum, frame):
        raise CaseTimeout(f"no result within {item.timeout} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(item.timeout)
    start = time.perf_counter()
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            verdict = item.run(Ctx(folder, handler.records))
    except CaseTimeout as error:
        verdict = Verdict(DEFECT, f"hang: {error}")
    except Exception as error:  # noqa: BLE001 - a bug of the case itself is reported, not hidden
        verdict = Verdict(DEFECT, f"campaign error: {error_text(error)}", traceback.format_exc()[-1500:])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        logging.getLogger().removeHandler(handler)
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "name": item.name,
        "category": item.category,
        "finding": item.finding,
        "action": item.action,
        "outcome": verdict.outcome,
        "message": verdict.message[:400],
        "detail": verdict.detail[:400],
        "seconds": round(time.perf_counter() - start, 2),
    }


def markdown_tables(report: dict[str, Any]) -> str:
    """The cases of a results JSON as one markdown table per category (for docs/reliability.md)."""
    lines = []
    categories = dict.fromkeys(c["category"] for c in report["cases"])
    for category in categories:
        cases = [c for c in report["cases"] if c["category"] == category]
        lines += [f"### {category} ({len(cases)})", "", "| case | what was done | outcome | message (excerpt) |"]
        lines.append("| --- | --- | --- | --- |")
        for c in cases:
            message = c["message"].replace("|", "\\|").replace("\n", " ")
            message = message if len(message) <= 160 else message[:157] + "..."
            outcome = f"**{c['outcome']}**" if c["outcome"] == DEFECT else c["outcome"]
            action = c["action"].replace("|", "\\|")
            lines.append(f"| `{c['name']}` | {action} | {outcome} | {message} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset of every category (< 3 minutes)")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--out", default=None, help="where to write the JSON (default: bench/results/faults.json)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--table", default=None, help="print a results JSON as markdown tables and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_tables(json.loads(Path(args.table).read_text())))
        return 0
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    cases = [c for c in CASES if (c.quick or not args.quick) and (args.only is None or args.only in c.name)]
    if args.list:
        for item in cases:
            print(f"{item.category:40s} {item.name:45s} {item.action}")
        print(f"{len(cases)} cases")
        return 0
    global SESSION
    torch.set_num_threads(1)
    logging.getLogger("tspin_trl").setLevel(logging.WARNING)
    SESSION = Path(tempfile.mkdtemp(prefix="tspin-faults-"))
    out = Path(args.out or ROOT / "bench" / "results" / ("faults_quick.json" if args.quick else "faults.json"))
    start = time.perf_counter()
    results = []
    try:
        for index, item in enumerate(cases, 1):
            result = run_case(item)
            results.append(result)
            print(
                f"[{index:3d}/{len(cases)}] {result['outcome']:24s} {item.name} ({result['seconds']} s): "
                f"{result['message'][:110]}",
                flush=True,
            )
    finally:
        shutil.rmtree(SESSION, ignore_errors=True)
    totals = {"tried": len(results)} | {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
    report = {
        "campaign": "bench/faults.py" + (" --quick" if args.quick else ""),
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread",
        "seconds": round(time.perf_counter() - start, 1),
        "totals": totals,
        "cases": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(totals), f"in {report['seconds']} s ->", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
