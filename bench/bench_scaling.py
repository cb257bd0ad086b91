"""Scaling: how time and memory grow with the prompt count, the response length and the model size.

Three axes, at least three points each, every other setting held at its base value:

- `prompts`: number of prompts in the self-play iteration (generation pass and epoch);
- `response`: maximum response length (tokens generated per prompt; longest trained response);
- `model`: model preset (parameters).

At every point, both systems run on the same model and data:

- generation pass: ours (`generate_responses`) vs the SPIN-style loop (16 prompts per batch), `cap` scenario;
- training step: `tspin` (triplet, packed if the trainer packs) vs `dpo_spin` (DPOTrainer, resident reference),
  alternated, time per example and peak tensor memory (resident tensors + step peak, as in `bench_train_step.py`);
- iteration estimate: generation pass + prompts x time per example.

    python bench/bench_scaling.py --quick     # about a minute on 2 CPU cores
    python bench/bench_scaling.py             # larger points
    python bench/bench_scaling.py --smoke     # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import os
import sys


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split

from bench import bench_generation as G
from bench import bench_train_step as T
from bench.cli import resolve_device, run_main
from bench.machine import machine_info
from bench.memory import free_memory
from bench.report import mib, print_table


MODES = {
    "smoke": dict(base=dict(preset="tiny", prompts=8, response=8), batch_size=2, repeats=1, prompt_max=24,
                  axes={"prompts": [4, 8], "response": [4, 8], "model": ["tiny"]}),
    "quick": dict(base=dict(preset="tiny", prompts=16, response=16), batch_size=4, repeats=2, prompt_max=64,
                  axes={"prompts": [8, 16, 32], "response": [8, 16, 32], "model": ["tiny", "cpu-small", "cpu"]}),
    "full": dict(base=dict(preset="cpu-small", prompts=32, response=32), batch_size=4, repeats=3, prompt_max=128,
                 axes={"prompts": [16, 32, 64, 128], "response": [16, 32, 64, 128],
                       "model": ["cpu-small", "cpu", "cpu-large"]}),
}  # fmt: skip


def measure_point(preset: str, prompts: int, response: int, *, batch_size: int, repeats: int, prompt_max: int,
                  device: str, memory: bool) -> dict:  # fmt: skip
    prompt_min = min(16, prompt_max // 2)
    train_settings = T.Settings(
        preset=preset, batch_size=min(batch_size, prompts), response_max=response, prompt_min=prompt_min,
        prompt_max=prompt_max, num_examples=prompts, repeats=repeats, warmup=1, epoch=False,
        contenders=("tspin", "dpo_spin"), device=device, bf16=device == "cuda", memory=memory,
    )  # fmt: skip
    train = T.run(train_settings)
    gen_settings = G.Settings(
        preset=preset, num_prompts=prompts, max_new_tokens=response, prompt_min=prompt_min, prompt_max=prompt_max,
        repeats=1, scenarios="cap", device=device, bf16=device == "cuda",
    )  # fmt: skip
    gen = G.run(gen_settings)["scenarios"]["cap"]
    point: dict = {"preset": preset, "prompts": prompts, "response": response,
                   "parameters": train["model"]["parameters"]}  # fmt: skip
    for name, gen_name in (("tspin", "ours"), ("dpo_spin", "spin")):
        entry = train["contenders"][name]
        per_example = entry["seconds_per_example"]["median"]
        gen_seconds = gen[gen_name]["seconds"]["median"]
        point[name] = {
            "seconds_per_example": per_example,
            "generation_seconds": gen_seconds,
            "generation_tokens_per_second": gen[gen_name]["tokens_per_second"]["median"],
            "iteration_seconds": gen_seconds + prompts * per_example,
            "peak_bytes": entry.get("memory", {}).get("peak_bytes"),
        }
    point["ratio_iteration"] = point["tspin"]["iteration_seconds"] / point["dpo_spin"]["iteration_seconds"]
    point["ratio_step"] = train["ratios"]["time_per_example/tspin/dpo_spin"]["median"]
    return point


def run(mode: str, device: str, memory: bool) -> dict:
    spec = MODES[mode]
    results = {"mode": mode, "machine": machine_info(), "axes": {}}
    for axis, values in spec["axes"].items():
        points = []
        for value in values:
            kwargs = dict(spec["base"])
            kwargs["preset" if axis == "model" else axis] = value
            points.append(measure_point(kwargs["preset"], kwargs["prompts"], kwargs["response"],
                                        batch_size=spec["batch_size"], repeats=spec["repeats"],
                                        prompt_max=spec["prompt_max"], device=device, memory=memory))  # fmt: skip
            free_memory()
        results["axes"][axis] = points
    return results


def report(results: dict) -> None:
    for axis, points in results["axes"].items():
        rows = []
        for p in points:
            t, d = p["tspin"], p["dpo_spin"]
            mem = f"{mib(t['peak_bytes'])} / {mib(d['peak_bytes'])}" if t["peak_bytes"] else "-"
            rows.append([
                p["preset"], f"{p['parameters'] / 1e6:.1f}M", p["prompts"], p["response"],
                f"{t['generation_seconds']:.2f} / {d['generation_seconds']:.2f}",
                f"{t['seconds_per_example'] * 1000:.0f} / {d['seconds_per_example'] * 1000:.0f}",
                f"{t['iteration_seconds']:.1f} / {d['iteration_seconds']:.1f}", mem,
                f"{p['ratio_step']:.2f}", f"{p['ratio_iteration']:.2f}",
            ])  # fmt: skip
        print_table(
            f"scaling with {axis} (T-SPIN / SPIN in each cell)",
            ["model", "params", "prompts", "response", "generation s", "ms/example", "iteration s (est.)",
             "peak MiB", "step ratio", "iteration ratio"],
            rows,
        )  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true")
    mode.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json")

    def run_args(args) -> dict:
        mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        return run(mode, resolve_device(args.device), not args.no_memory)

    return run_main(parser, argv, run_args, report)


if __name__ == "__main__":
    main()
