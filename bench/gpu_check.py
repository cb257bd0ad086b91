"""One GPU run (H100/H200, under 5 minutes): T-SPIN vs TRL's DPOTrainer as SPIN, training step and generation pass.

Setup: bf16 weights and autocast, SDPA attention, a 0.5B-class Qwen2 built from its config with random weights
(hidden 896, 24 layers, 14 heads, 2 key/value heads, MLP 4864, vocabulary 151936, tied embeddings), prompts of 128
tokens and responses of 256 tokens (real, synthetic and proto), 8 examples per step.

1. Peak bf16 matmul throughput measured on the device (square matmuls, best of a few sizes).
2. Training step (`bench_train_step.py` on this setup): `tspin` (three responses, the trainer's default layout) vs
   `dpo_spin` (DPOTrainer, resident reference), alternated after warm-up; time per example, tokens/s, peak memory
   (`torch.cuda.max_memory_allocated` during a step + resident tensors), MFU with FLOPs counted as
   6 x parameters x tokens for trained sequences + 2 x parameters x tokens for the reference forward (tokens = the
   non-padding positions each forward processes), against the measured peak and against the nominal 989 TFLOP/s.
3. Generation pass (`bench_generation.py`): ours (`generate_responses`, automatic batch) on 256 prompts (16-128
   tokens) vs the SPIN-style loop (16 prompts per batch) on the first 32 of them (its tokens/s does not depend on the
   prompt count; ours is also timed on those 32), 256 new tokens each (a random model never stops early). One
   untimed full pass of each first: the first decode at every new (batch, length) shape is several times slower on
   a GPU, and a pass over a real dataset runs warm. Then 2 alternated timed rounds.

Prints everything and writes `$OUT/gpu_results.json` when `$OUT` is set (or `--json PATH`).

    python bench/gpu_check.py            # on the GPU machine (trl and datasets installed)
    python bench/gpu_check.py --smoke    # tiny model, CPU or GPU, seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
import torch

from bench.machine import machine_info
from bench.memory import free_memory
from bench.models import MODEL_PRESETS
from bench.report import print_table, verdict, write_json
from bench.timing import synchronize


NOMINAL_TFLOPS = 989.0  # H100/H200 SXM dense bf16
TARGETS = {"time_per_example": 0.75, "peak_memory": 1.0, "generation_tokens_per_second": 10.0}


def measure_matmul_tflops(device: str, dtype: torch.dtype, sizes=(4096, 8192), iters: int = 20) -> dict:
    """Best achieved TFLOP/s of square matmuls (on CPU, in float32 with small sizes: only for --smoke)."""
    best, per_size = 0.0, {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            a @ b
        synchronize()
        tflops = 2 * n**3 * iters / (time.perf_counter() - start) / 1e12
        per_size[n] = tflops
        best = max(best, tflops)
        del a, b
    free_memory()
    return {"best_tflops": best, "per_size": per_size, "dtype": str(dtype)}


def train_step(args, device: str) -> dict:
    from bench import bench_train_step as T

    settings = T.Settings(
        preset=args.preset, batch_size=args.batch_size, response_max=args.response, prompt_min=args.prompt,
        prompt_max=args.prompt, num_examples=args.batch_size * 4, repeats=args.repeats, warmup=2, epoch=False,
        contenders=tuple(args.contenders.split(",")), device=device, bf16=device == "cuda", memory=True,
        fixed_lengths=True,
    )  # fmt: skip
    results = T.run(settings)
    return results


def mfu(train: dict, peak_tflops: float) -> dict:
    params = train["model"]["flop_parameters"]
    out = {}
    for name, e in train["contenders"].items():
        tokens = e["processed_tokens_per_step"]["median"]
        reference = tokens if name == "dpo_spin" else 0  # the resident reference forwards the same batch, no grad
        flops = 6 * params * tokens + 2 * params * reference
        step = e["step_seconds"]["median"]
        achieved = flops / step / 1e12
        out[name] = {
            "flops_per_step": flops,
            "achieved_tflops": achieved,
            "mfu_measured_peak": achieved / peak_tflops if peak_tflops else None,
            "mfu_nominal_989": achieved / NOMINAL_TFLOPS,
            "processed_tokens_per_step": tokens,
            "processed_tokens_per_second": tokens / step,
        }
    return out


def generation(args, device: str) -> dict:
    from bench import bench_generation as G

    settings = G.Settings(
        preset=args.preset, num_prompts=args.gen_prompts, max_new_tokens=args.new_tokens, prompt_min=16,
        prompt_max=args.prompt, repeats=args.gen_repeats, scenarios="cap", spin_prompts=args.spin_prompts,
        warmup_rounds=1, device=device, bf16=device == "cuda",
    )  # fmt: skip
    return G.run(settings)


def report(results: dict) -> None:
    print(f"\ndevice: {results['machine'].get('gpu', 'cpu')}; torch {results['machine']['torch']}; "
          f"model {results['train']['model']['parameters'] / 1e6:.0f}M parameters "
          f"({results['train']['model']['flop_parameters'] / 1e6:.0f}M in FLOP counts)")  # fmt: skip
    mm = results["matmul"]
    print(f"measured peak matmul: {mm['best_tflops']:.1f} TFLOP/s ({mm['dtype']}; per size "
          f"{ {k: round(v, 1) for k, v in mm['per_size'].items()} }); nominal {NOMINAL_TFLOPS:.0f}")  # fmt: skip
    from bench import bench_train_step as T

    T.report(results["train"])
    rows = []
    for name, m in results["mfu"].items():
        rows.append([name, f"{m['processed_tokens_per_step']:.0f}", f"{m['processed_tokens_per_second']:.0f}",
                     f"{m['achieved_tflops']:.1f}",
                     f"{100 * m['mfu_measured_peak']:.1f}%" if m["mfu_measured_peak"] else "-",
                     f"{100 * m['mfu_nominal_989']:.1f}%"])  # fmt: skip
    print_table("MFU (6 x params x trained tokens + 2 x params x reference tokens)",
                ["contender", "tokens/step", "tokens/s", "TFLOP/s", "MFU (measured peak)", "MFU (989)"],
                rows)  # fmt: skip
    if results.get("generation"):
        from bench import bench_generation as G

        G.report(results["generation"])
    print_table("targets (T-SPIN / SPIN)", ["what", "value", "verdict"], results["verdicts"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes (runs on CPU)")
    parser.add_argument("--preset", default="qwen2-0.5b", choices=list(MODEL_PRESETS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--response", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--contenders", default="tspin,dpo_spin")
    parser.add_argument("--gen-prompts", type=int, default=256)
    parser.add_argument("--spin-prompts", type=int, default=32)
    parser.add_argument("--gen-repeats", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--json", help="default: $OUT/gpu_results.json when $OUT is set")
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset, args.batch_size, args.prompt, args.response, args.repeats = "tiny", 2, 16, 16, 2
        args.gen_prompts, args.spin_prompts, args.new_tokens, args.gen_repeats = 24, 16, 8, 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    start = time.perf_counter()
    results: dict = {"machine": machine_info(), "args": vars(args)}
    print({k: results["machine"].get(k) for k in ("gpu", "torch", "transformers", "trl")}, flush=True)
    if device == "cuda":
        results["matmul"] = measure_matmul_tflops(device, torch.bfloat16)
    else:
        results["matmul"] = measure_matmul_tflops(device, torch.float32, sizes=(256, 512), iters=5)
    print(
        f"[{time.perf_counter() - start:.0f}s] matmul peak {results['matmul']['best_tflops']:.1f} TFLOP/s", flush=True
    )
    results["train"] = train_step(args, device)
    results["mfu"] = mfu(results["train"], results["matmul"]["best_tflops"])
    free_memory()  # the trainers (three model copies) are gone before generation starts
    print(f"[{time.perf_counter() - start:.0f}s] training step done", flush=True)
    if not args.skip_generation:
        results["generation"] = generation(args, device)
        print(f"[{time.perf_counter() - start:.0f}s] generation done", flush=True)

    verdicts = []
    ratios = results["train"].get("ratios", {})
    if "time_per_example/tspin/dpo_spin" in ratios:
        r = ratios["time_per_example/tspin/dpo_spin"]
        verdicts.append(["training time per example", f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})",
                         verdict(r["median"], TARGETS["time_per_example"], False)])  # fmt: skip
    if "peak_memory/tspin/dpo_spin" in ratios:
        r = ratios["peak_memory/tspin/dpo_spin"]
        verdicts.append(["peak memory", f"{r['value']:.3f}", verdict(r["value"], TARGETS["peak_memory"], False)])
    if results.get("generation"):
        g = results["generation"]["scenarios"]["cap"]["ratio_tokens_per_second"]
        verdicts.append(["generation tokens/s", f"{g['median']:.2f}",
                         verdict(g["median"], TARGETS["generation_tokens_per_second"], True)])  # fmt: skip
    results["verdicts"] = verdicts
    results["total_seconds"] = time.perf_counter() - start
    report(results)
    print(f"\ntotal {results['total_seconds']:.0f} s")
    path = args.json or (os.path.join(os.environ["OUT"], "gpu_results.json") if os.environ.get("OUT") else None)
    write_json(path, results)
    return results


if __name__ == "__main__":
    main()
