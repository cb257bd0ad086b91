"""The runs of the reproduction: settings, methods (rows), the warm start, and one row (SFT or self-play) from it.

Every row continues from the warm start and is measured on the held-out split after every iteration (the warm start's
own measurement is the point before the first iteration), and on the validation split after the last one (the
learning rate is chosen on that). The model is a Llama built from a config with a character tokenizer: nothing here
downloads anything, on a CPU or on a GPU machine without a network.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any


os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # 2 shared cores: spinning OpenMP threads cost a lot
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DATASETS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import warnings  # noqa: E402

import torch  # noqa: E402

from .task import Evaluator, make_splits, quantiles  # noqa: E402


warnings.filterwarnings("ignore")


@dataclass(frozen=True)
class Method:
    """One row of the comparison."""

    key: str
    label: str
    kind: str  # "sft" or "selfplay"
    data: str  # "pool" (100% of the annotated data) or "quarter" (25%)
    objective: str = "tspin"
    alpha: float = 1.0
    beta: float = 0.1
    mix: bool = False
    schedule: str | None = None  # "nemo": per-iteration learning-rate multipliers and alpha (see `schedules`)
    selection: bool = False  # prompt selection before regeneration (`Setting.selection_threshold`, `..._min_share`)
    rate_rule: str = "grid"  # "grid": its own grid; "anneal": `Setting.anneal_lr`; "chosen": `compare_with`'s rate
    compare_with: str | None = None  # the row it is compared with, paired by seed at the same rate


# The TSPINConfig fields each feature needs; a row whose fields are missing cannot run (the page says so).
FEATURE_FIELDS = {
    "schedule": ("learning_rate_schedule", "alpha_schedule"),
    "selection": ("prompt_selection_threshold", "prompt_selection_min_share"),
}


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("sft_full", "SFT 100% (continued)", "sft", "pool"),
        Method("sft_quarter", "SFT 25%", "sft", "quarter"),
        Method("spin", "SPIN (lambda 0.1)", "selfplay", "quarter", objective="spin", alpha=0.1, beta=0.0),
        Method(
            "spin_mix", "SPIN + data mixing", "selfplay", "quarter", objective="spin", alpha=0.1, beta=0.0, mix=True
        ),
        Method("tspin", "T-SPIN alpha 1", "selfplay", "quarter"),
        Method("tspin_no_ha", "T-SPIN w/o H-A (beta 0)", "selfplay", "quarter", beta=0.0),
        Method("tspin_a01", "T-SPIN alpha 0.1", "selfplay", "quarter", alpha=0.1),
        Method("tspin_ref", "T-SPIN_ref alpha 1", "selfplay", "quarter", objective="tspin_ref"),
        Method(
            "spin_anneal",
            "SPIN, NeMo annealing",
            "selfplay",
            "quarter",
            objective="spin",
            alpha=0.1,
            beta=0.0,
            schedule="nemo",
            rate_rule="anneal",
            compare_with="spin",
        ),
        Method(
            "tspin_anneal",
            "T-SPIN, NeMo annealing",
            "selfplay",
            "quarter",
            alpha=0.1,
            schedule="nemo",
            rate_rule="anneal",
            compare_with="tspin_a01",
        ),
        Method(
            "tspin_select",
            "T-SPIN alpha 1, prompt selection",
            "selfplay",
            "quarter",
            selection=True,
            rate_rule="chosen",
            compare_with="tspin",
        ),
    )
}


def missing_fields(method: Method) -> list[str]:
    """The `TSPINConfig` fields `method` needs that this version of tspin_trl does not have."""
    from dataclasses import fields

    from tspin_trl import TSPINConfig

    have = {f.name for f in fields(TSPINConfig)}
    needed = [*(FEATURE_FIELDS["schedule"] if method.schedule else ()),
              *(FEATURE_FIELDS["selection"] if method.selection else ())]  # fmt: skip
    return [name for name in needed if name not in have]


def geometric(start: float, end: float, n: int) -> list[float]:
    """`n` values from `start` to `end`, a constant ratio apart (4 significant digits)."""
    if n == 1:
        return [start]
    return [float(f"{start * (end / start) ** (t / (n - 1)):.4g}") for t in range(n)]


def schedules(method: Method, setting: Setting) -> dict[str, Any]:
    """The per-iteration `TSPINConfig` fields of `method`: NeMo-Aligner's SPIN annealing (learning rate 5e-7 -> 1e-7,
    i.e. multipliers 1 -> `anneal_lr_end`, and SPIN's beta, which is this project's `alpha`, 0.1 -> 5.0), spread
    geometrically over the iterations; prompt selection's threshold and floor."""
    out: dict[str, Any] = {}
    if method.schedule == "nemo":
        out["learning_rate_schedule"] = geometric(1.0, setting.anneal_lr_end, setting.iterations)
        out["alpha_schedule"] = geometric(*setting.anneal_alpha, setting.iterations)
    elif method.schedule is not None:
        raise ValueError(f"unknown schedule {method.schedule!r} of row {method.key!r}")
    if method.selection:
        out["prompt_selection_threshold"] = setting.selection_threshold
        out["prompt_selection_min_share"] = setting.selection_min_share
    return out


@dataclass
class Setting:
    """One model + data + schedule; every method of a setting gets the same optimiser, schedule, batch and lengths."""

    name: str
    model: str  # "llama": a Llama of `tiny_shape` built from a config, with the character tokenizer
    pool: int
    held_out: int
    validation: int
    iterations: int
    sft_lrs: list[float]  # the starting grid of the SFT rows
    selfplay_lrs: list[float]  # the starting grid of the self-play rows
    seeds: list[int]  # seeds[0] runs the learning-rate grid; every seed runs the chosen rate
    methods: list[str]
    extend_down: int = 2  # at most this many rates added below a row's starting grid (the 1-3 ladder)
    extend_up: int = 1  # ... and above it
    equal_rows: list[str] = field(default_factory=lambda: ["tspin", "tspin_no_ha", "tspin_ref", "spin"])
    equal_lrs: list[float] = field(default_factory=lambda: [5e-5, 1e-4])  # every seed, every row of equal_rows
    anneal_lr: float = 1e-4  # the annealed rows' rate in iteration 0 (and their comparison rows', every seed)
    anneal_lr_end: float = 0.2  # NeMo: 5e-7 -> 1e-7
    anneal_alpha: tuple[float, float] = (0.1, 5.0)  # NeMo: SPIN's beta 0.1 -> 5.0 (this project's alpha)
    selection_threshold: float = 2.0  # scaled current advantage (logistic loss weight sigmoid(-2) = 0.12)
    selection_min_share: float = 0.5
    batch_size: int = 16
    max_length: int = 64
    max_completion_length: int = 12
    temperature: float = 1.0
    generation_batch_size: int = 512
    eval_paths: int = 4
    eval_samples: int = 4
    eval_batch_size: int = 512
    optim: str = "rmsprop"
    warmup: float = 0.1  # share of each iteration's steps (linear warm-up, then linear decay)
    task_seed: int = 0
    min_digits: int = 6
    max_digits: int = 9
    replacement: bool = False  # answers drawn with replacement (n^n answers) instead of permutations (n!)
    dtype: str = "float32"
    tiny_shape: dict[str, int] = field(default_factory=dict)
    warm_epochs: int = 6
    warm_lr: float = 1e-3
    warm_batch_size: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_model(path: str, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.cuda()
    return model, tokenizer


def make_data(setting: Setting) -> dict[str, list[dict]]:
    return make_splits(
        setting.pool,
        setting.held_out,
        setting.validation,
        setting.task_seed,
        setting.min_digits,
        setting.max_digits,
        setting.replacement,
    )


def _common_args(setting: Setting, output_dir: str, lr: float, seed: int) -> dict[str, Any]:
    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=setting.batch_size,
        learning_rate=lr,
        optim=setting.optim,
        weight_decay=0.0,
        lr_scheduler_type="linear",
        warmup_steps=setting.warmup,  # a float is a share of the steps (transformers 5)
        max_length=setting.max_length,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=not on_gpu,
        bf16=on_gpu and setting.dtype == "bfloat16",
        dataloader_pin_memory=False,
        gradient_checkpointing=False,
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
    )


class Evaluators:
    """The held-out (every metric) and validation (forward KL) evaluators of one setting and tokenizer."""

    def __init__(self, setting: Setting, data: dict[str, list[dict]], tokenizer):
        kw = dict(
            paths=setting.eval_paths,
            seed=setting.task_seed,
            batch_size=setting.eval_batch_size,
            replacement=setting.replacement,
        )
        self.held_out = Evaluator(data["held_out"], tokenizer, samples=setting.eval_samples, **kw)
        self.validation = Evaluator(data["validation"], tokenizer, samples=0, **kw)
        self.quarter = Evaluator(data["quarter"], tokenizer, samples=setting.eval_samples, **kw)


def build_warm_start(setting: Setting, data, seed: int, folder: str) -> dict[str, Any]:
    """The paper's kind of warm start: SFT on the whole pool (so "SFT on 100%" continues on data already seen), for
    `warm_epochs` epochs; held-out and training NLL logged after every epoch. Saved to `folder`; returns its record."""
    from accelerate import Accelerator
    from trl import SFTConfig, SFTTrainer

    record_path = os.path.join(folder, "warm_start.json")
    if os.path.isfile(record_path):
        with open(record_path) as f:
            return json.load(f)
    start = time.perf_counter()
    if setting.model != "llama":
        raise ValueError(f"unknown model {setting.model!r}: the reproduction builds a Llama from a config ('llama')")
    from tspin_trl.demo.presets import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **setting.tiny_shape)
    if torch.cuda.is_available():
        model = model.cuda()
    evaluators = Evaluators(setting, data, tokenizer)
    epochs: list[dict[str, Any]] = []
    from transformers import TrainerCallback

    class PerEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            m = kwargs["model"]
            epochs.append(
                {
                    "epoch": round(state.epoch),
                    "train": evaluators.quarter.forward_kl(m) | {"logp_real": evaluators.quarter.real_logp(m)},
                    "held_out": evaluators.held_out.forward_kl(m) | {"logp_real": evaluators.held_out.real_logp(m)},
                }
            )
            m.train()
            return control

    args = SFTConfig(
        **{
            **_common_args(setting, os.path.join(folder, "run"), setting.warm_lr, seed),
            "optim": "adamw_torch",
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "per_device_train_batch_size": setting.warm_batch_size,
            "logging_steps": 50,
        },
        num_train_epochs=setting.warm_epochs,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=_dataset(data["pool"]), processing_class=tokenizer,
        callbacks=[PerEpoch()],
    )  # fmt: skip
    trainer.train()
    model = trainer.model
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(os.path.join(folder, "run"), ignore_errors=True)
    accelerator = trainer.accelerator if trainer.accelerator is not None else Accelerator()
    record = {
        "seed": seed,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": epochs,
        "held_out": evaluators.held_out.evaluate(model, accelerator),
        "validation": evaluators.validation.evaluate(model, accelerator),
        "quarter": evaluators.quarter.evaluate(model, accelerator),  # the self-play subset's margin distribution
        "wall_s": time.perf_counter() - start,
    }
    with open(record_path, "w") as f:
        json.dump(record, f)
    return record


PER_ITERATION_KEYS = ("logps/real", "logps/synthetic", "logps/proto", "advantage/current", "advantage/historical",
                      "advantage/saturated", "rewards/disagreement", "rewards/ties", "loss/clamped",
                      "self_play/synthetic_equals_real")  # fmt: skip


def _dataset(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def run_one(setting: Setting, method: Method, lr: float, seed: int, warm_start: str, data, output_dir: str,
            proto_cache_dir: str) -> dict[str, Any]:  # fmt: skip
    """Train one row from the warm start for `setting.iterations` iterations (each its own run: fresh optimizer and
    schedule) and return its record: the held-out points, the validation KL, per-iteration training diagnostics and
    the wall time of each iteration's parts (preparation = regeneration and reference log-probs, training, evaluation).
    """
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tspin_trl import TSPINConfig, TSPINTrainer
    from tspin_trl.run_folder import RunFolder

    missing = missing_fields(method)
    if missing:
        raise ValueError(f"row {method.key!r} needs TSPINConfig fields this tspin_trl lacks: {', '.join(missing)}")
    train_rows = data["pool"] if method.data == "pool" else data["quarter"]
    model, tokenizer = load_model(warm_start, setting.dtype)
    evaluators = Evaluators(setting, data, tokenizer)
    common = _common_args(setting, output_dir, lr, seed)
    points: list[dict[str, Any]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    margins: dict[int, dict[str, list[float]]] = {}
    train_logs: dict[str, list] = {}
    timing: dict[str, list[float]] = {"prepare_s": [], "train_s": [], "eval_s": []}
    trained_pairs: list[int] = []
    if method.kind == "sft":
        train = _dataset(train_rows)
        for t in range(setting.iterations):
            began = time.perf_counter()
            args = SFTConfig(**{**common, "seed": seed * 1000 + t, "data_seed": seed * 1000 + t}, num_train_epochs=1)
            trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
            trainer.train()
            model = trainer.model
            evaluated = time.perf_counter()
            points.append(evaluators.held_out.evaluate(model, trainer.accelerator))
            timing["prepare_s"].append(0.0)
            timing["train_s"].append(evaluated - began)
            timing["eval_s"].append(time.perf_counter() - evaluated)
        steps = trainer.state.global_step * setting.iterations
    else:
        args = TSPINConfig(
            **common,
            objective=method.objective,
            alpha=method.alpha,
            beta=method.beta,
            mix_previous_iteration=method.mix,
            num_iterations=setting.iterations,
            epochs_per_iteration=1,
            max_completion_length=setting.max_completion_length,
            temperature=setting.temperature,
            generation_batch_size=setting.generation_batch_size,
            proto_cache_dir=proto_cache_dir,
            **schedules(method, setting),
        )
        current: dict[str, list[float]] = {"scaled": [], "likelihood": []}

        def listen(mode: str, columns: dict[str, torch.Tensor]) -> None:
            if mode == "train":
                current["scaled"] += columns["advantage/current"].tolist()
                current["likelihood"] += (columns["logps/real"] - columns["logps/synthetic"]).tolist()

        class PerIteration(TrainerCallback):
            """Evaluates after every iteration and times its parts: preparation runs from the end of the previous
            evaluation (or the start of `train()`) to the iteration's first step, whatever the callbacks' order."""

            trainer: Any = None
            mark: float = 0.0
            first_step: float | None = None

            def on_step_begin(self, args, state, control, **kwargs):
                if self.first_step is None:
                    self.first_step = time.perf_counter()
                return control

            def on_epoch_end(self, args, state, control, **kwargs):
                ended = time.perf_counter()
                iteration = round(state.epoch) - 1
                margins[iteration] = {k: quantiles(v) for k, v in current.items()}
                trained_pairs.append(len(current["scaled"]))
                for v in current.values():
                    v.clear()
                points.append(evaluators.held_out.evaluate(self.trainer.model, self.trainer.accelerator))
                self.trainer.model.train()
                first = self.first_step if self.first_step is not None else ended
                timing["prepare_s"].append(first - self.mark)
                timing["train_s"].append(ended - first)
                timing["eval_s"].append(time.perf_counter() - ended)
                self.mark, self.first_step = time.perf_counter(), None
                return control

        per_iteration = PerIteration()
        trainer = TSPINTrainer(
            model=model,
            args=args,
            train_dataset=_dataset(train_rows),
            processing_class=tokenizer,
            callbacks=[per_iteration],
        )
        per_iteration.trainer = trainer
        trainer.metrics.add_listener(listen)
        per_iteration.mark = time.perf_counter()
        trainer.train()
        model = trainer.model
        steps = trainer.state.global_step
        records = RunFolder(output_dir).iteration_records()
        train_logs = {
            k: [records.get(t, {}).get("means", {}).get(k) for t in range(setting.iterations)]
            for k in PER_ITERATION_KEYS
        }
        train_logs["margins"] = [margins.get(t) for t in range(setting.iterations)]
        # What the trainer records about prompt selection, whatever it names it (the feature is newer than this file).
        train_logs["selection"] = [{k: v for k, v in records.get(t, {}).items() if "select" in k}
                                   for t in range(setting.iterations)]  # fmt: skip
    validation = evaluators.validation.forward_kl(model)
    record = {
        "setting": setting.name,
        "method": method.key,
        "lr": lr,
        "seed": seed,
        "points": points,
        "validation_kl": validation["forward_kl"],
        "train_logs": train_logs,
        "train_steps": steps,
        "trained_pairs": trained_pairs,
        "timing": timing,
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu_start,  # this process's CPU time: a size that shared cores inflate less
    }
    del trainer, model
    shutil.rmtree(output_dir, ignore_errors=True)
    return record
