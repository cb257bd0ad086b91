"""The runs of the reproduction: the setting, the rows (methods), a warm start per seed, and one row from it.

A seed is a whole replicate: its own warm start (model initialisation and data order), trained on the *old* rule, and
from it every row's run with that seed (data order, sampling). Every row continues from its seed's warm start for
`iterations` iterations, each its own fine-tuning run (fresh optimizer state, warm-up and decay over the iteration's
steps), and is measured on the held-out split (new rule) after every iteration, and on the validation split after
the last one (the learning rate is chosen on that). The model is a Llama built from a config with a character
tokenizer: nothing here downloads anything, on a CPU or on a GPU machine without a network.
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

from .task import Evaluator, Rule, make_splits, quantiles  # noqa: E402


warnings.filterwarnings("ignore")


@dataclass(frozen=True)
class Method:
    """One row of the comparison.

    `rate` says where its learning rate comes from: `"grid"`, its own grid (chosen on validation); `"base"`, the rates
    its `base` row runs at (the chosen rate, and with `at_stray` the stray rate too), compared with it paired by seed.
    `seeds` is `"many"` (every seed) or `"few"` (the first `Setting.few_seeds`).
    """

    key: str
    label: str
    kind: str  # "sft" or "selfplay"
    data: str  # "pool" (100% of the new-rule data) or "subset" (the self-play subset)
    epochs: str = "one"  # per iteration: "one", or "pool" (as many steps as one epoch of the pool: SFT 100%'s)
    objective: str = "tspin"
    alpha: float = 1.0
    beta: float = 0.1
    optim: str = "adamw_torch"
    schedule: str | None = None  # "nemo": per-iteration learning-rate multipliers and alpha (see `schedules`)
    selection: bool = False  # prompt selection before regeneration (`Setting.selection_threshold`, `..._min_share`)
    rate: str = "grid"
    base: str | None = None
    at_stray: bool = False
    seeds: str = "few"
    group: str = "main"  # "main", "fidelity" (RMSProp) or "beyond" (annealing, prompt selection)


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("sft_sub", "SFT 25% (self-play's steps)", "sft", "subset", seeds="many"),
        Method("sft_sub_long", "SFT 25% (SFT 100%'s steps)", "sft", "subset", epochs="pool"),
        Method("sft_full", "SFT 100%", "sft", "pool", seeds="many"),
        Method("spin", "SPIN", "selfplay", "subset", objective="spin", alpha=0.1, beta=0.0, seeds="many"),
        Method("tspin", "T-SPIN", "selfplay", "subset", seeds="many"),
        Method("tspin_no_ha", "T-SPIN w/o H-A", "selfplay", "subset", beta=0.0),
        Method("tspin_ref", "T-SPIN_ref", "selfplay", "subset", objective="tspin_ref"),
        Method(
            "spin_rms",
            "SPIN, RMSProp",
            "selfplay",
            "subset",
            objective="spin",
            alpha=0.1,
            beta=0.0,
            optim="rmsprop",
            group="fidelity",
        ),
        Method("tspin_rms", "T-SPIN, RMSProp", "selfplay", "subset", optim="rmsprop", group="fidelity"),
        Method(
            "spin_anneal",
            "SPIN, NeMo annealing",
            "selfplay",
            "subset",
            objective="spin",
            alpha=0.1,
            beta=0.0,
            schedule="nemo",
            rate="base",
            base="spin",
            at_stray=True,
            group="beyond",
        ),
        Method(
            "tspin_anneal",
            "T-SPIN, NeMo annealing",
            "selfplay",
            "subset",
            schedule="nemo",
            rate="base",
            base="tspin",
            at_stray=True,
            group="beyond",
        ),
        Method(
            "tspin_select",
            "T-SPIN, prompt selection",
            "selfplay",
            "subset",
            selection=True,
            rate="base",
            base="tspin",
            group="beyond",
        ),
    )  # fmt: skip
}

# The TSPINConfig fields each feature needs; a row whose fields are missing cannot run (the page says so).
FEATURE_FIELDS = {
    "schedule": ("learning_rate_schedule", "alpha_schedule"),
    "selection": ("prompt_selection_threshold", "prompt_selection_min_share"),
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


@dataclass
class Setting:
    """One model + data + schedule; every row gets the same batch, lengths, iterations and evaluation."""

    name: str = "shifted-draws"
    shape: dict[str, int] = field(default_factory=dict)  # the Llama's config (hidden size, layers, heads, MLP)
    # data: disjoint prompt sets; the warm start learns the old rule on `warm_pool`, the rows the new rule
    warm_pool: int = 2000
    pool: int = 1600
    subset_share: float = 0.25  # the self-play subset: the pool's first quarter
    held_out: int = 200
    validation: int = 200
    min_digits: int = 4
    max_digits: int = 7
    old_shift: int = 0
    new_shift: int = 1
    task_seed: int = 0
    # the warm start (one per seed)
    warm_epochs: int = 8
    warm_lr: float = 3e-3
    warm_batch_size: int = 32
    # the rows
    iterations: int = 5  # the paper's iter0 .. iter4
    batch_size: int = 16
    max_length: int = 64
    max_completion_length: int = 12
    temperature: float = 1.0
    warmup: float = 0.1  # share of each iteration's steps (linear warm-up, then linear decay)
    generation_batch_size: int = 512
    eval_paths: int = 2
    eval_samples: int = 2
    eval_batch_size: int = 512
    dtype: str = "float32"
    # which runs are made (bench/repro/plan.py)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    few_seeds: int = 3
    grid_seeds: int = 2  # the learning rate is chosen on the mean over this many seeds
    # starting grids, as indices k of the learning-rate ladder 1e-4 x 3^k (plan.rate)
    sft_grid: list[int] = field(default_factory=lambda: [1, 2, 3])  # 3e-4, 9e-4, 2.7e-3
    selfplay_grid: list[int] = field(default_factory=lambda: [0, 1, 2])  # 1e-4, 3e-4, 9e-4
    rms_grid: list[int] = field(default_factory=lambda: [-2, -1, 0])  # 1.11e-5, 3.33e-5, 1e-4
    extend_limit: int = 3  # at most this many rates added beyond each end of a row's starting grid
    # beyond the paper
    anneal_lr_end: float = 0.2  # NeMo-Aligner's SPIN guide: the rate 5e-7 -> 1e-7 over the iterations
    anneal_alpha_factor: float = 50.0  # ... and SPIN's beta (this project's alpha) 0.1 -> 5.0
    selection_threshold: float = 3.0  # scaled current advantage (logistic-loss weight sigmoid(-3) = 0.047)
    selection_min_share: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def old(self) -> Rule:
        return Rule(self.old_shift)

    @property
    def new(self) -> Rule:
        return Rule(self.new_shift)

    def seeds_of(self, method: Method) -> list[int]:
        return list(self.seeds if method.seeds == "many" else self.seeds[: self.few_seeds])

    def epochs_of(self, method: Method) -> int:
        return round(1 / self.subset_share) if method.epochs == "pool" and method.data == "subset" else 1


def schedules(method: Method, setting: Setting) -> dict[str, Any]:
    """The per-iteration `TSPINConfig` fields of `method`: NeMo-Aligner's SPIN annealing (learning rate 5e-7 -> 1e-7,
    i.e. multipliers 1 -> `anneal_lr_end`, and SPIN's beta, this project's `alpha`, 0.1 -> 5.0, i.e. the row's alpha
    times 1 -> `anneal_alpha_factor`), spread geometrically over the iterations; prompt selection's threshold and
    floor."""
    out: dict[str, Any] = {}
    if method.schedule == "nemo":
        out["learning_rate_schedule"] = geometric(1.0, setting.anneal_lr_end, setting.iterations)
        out["alpha_schedule"] = geometric(method.alpha, method.alpha * setting.anneal_alpha_factor,
                                          setting.iterations)  # fmt: skip
    elif method.schedule is not None:
        raise ValueError(f"unknown schedule {method.schedule!r} of row {method.key!r}")
    if method.selection:
        out["prompt_selection_threshold"] = setting.selection_threshold
        out["prompt_selection_min_share"] = setting.selection_min_share
    return out


def make_data(setting: Setting) -> dict[str, list[dict]]:
    sizes = {k: getattr(setting, k) for k in ("pool", "held_out", "validation")} | {"warm": setting.warm_pool}
    return make_splits(sizes, setting.subset_share, setting.task_seed, setting.old, setting.new, setting.min_digits,
                       setting.max_digits)  # fmt: skip


def load_model(path: str, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.cuda()
    return model, tokenizer


def _common_args(setting: Setting, output_dir: str, lr: float, seed: int, optim: str) -> dict[str, Any]:
    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=setting.batch_size,
        learning_rate=lr,
        optim=optim,
        weight_decay=0.0,
        lr_scheduler_type="linear",
        warmup_steps=setting.warmup,  # a float is a share of the steps (transformers 5)
        max_length=setting.max_length,
        logging_steps=10_000,
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
    """The held-out (every metric, new rule), validation (forward KL) and old-rule (forward KL) evaluators."""

    def __init__(self, setting: Setting, data: dict[str, list[dict]], tokenizer):
        kw = dict(paths=setting.eval_paths, seed=setting.task_seed, batch_size=setting.eval_batch_size,
                  old=setting.old)  # fmt: skip
        self.held_out = Evaluator(data["held_out"], tokenizer, setting.new, samples=setting.eval_samples, **kw)
        self.validation = Evaluator(data["validation"], tokenizer, setting.new, samples=0, **kw)
        self.held_out_old = Evaluator(data["held_out"], tokenizer, setting.old, samples=0, **kw)


def _quiet(trainer):
    """No per-log print lines (transformers adds a printer when tqdm is off): the script prints one line a run."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _dataset(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def build_warm_start(setting: Setting, data, seed: int, folder: str) -> dict[str, Any]:
    """Seed `seed`'s warm start: a Llama initialised with `seed`, SFT (TRL's `SFTTrainer`, AdamW, cosine) on the
    old rule's `warm_pool` for `warm_epochs` epochs in the order of `seed`. Saved to `folder` with its held-out
    samples (the proto responses of the held-out advantages); returns its record (cached in the folder)."""
    from trl import SFTConfig, SFTTrainer

    from tspin_trl.demo.presets import build_char_tokenizer, build_tiny_model

    record_path = os.path.join(folder, "warm_start.json")
    if os.path.isfile(record_path):
        with open(record_path) as f:
            return json.load(f)
    start, cpu_start = time.perf_counter(), time.process_time()
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **setting.shape)
    if torch.cuda.is_available():
        model = model.cuda()
    args = SFTConfig(
        **{
            **_common_args(setting, os.path.join(folder, "run"), setting.warm_lr, seed, "adamw_torch"),
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "per_device_train_batch_size": setting.warm_batch_size,
        },
        num_train_epochs=setting.warm_epochs,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=_dataset(data["warm"]), processing_class=tokenizer)
    _quiet(trainer).train()
    model = trainer.model
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(os.path.join(folder, "run"), ignore_errors=True)
    evaluators = Evaluators(setting, data, tokenizer)
    held_out, proto = evaluators.held_out.evaluate(model, trainer.accelerator)
    with open(os.path.join(folder, "held_out_proto.json"), "w") as f:
        json.dump(proto, f)
    record = {
        "seed": seed,
        "params": sum(p.numel() for p in model.parameters()),
        "held_out": held_out,
        "held_out_old_rule_kl": evaluators.held_out_old.forward_kl(model),
        "validation_kl": evaluators.validation.forward_kl(model),
        "steps": trainer.state.global_step,
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu_start,
    }
    with open(record_path, "w") as f:
        json.dump(record, f)
    return record


# What the trainer reports per training example (means over an iteration's steps are kept per iteration)
TRAIN_KEYS = ("logps/real", "logps/synthetic", "logps/proto", "advantage/current", "advantage/historical")


def run_one(setting: Setting, method: Method, lr: float, seed: int, warm_folder: str, data, output_dir: str,
            proto_cache_dir: str) -> dict[str, Any]:  # fmt: skip
    """Train one row from seed `seed`'s warm start for `setting.iterations` iterations and return its record: the
    held-out metrics after every iteration, the validation KL after the last, per-iteration training means, prompt
    selection's kept/skipped counts, and the wall and CPU time of each iteration's parts (preparation = regeneration,
    prompt scoring and reference log-probs; training; evaluation)."""
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tspin_trl import TSPINConfig, TSPINTrainer

    missing = missing_fields(method)
    if missing:
        raise ValueError(f"row {method.key!r} needs TSPINConfig fields this tspin_trl lacks: {', '.join(missing)}")
    train_rows = data["pool"] if method.data == "pool" else data["subset"]
    model, tokenizer = load_model(warm_folder, setting.dtype)
    with open(os.path.join(warm_folder, "held_out_proto.json")) as f:
        held_out_proto = json.load(f)
    evaluators = Evaluators(setting, data, tokenizer)
    common = _common_args(setting, output_dir, lr, seed, method.optim)
    points: list[dict[str, Any]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    timing: dict[str, list[float]] = {k: [] for k in ("prepare_s", "train_s", "eval_s", "prepare_cpu_s")}
    train_logs: dict[str, list] = {}
    selection: list[dict[str, Any]] = []

    def evaluate(m, accelerator) -> None:
        points.append(evaluators.held_out.evaluate(m, accelerator, held_out_proto)[0])

    if method.kind == "sft":
        train = _dataset(train_rows)
        epochs = setting.epochs_of(method)
        for t in range(setting.iterations):
            began = time.perf_counter()
            args = SFTConfig(**{**common, "seed": seed * 1000 + t, "data_seed": seed * 1000 + t},
                             num_train_epochs=epochs)  # fmt: skip
            trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
            _quiet(trainer).train()
            model = trainer.model
            evaluated = time.perf_counter()
            evaluate(model, trainer.accelerator)
            timing["prepare_s"].append(0.0)
            timing["prepare_cpu_s"].append(0.0)
            timing["train_s"].append(evaluated - began)
            timing["eval_s"].append(time.perf_counter() - evaluated)
        steps = trainer.state.global_step * setting.iterations
    else:
        per_iteration = schedules(method, setting)
        args = TSPINConfig(
            **common,
            objective=method.objective,
            # an alpha_schedule replaces alpha (TSPINConfig refuses both): the row's alpha is its first value
            **({} if "alpha_schedule" in per_iteration else {"alpha": method.alpha}),
            beta=method.beta,
            num_iterations=setting.iterations,
            epochs_per_iteration=1,
            max_completion_length=setting.max_completion_length,
            temperature=setting.temperature,
            generation_batch_size=setting.generation_batch_size,
            proto_cache_dir=proto_cache_dir,
            **per_iteration,
        )
        sums: dict[str, list[float]] = {k: [] for k in TRAIN_KEYS}
        scaled: list[float] = []

        def listen(mode: str, columns: dict[str, torch.Tensor]) -> None:
            if mode == "train":
                for k in TRAIN_KEYS:
                    if k in columns:
                        sums[k] += [v for v in columns[k].tolist() if v == v]
                scaled.extend(v for v in columns["advantage/current"].tolist() if v == v)

        class PerIteration(TrainerCallback):
            """Evaluates after every iteration and times its parts: preparation runs from the end of the previous
            evaluation (or the start of `train()`) to the iteration's first step, whatever the callbacks' order."""

            trainer: Any = None
            mark: float = 0.0
            mark_cpu: float = 0.0
            first_step: float | None = None
            first_cpu: float = 0.0

            def on_step_begin(self, args, state, control, **kwargs):
                if self.first_step is None:
                    self.first_step, self.first_cpu = time.perf_counter(), time.process_time()
                return control

            def on_epoch_end(self, args, state, control, **kwargs):
                ended = time.perf_counter()
                logs = {k: (sum(v) / len(v) if v else None) for k, v in sums.items()}
                logs["scaled_current_quantiles"] = quantiles(scaled)
                logs["scaled_current_saturated"] = sum(v > 10 for v in scaled) / max(1, len(scaled))
                for v in sums.values():
                    v.clear()
                scaled.clear()
                train_logs.setdefault("iterations", []).append(logs)
                evaluate(self.trainer.model, self.trainer.accelerator)
                self.trainer.model.train()
                first = self.first_step if self.first_step is not None else ended
                timing["prepare_s"].append(first - self.mark)
                timing["prepare_cpu_s"].append((self.first_cpu or time.process_time()) - self.mark_cpu)
                timing["train_s"].append(ended - first)
                timing["eval_s"].append(time.perf_counter() - ended)
                self.mark, self.mark_cpu, self.first_step = time.perf_counter(), time.process_time(), None
                return control

        callback = PerIteration()
        trainer = TSPINTrainer(model=model, args=args, train_dataset=_dataset(train_rows), processing_class=tokenizer,
                               callbacks=[callback])  # fmt: skip
        callback.trainer = trainer
        trainer.metrics.add_listener(listen)
        callback.mark, callback.mark_cpu = time.perf_counter(), time.process_time()
        _quiet(trainer).train()
        model = trainer.model
        steps = trainer.state.global_step
        if method.selection:
            selection = selection_counts(output_dir, setting.iterations, len(train_rows))
    record = {
        "setting": setting.name,
        "method": method.key,
        "lr": lr,
        "seed": seed,
        "points": points,
        "validation_kl": evaluators.validation.forward_kl(model),
        "train_logs": train_logs.get("iterations", []),
        "selection": selection,
        "train_steps": steps,
        "timing": timing,
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu_start,  # this process's CPU time: a size that shared cores inflate less
    }
    del trainer, model
    shutil.rmtree(output_dir, ignore_errors=True)
    return record


def selection_counts(output_dir: str, iterations: int, num_prompts: int) -> list[dict[str, Any]]:
    """Per iteration: the prompts prompt selection kept and skipped (iteration 0 keeps every prompt: nothing to judge
    yet), read from the run's iteration records (`prompts_kept`, `prompts_skipped`, `prompt_selection_seconds`)."""
    from tspin_trl.run_folder import RunFolder

    records = RunFolder(output_dir).iteration_records()
    out = []
    for t in range(iterations):
        r = records.get(t, {})
        kept = r.get("prompts_kept", num_prompts if t == 0 else None)
        skipped = r.get("prompts_skipped", 0 if t == 0 else None)
        out.append({"iteration": t, "kept": kept, "skipped": skipped, "seconds": r.get("prompt_selection_seconds")})
    return out
