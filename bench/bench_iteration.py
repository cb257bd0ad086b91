"""Whole self-play iteration (generate + train): T-SPIN vs SPIN the usual way, from the same initial model and data.

- `tspin`: one `TSPINTrainer.train()` with `num_iterations=2`. Iteration 0 reuses the proto-synthetic responses (given
  as a dataset column, as the proto cache would give them) and trains; iteration 1 is the one timed: regeneration of
  the synthetic responses with `generate_responses` (automatic batch, length-sorted), the iteration files, and one
  epoch on the triplets. Timed from the epoch-begin to the epoch-end callback of that epoch.
- `spin`: SPIN's loop for one iteration: the SPIN-style generation (fixed batches of 16 prompts, left padding, fixed
  `max_new_tokens`, decode), then a `DPOTrainer` built on the policy with its reference model reloaded from disk
  (real = chosen, generation = rejected) and one epoch of `train()`. Timed from the first prompt to the end of the
  epoch. The policy's own load is not timed (the SPIN scripts load it twice; T-SPIN holds it).

Both sample the same number of tokens (a random model never ends early, so every response is `max_new_tokens`
long), train with the same batch size, optimizer and lengths. Rounds alternate which contender runs first.

    python bench/bench_iteration.py --quick     # about a minute on 2 CPU cores
    python bench/bench_iteration.py             # the CPU reference size
    python bench/bench_iteration.py --smoke     # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
import torch
from transformers import TrainerCallback

from bench.cli import resolve_device, run_main
from bench.data import make_data
from bench.generation import spin_style_generate
from bench.machine import machine_info
from bench.memory import free_memory
from bench.models import MODEL_PRESETS, build_model, build_tokenizer, load_pretrained, parameter_count, save_pretrained
from bench.report import print_table, verdict
from bench.timing import ratio_summary, summarize, synchronize
from bench.trainers import dpo_trainer, temporary_workdir, tspin_trainer


MODES = {
    "smoke": dict(preset="tiny", num_prompts=8, batch_size=2, response_max=8, prompt_min=8, prompt_max=24,
                  repeats=1),
    "quick": dict(preset="cpu-small", num_prompts=32, batch_size=4, response_max=32, prompt_min=16, prompt_max=128,
                  repeats=2),
    "full": dict(preset="cpu", num_prompts=32, batch_size=4, response_max=64, prompt_min=16, prompt_max=128,
                 repeats=2),
}  # fmt: skip


@dataclass
class Settings:
    preset: str
    num_prompts: int
    batch_size: int
    response_max: int
    prompt_min: int
    prompt_max: int
    repeats: int
    device: str = "cpu"
    bf16: bool = False
    seed: int = 0

    @property
    def dtype(self):
        return torch.bfloat16 if self.bf16 else torch.float32


class EpochTimer(TrainerCallback):
    """Wall-clock time of every epoch, callbacks of the epoch's start (self-play's regeneration) included: installed
    before `SelfPlayCallback`, so its `on_epoch_begin` runs first."""

    def __init__(self):
        self.begin: list[float] = []
        self.end: list[float] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        synchronize()
        self.begin.append(time.perf_counter())

    def on_epoch_end(self, args, state, control, **kwargs):
        synchronize()
        self.end.append(time.perf_counter())


def run_tspin(settings: Settings, tokenizer, data, model_path: str, workdir: str, r: int) -> dict:
    model = load_pretrained(model_path, dtype=settings.dtype, device=settings.device)
    timer = EpochTimer()
    trainer = tspin_trainer(
        model, tokenizer, data.tspin_rows(synthetic=False, proto=True), batch_size=settings.batch_size,
        max_length=data.max_length, response_max=data.response_max, device=settings.device, bf16=settings.bf16,
        output_dir=os.path.join(workdir, f"tspin_{r}"), num_iterations=2, callbacks=[timer],
        temperature=1.0, top_p=1.0, top_k=0, seed=r,
    )  # fmt: skip
    _quiet(trainer)
    trainer.train()
    stats = trainer.self_play.generation_stats.get("iteration_1/train")
    seconds = timer.end[1] - timer.begin[1]
    return {
        "seconds": seconds,
        "generation_seconds": stats.seconds if stats else None,
        "generated_tokens": stats.generated_tokens if stats else None,
        "generate_calls": stats.generate_calls if stats else None,
        "train_seconds": seconds - (stats.seconds if stats else 0.0),
        "iteration_0_seconds": timer.end[0] - timer.begin[0],
    }


def run_spin(settings: Settings, tokenizer, data, model_path: str, workdir: str, r: int) -> dict:
    from accelerate import Accelerator

    model = load_pretrained(model_path, dtype=settings.dtype, device=settings.device)
    accelerator = Accelerator(cpu=settings.device == "cpu")
    synchronize()
    start = time.perf_counter()
    torch.manual_seed(r)
    ids, texts = spin_style_generate(
        model, accelerator, tokenizer, data.prompts(), batch_size=16, max_new_tokens=data.response_max,
        sampling_kwargs=dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0),
    )  # fmt: skip
    synchronize()
    generated = time.perf_counter()
    rows = [
        {"prompt": row["prompt"], "chosen": row["completion"], "rejected": text or "?"}
        for row, text in zip(data.rows, texts)
    ]
    trainer = dpo_trainer(model, tokenizer, rows, batch_size=settings.batch_size, max_length=data.max_length,
                          output_dir=os.path.join(workdir, f"spin_{r}"), device=settings.device,
                          bf16=settings.bf16, model_dtype=settings.dtype, num_train_epochs=1,
                          seed=r)  # fmt: skip
    built = time.perf_counter()
    _quiet(trainer)
    trainer.train()
    synchronize()
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "generation_seconds": generated - start,
        "generated_tokens": sum(len(x) for x in ids),
        "generate_calls": -(-len(ids) // 16),
        "build_seconds": built - generated,
        "train_seconds": end - generated,
    }


def _quiet(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def run(settings: Settings) -> dict:
    results = {"settings": asdict(settings), "machine": machine_info(), "load_before": os.getloadavg()}
    tokenizer = build_tokenizer(MODEL_PRESETS[settings.preset]["vocab_size"])
    data = make_data(tokenizer, settings.num_prompts, prompt_low=settings.prompt_min,
                     prompt_high=settings.prompt_max, response_max=settings.response_max,
                     seed=settings.seed)  # fmt: skip
    runs: dict[str, list[dict]] = {"tspin": [], "spin": []}
    with temporary_workdir() as workdir:
        model = build_model(settings.preset, tokenizer, dtype=settings.dtype, seed=settings.seed)
        results["model"] = {"preset": settings.preset, "parameters": parameter_count(model)}
        path = save_pretrained(model, tokenizer, os.path.join(workdir, "model"))
        del model
        for r in range(settings.repeats):
            order = ("tspin", "spin") if r % 2 == 0 else ("spin", "tspin")
            for name in order:
                fn = run_tspin if name == "tspin" else run_spin
                runs[name].append(fn(settings, tokenizer, data, path, workdir, r))
                free_memory()
    results["runs"] = runs
    summary = {}
    for name, entries in runs.items():
        summary[name] = {key: summarize([e[key] for e in entries]).to_dict()
                         for key in ("seconds", "generation_seconds", "train_seconds")}  # fmt: skip
    results["summary"] = summary
    results["ratio_seconds"] = ratio_summary([e["seconds"] for e in runs["tspin"]],
                                             [e["seconds"] for e in runs["spin"]]).to_dict()  # fmt: skip
    results["load_after"] = os.getloadavg()
    return results


def report(results: dict) -> None:
    s = results["settings"]
    print(f"\nmodel {s['preset']} ({results['model']['parameters'] / 1e6:.1f}M parameters), device {s['device']}, "
          f"{s['num_prompts']} prompts of {s['prompt_min']}-{s['prompt_max']} tokens, responses of "
          f"{s['response_max']} tokens, batch {s['batch_size']}, {s['repeats']} rounds")  # fmt: skip
    rows = []
    for name, e in results["summary"].items():
        rows.append([name, summarize(e["seconds"]["values"]).fmt(1, 1),
                     summarize(e["generation_seconds"]["values"]).fmt(1, 1),
                     summarize(e["train_seconds"]["values"]).fmt(1, 1),
                     str(results["runs"][name][0]["generate_calls"])])  # fmt: skip
    print_table("one self-play iteration, seconds (median (min-max))",
                ["contender", "total", "generation", "training (build + epoch)", "generate calls"], rows)  # fmt: skip
    r = results["ratio_seconds"]
    print_table("T-SPIN / SPIN, iteration wall time (paired by round)", ["median", "min-max", "target"],
                [[f"{r['median']:.3f}", f"{r['min']:.3f}-{r['max']:.3f}",
                  verdict(r["median"], 1.0, higher_is_better=False)]])  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true")
    mode.add_argument("--quick", action="store_true")
    for key in ("preset", "num_prompts", "batch_size", "response_max", "prompt_min", "prompt_max", "repeats"):
        parser.add_argument("--" + key.replace("_", "-"), type=str if key == "preset" else int)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json")

    def run_args(args) -> dict:
        values = dict(MODES["smoke" if args.smoke else "quick" if args.quick else "full"])
        for key in values:
            if getattr(args, key, None) is not None:
                values[key] = getattr(args, key)
        device = resolve_device(args.device)
        return run(Settings(**values, device=device, bf16=device == "cuda"))

    return run_main(parser, argv, run_args, report)


if __name__ == "__main__":
    main()
