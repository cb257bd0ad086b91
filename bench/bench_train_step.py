"""Training step: TSPINTrainer vs TRL's DPOTrainer used as SPIN, on identical models, data, batches and lengths.

Contenders (each runs the trainer's real `training_step` (forward + backward) + gradient clipping + optimizer step on
the same pre-collated batches; the dataloader is left out so that it does not blur the comparison):

- `tspin`: T-SPIN with the historical term on (three responses per prompt: real, synthetic, proto), no reference
  model. This is every iteration after the first.
- `tspin_pair`: T-SPIN with beta = 0 (the default for iteration 0, when synthetic = proto): two responses per prompt.
- `tspin_stacked` (not run by default): `tspin` with `share_prompt=False`, one padded row per (response, prompt)
  instead of one packed row per prompt, to show what the packed layout saves.
- `dpo_spin`: DPOTrainer as SPIN, the usual way: sigmoid loss, real = chosen, synthetic = rejected, reference model
  resident (a no-grad forward per step).
- `dpo_precompute`: DPOTrainer with `precompute_ref_log_probs=True`: the reference pass over the whole dataset runs
  once at construction (timed, and spread over the examples in the per-example time), no reference model at steps.

After a warm-up step each, steps alternate between contenders with a rotating order; the time per example, tokens per
second and peak tensor memory are reported with medians and min-max, and T-SPIN's ratios use round-by-round pairs.
`--epoch` also times one `train()` epoch of `tspin` and `dpo_spin` (dataloader and callbacks included).

    python bench/bench_train_step.py --quick            # about a minute on 2 CPU cores
    python bench/bench_train_step.py                    # the CPU reference size (a few minutes)
    python bench/bench_train_step.py --smoke            # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
import torch

from bench.cli import resolve_device, run_main
from bench.data import make_data
from bench.machine import machine_info
from bench.memory import current_rss_bytes, free_memory, peak_rss_bytes, peak_step_bytes, persistent_bytes
from bench.models import (
    MODEL_PRESETS,
    build_model,
    build_tokenizer,
    flop_parameter_count,
    load_pretrained,
    parameter_count,
    save_pretrained,
)
from bench.report import mib, print_table, verdict
from bench.timing import alternate, ratio_summary, summarize, synchronize, timed
from bench.trainers import dpo_batches, dpo_trainer, make_step, temporary_workdir, tspin_batches, tspin_trainer


ALL_CONTENDERS = ("tspin", "tspin_pair", "tspin_stacked", "dpo_spin", "dpo_precompute")
DEFAULT_CONTENDERS = ("tspin", "tspin_pair", "dpo_spin", "dpo_precompute")

MODES = {
    "smoke": dict(preset="tiny", batch_size=2, response_max=16, prompt_min=8, prompt_max=24, num_examples=8,
                  repeats=2, warmup=1, epoch=False),
    "quick": dict(preset="cpu-small", batch_size=4, response_max=64, prompt_min=16, prompt_max=128, num_examples=16,
                  repeats=5, warmup=1, epoch=False),
    "full": dict(preset="cpu", batch_size=4, response_max=64, prompt_min=16, prompt_max=128, num_examples=32,
                 repeats=5, warmup=1, epoch=True),
}  # fmt: skip

TARGETS = {"time_cpu": 1.10, "time_gpu": 0.75, "memory": 1.0}


@dataclass
class Settings:
    preset: str
    batch_size: int
    response_max: int
    prompt_min: int
    prompt_max: int
    num_examples: int
    repeats: int
    warmup: int
    epoch: bool
    contenders: tuple[str, ...] = DEFAULT_CONTENDERS
    device: str = "cpu"
    bf16: bool = False
    memory: bool = True
    rss: bool = False
    tspin_args: dict = field(default_factory=dict)
    flush_denormal: bool = False
    fixed_lengths: bool = False
    seed: int = 0

    @property
    def dtype(self):
        return torch.bfloat16 if self.bf16 else torch.float32


def parse_kv(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny model, seconds (tests)")
    mode.add_argument("--quick", action="store_true", help="about a minute on 2 CPU cores")
    parser.add_argument("--preset", choices=list(MODEL_PRESETS))
    parser.add_argument("--batch-size", type=int, help="examples (prompts) per step")
    parser.add_argument("--response-max", type=int, help="max response tokens (eos included)")
    parser.add_argument("--prompt-min", type=int)
    parser.add_argument("--prompt-max", type=int)
    parser.add_argument("--num-examples", type=int, help="dataset size (DPO's precompute runs over all of it)")
    parser.add_argument("--repeats", type=int, help="timed rounds")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--epoch", action=argparse.BooleanOptionalAction, default=None, help="also time train()")
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS),
                        help=f"comma-separated, from {', '.join(ALL_CONTENDERS)}")  # fmt: skip
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--rss", action="store_true", help="cross-check memory: peak RSS of one subprocess each")
    parser.add_argument("--tspin-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="extra TSPINConfig argument (JSON value), repeatable")  # fmt: skip
    parser.add_argument("--json", help="write the results to this JSON file")


def settings_from_args(args) -> Settings:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    values = dict(MODES[mode])
    for key in values:
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    device = resolve_device(args.device)
    return Settings(
        **values,
        contenders=tuple(c for c in args.contenders.split(",") if c),
        device=device,
        bf16=device == "cuda",
        memory=not args.no_memory,
        rss=args.rss,
        tspin_args=parse_kv(args.tspin_arg),
        flush_denormal=args.flush_denormal,
    )


# ---------------------------------------------------------------------------------------------------------------------


# `tspin` and `tspin_pair` share one trainer: iteration 0 with the historical term (beta 0.1), iteration 1 without
TSPIN_PAIR_SCHEDULE = {"num_iterations": 2, "beta_schedule": [0.1, 0.0]}


@dataclass
class Contender:
    name: str
    trainer: object
    batches: list
    build_s: float
    precompute_s: float = 0.0
    iteration: int | None = None  # the self-play iteration whose beta the contender trains with (see `build`)

    def enter_iteration(self) -> None:
        """Make the contender's iteration the trainer's current one (a trainer shared by two contenders)."""
        if self.iteration is not None:
            self.trainer.start_iteration(self.iteration)

    def step_fn(self):
        step = make_step(self.trainer)

        def run(batch):
            self.enter_iteration()
            return step(batch)

        return run


def build(settings: Settings, names: tuple[str, ...], workdir: str, tokenizer, data, model_path: str) -> dict:
    """Build the requested contenders on the model saved at `model_path` and the same data."""
    num_batches = max(1, min(4, len(data.rows) // settings.batch_size))
    common = dict(batch_size=settings.batch_size, max_length=data.max_length, device=settings.device,
                  bf16=settings.bf16)  # fmt: skip
    out: dict[str, Contender] = {}
    tspin = None
    for name in names:
        start = time.perf_counter()
        if name in ("tspin", "tspin_pair"):
            if tspin is None:
                model = load_pretrained(model_path, dtype=settings.dtype, device=settings.device)
                # one trainer for both: iteration 0 trains with the proto term (beta 0.1), iteration 1 without it
                tspin = tspin_trainer(model, tokenizer, data.tspin_rows(), response_max=data.response_max,
                                      output_dir=os.path.join(workdir, "tspin"), **common,
                                      **(TSPIN_PAIR_SCHEDULE | settings.tspin_args))  # fmt: skip
            proto = name == "tspin"
            batches = tspin_batches(tspin, settings.batch_size, num_batches, proto=proto)
            out[name] = Contender(name, tspin, batches, time.perf_counter() - start, iteration=0 if proto else 1)
        elif name == "tspin_stacked":
            model = load_pretrained(model_path, dtype=settings.dtype, device=settings.device)
            trainer = tspin_trainer(model, tokenizer, data.tspin_rows(), response_max=data.response_max,
                                    output_dir=os.path.join(workdir, name), **common,
                                    **{**settings.tspin_args, "share_prompt": False})  # fmt: skip
            batches = tspin_batches(trainer, settings.batch_size, num_batches, proto=True)
            out[name] = Contender(name, trainer, batches, time.perf_counter() - start)  # beta 0.1 (own synthetic)
        elif name in ("dpo_spin", "dpo_precompute"):
            precompute = name == "dpo_precompute"
            timer = _PrecomputeTimer() if precompute else None
            with timer or _null():
                trainer = dpo_trainer(model_path, tokenizer, data.dpo_rows(), precompute=precompute,
                                      output_dir=os.path.join(workdir, name), model_dtype=settings.dtype,
                                      **common)  # fmt: skip
            batches = dpo_batches(trainer, settings.batch_size, num_batches)
            out[name] = Contender(name, trainer, batches, time.perf_counter() - start,
                                  precompute_s=timer.seconds if timer else 0.0)  # fmt: skip
        else:
            raise ValueError(f"unknown contender {name!r}; choose from {ALL_CONTENDERS}")
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _PrecomputeTimer:
    """Times DPOTrainer's reference-log-prob precompute pass (it runs inside the constructor)."""

    def __enter__(self):
        from trl import DPOTrainer

        self.seconds, self._cls = 0.0, DPOTrainer
        self._original = DPOTrainer._precompute_ref_logps

        def timed_precompute(trainer, *args, **kwargs):
            synchronize()
            start = time.perf_counter()
            out = self._original(trainer, *args, **kwargs)
            synchronize()
            self.seconds += time.perf_counter() - start
            return out

        DPOTrainer._precompute_ref_logps = timed_precompute
        return self

    def __exit__(self, *exc):
        self._cls._precompute_ref_logps = self._original
        return False


def prepare_data(settings: Settings):
    tokenizer = build_tokenizer(MODEL_PRESETS[settings.preset]["vocab_size"])
    data = make_data(tokenizer, settings.num_examples, prompt_low=settings.prompt_min,
                     prompt_high=settings.prompt_max, response_max=settings.response_max,
                     seed=settings.seed, fixed_lengths=settings.fixed_lengths)  # fmt: skip
    return tokenizer, data


def prepare(settings: Settings, workdir: str):
    """Tokenizer, data and the model saved to disk (so DPOTrainer can reload its reference by path)."""
    tokenizer, data = prepare_data(settings)
    model = build_model(settings.preset, tokenizer, dtype=settings.dtype, device=settings.device, seed=settings.seed)
    info = {"parameters": parameter_count(model), "flop_parameters": flop_parameter_count(model)}
    path = save_pretrained(model, tokenizer, os.path.join(workdir, "model"))
    del model
    return tokenizer, data, path, info


def run(settings: Settings) -> dict:
    results: dict = {"settings": asdict(settings), "machine": machine_info(), "contenders": {}}
    with temporary_workdir() as workdir:
        tokenizer, data, path, info = prepare(settings, workdir)
        results["model"] = {"preset": settings.preset, **info}
        contenders = build(settings, settings.contenders, workdir, tokenizer, data, path)
        steps = {name: c.step_fn() for name, c in contenders.items()}
        calls = {
            name: (lambda r, name=name: steps[name](contenders[name].batches[r % len(contenders[name].batches)]))
            for name in contenders
        }
        times = alternate(calls, settings.repeats, settings.warmup)

        # Per-round totals over the batches each contender saw (identical batch indices for every contender)
        per_round = {}
        for name, c in contenders.items():
            batches = [c.batches[r % len(c.batches)] for r in range(settings.repeats)]
            precompute_per_example = c.precompute_s / len(data.rows)
            per_example = [t / b.examples + precompute_per_example for t, b in zip(times[name], batches)]
            per_round[name] = per_example
            entry = {
                "step_seconds": summarize(times[name]).to_dict(),
                "seconds_per_example": summarize(per_example).to_dict(),
                "pair_tokens_per_second": summarize([b.pair_tokens / (e * b.examples)
                                                       for e, b in zip(per_example, batches)]).to_dict(),
                "trained_tokens_per_second": summarize([b.tokens / t for t, b in zip(times[name], batches)]).to_dict(),
                "padded_tokens_per_step": summarize([b.padded_tokens for b in batches]).to_dict(),
                "processed_tokens_per_step": summarize([b.processed_tokens for b in batches]).to_dict(),
                "precompute_seconds": c.precompute_s,
                "build_seconds": c.build_s,
                "responses_per_example": 3 if name in ("tspin", "tspin_stacked") else 2,
                "share_prompt": getattr(c.trainer, "share_prompt", None),
                "reference_forward_rows_per_example": 2 if name == "dpo_spin" else 0,
            }  # fmt: skip
            results["contenders"][name] = entry
        # Token counts must agree: same prompts, same real and synthetic responses
        pair = {name: [b.pair_tokens for b in c.batches] for name, c in contenders.items()}
        if len({tuple(v) for v in pair.values()}) != 1:
            raise RuntimeError(f"contenders saw different pair token counts: {pair}")

        if settings.memory:
            for name, c in contenders.items():
                persistent = persistent_bytes(c.trainer)
                step_peak = max(peak_step_bytes(lambda name=name, b=b: steps[name](b)) for b in c.batches[:2])
                results["contenders"][name]["memory"] = {
                    "persistent_bytes": persistent,
                    "step_peak_bytes": step_peak,
                    "peak_bytes": persistent + step_peak,
                    "method": "cuda max_memory_allocated" if settings.device == "cuda" else "torch.profiler events",
                }

        if settings.epoch:
            results["epoch"] = {}
            for name in ("tspin", "dpo_spin"):
                if name not in contenders:
                    continue
                trainer = contenders[name].trainer
                trainer.args.num_train_epochs = 1
                if name == "tspin":  # one iteration with the proto term (`train()` reads the settings as it starts)
                    trainer.args.num_iterations, trainer.args.beta_schedule = 1, None
                seconds, _ = timed(trainer.train)
                results["epoch"][name] = {"seconds": seconds, "examples": len(data.rows),
                                          "seconds_per_example": seconds / len(data.rows)}  # fmt: skip

        if "tspin" in per_round:
            results["ratios"] = ratios(settings, per_round, results)
        if settings.rss:
            del contenders, steps, calls
            free_memory()
            results["rss"] = {name: rss_worker(settings, name, path) for name in settings.contenders}
    return results


def ratios(settings: Settings, per_round: dict, results: dict) -> dict:
    """T-SPIN over each DPO contender: measured (paired), and the ratio of a compute model that counts positions
    (padding included): a trained row costs 3 forward-equivalents, a no-grad reference row 1."""
    out = {}
    padded = {n: sum(e["padded_tokens_per_step"]["values"]) for n, e in results["contenders"].items()}
    cost = {n: 3 * p + (p if n in ("dpo_spin", "dpo_precompute") else 0) for n, p in padded.items()}
    target = TARGETS["time_gpu" if settings.device == "cuda" else "time_cpu"]
    for base in ("dpo_spin", "dpo_precompute"):
        for mine in ("tspin", "tspin_pair", "tspin_stacked"):
            if base in per_round and mine in per_round:
                r = ratio_summary(per_round[mine], per_round[base])
                out[f"time_per_example/{mine}/{base}"] = {
                    **r.to_dict(),
                    # all rounds' time over all rounds' time: what a run over these batches takes
                    "total": sum(per_round[mine]) / sum(per_round[base]),
                    "target": target if mine == "tspin" else None,
                    "compute_model": cost[mine] / cost[base],
                }
        if base in per_round and "tspin" in per_round and settings.memory:
            mine_mem = results["contenders"]["tspin"]["memory"]["peak_bytes"]
            base_mem = results["contenders"][base]["memory"]["peak_bytes"]
            out[f"peak_memory/tspin/{base}"] = {"value": mine_mem / base_mem, "target": TARGETS["memory"]}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# --rss: one subprocess per contender, peak resident set size


def rss_worker(settings: Settings, name: str, model_path: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--worker-model", model_path,
               "--worker-settings", json.dumps(asdict(settings))]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if completed.returncode != 0:
        raise RuntimeError(f"rss worker {name} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def worker_main(name: str, settings_json: str, model_path: str) -> None:
    """Build one contender from the saved model, run warm-up + 2 steps, print the peak RSS (and the RSS before the
    build, taken after every module the build needs has been imported)."""
    import datasets  # noqa: F401
    import trl.trainer.dpo_trainer  # noqa: F401

    import tspin_trl.trainer  # noqa: F401

    values = json.loads(settings_json)
    values["contenders"] = tuple(values["contenders"])
    settings = Settings(**values)
    if settings.flush_denormal:
        torch.set_flush_denormal(True)
    with temporary_workdir() as workdir:
        tokenizer, data = prepare_data(settings)
        free_memory()
        before = current_rss_bytes()
        contenders = build(settings, (name,), workdir, tokenizer, data, model_path)
        step = contenders[name].step_fn()
        for r in range(settings.warmup + 2):
            step(contenders[name].batches[r % len(contenders[name].batches)])
        peak = peak_rss_bytes()
    print(json.dumps({"rss_before_bytes": before, "peak_rss_bytes": peak, "peak_above_before_bytes": peak - before}))


# ---------------------------------------------------------------------------------------------------------------------


def report(results: dict) -> None:
    s = results["settings"]
    print(f"\nmodel {s['preset']} ({results['model']['parameters'] / 1e6:.1f}M parameters), device {s['device']}, "
          f"bf16 {s['bf16']}, batch {s['batch_size']} prompts, prompts {s['prompt_min']}-{s['prompt_max']} tokens, "
          f"responses <= {s['response_max']} tokens, {s['num_examples']} examples, {s['repeats']} rounds, "
          f"flush_denormal {s['flush_denormal']}, load average {results['machine']['load_average']}")  # fmt: skip
    rows = []
    for name, e in results["contenders"].items():
        mem = e.get("memory")
        rows.append([
            name,
            summarize(e["step_seconds"]["values"]).fmt(1000, 0),
            summarize(e["seconds_per_example"]["values"]).fmt(1000, 0),
            summarize(e["pair_tokens_per_second"]["values"]).fmt(1, 0),
            summarize(e["trained_tokens_per_second"]["values"]).fmt(1, 0),
            f"{e['padded_tokens_per_step']['median']:.0f}",
            f"{e['precompute_seconds']:.2f}" if e["precompute_seconds"] else "-",
            f"{mib(mem['peak_bytes'])} ({mib(mem['persistent_bytes'])} + {mib(mem['step_peak_bytes'])})"
            if mem else "-",
        ])  # fmt: skip
    print_table(
        "training step (median (min-max))",
        ["contender", "ms/step", "ms/example", "pair tok/s", "trained tok/s", "padded tok/step", "precompute s",
         "peak MiB (resident + step)"],
        rows,
    )  # fmt: skip
    if results.get("epoch"):
        print_table(
            "one train() epoch",
            ["contender", "seconds", "ms/example"],
            [
                [n, f"{e['seconds']:.1f}", f"{e['seconds_per_example'] * 1000:.0f}"]
                for n, e in results["epoch"].items()
            ],
        )
    if results.get("ratios"):
        rows = []
        for key, r in results["ratios"].items():
            if "median" in r:
                value, spread, total = r["median"], f"{r['min']:.3f}-{r['max']:.3f}", f"{r['total']:.3f}"
            else:
                value, spread, total = r["value"], "-", "-"
            target = verdict(value, r["target"], higher_is_better=False) if r.get("target") else "(info)"
            model = f"{r['compute_model']:.3f}" if r.get("compute_model") else "-"
            rows.append([key, f"{value:.3f}", spread, total, model, target])
        print_table("ratios (T-SPIN / DPOTrainer-as-SPIN; time ratios paired round by round)",
                    ["ratio", "median", "min-max", "total time", "compute model", "target (on the median)"],
                    rows)  # fmt: skip
    if results.get("rss"):
        print_table(
            "peak RSS, one subprocess per contender (cross-check)",
            ["contender", "peak RSS MiB", "above pre-build RSS MiB"],
            [[n, mib(r["peak_rss_bytes"]), mib(r["peak_above_before_bytes"])] for n, r in results["rss"].items()],
        )


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-settings", help=argparse.SUPPRESS)
    parser.add_argument("--worker-model", help=argparse.SUPPRESS)

    def run_args(args) -> dict | None:
        if args.worker:
            worker_main(args.worker, args.worker_settings, args.worker_model)
            return None
        return run(settings_from_args(args))

    return run_main(parser, argv, run_args, report)


if __name__ == "__main__":
    main()
