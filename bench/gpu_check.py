"""One GPU run (H100/H200, under 5 minutes): T-SPIN vs TRL's DPOTrainer as SPIN, training step and generation pass.

Setup: bf16 weights and autocast, SDPA attention, a 0.5B-class Qwen2 built from its config with random weights
(hidden 896, 24 layers, 14 heads, 2 key/value heads, MLP 4864, vocabulary 151936, tied embeddings), prompts of 128
tokens and responses of 256 tokens (real, synthetic and proto), 8 examples per step.

1. Peak bf16 matmul throughput measured on the device (square matmuls, best of a few sizes).
2. Training step, the layouts side by side with DPO-as-SPIN in one alternated run (same model, data, batches):
   `tspin_stacked` (three responses, each behind its own copy of the prompt: SDPA's flash kernel, today's GPU
   default), `tspin` (packed: the prompt once, a dense 4D mask), `tspin_flex` (packed, FlexAttention `BlockMask`,
   `packed_attention="flex"`), `tspin_flex_gc` (the same with gradient checkpointing), `dpo_spin` (DPOTrainer,
   resident reference). Time per example, tokens/s, peak memory (`torch.cuda.max_memory_allocated` during a step +
   resident tensors), MFU with FLOPs counted as 6 x parameters x tokens for trained sequences + 2 x parameters x tokens
   for the reference forward (tokens = the non-padding positions each forward processes), against the measured peak
   and against the nominal 989 TFLOP/s. The layouts' summed log-probs on one batch are compared (bf16 tolerance).
   Then a torch.profiler summary of one step of each (`profile_step.py`: attention, MLP, LM head + log-softmax,
   optimizer, copies).
3. Generation pass (`bench_generation.py`): ours (`generate_responses`, automatic batch) on 256 prompts (16-128
   tokens) vs the SPIN-style loop (16 prompts per batch) on the first 32 of them (its tokens/s does not depend on the
   prompt count; ours is also timed on those 32), 256 new tokens each (a random model never stops early). One
   untimed full pass of each first: the first decode at every new (batch, length) shape is several times slower on
   a GPU, and a pass over a real dataset runs warm. Then 2 alternated timed rounds.

Prints everything and writes `gpu_results.json` and `gpu_results.md` (the tables) to `$OUT` (default `./out`).

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
from bench.memory import free_memory, peak_step_bytes, persistent_bytes
from bench.models import MODEL_PRESETS
from bench.report import mib, print_table, verdict, write_json
from bench.timing import alternate, ratio_summary, summarize, synchronize
from bench.trainers import temporary_workdir


NOMINAL_TFLOPS = 989.0  # H100/H200 SXM dense bf16
TARGETS = {"time_per_example": 0.75, "mfu": 0.40, "peak_memory": 1.0, "generation_tokens_per_second": 10.0}


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


# name -> (bench_train_step contender it is built as, TSPINConfig overrides)
LAYOUTS = {
    "tspin_stacked": ("tspin_stacked", {}),
    "tspin": ("tspin", {"packed_attention": "dense"}),
    "tspin_flex": ("tspin", {"packed_attention": "flex"}),
    "tspin_flex_gc": ("tspin", {"packed_attention": "flex", "gradient_checkpointing": True}),
    "dpo_spin": ("dpo_spin", {}),
}


def train_step(args, device: str) -> dict:
    """The layouts and DPO-as-SPIN, alternated round by round on the same batches; memory, log-prob agreement and a
    profile of each."""
    from bench import bench_train_step as T
    from bench import profile_step as P

    names = tuple(args.contenders.split(","))
    settings = T.Settings(
        preset=args.preset, batch_size=args.batch_size, response_max=args.response, prompt_min=args.prompt,
        prompt_max=args.prompt, num_examples=args.batch_size * 4, repeats=args.repeats, warmup=2, epoch=False,
        contenders=names, device=device, bf16=device == "cuda", memory=True, fixed_lengths=True,
    )  # fmt: skip
    results: dict = {"settings": vars(args) | {"device": device}, "contenders": {}}
    with temporary_workdir() as workdir:
        tokenizer, data, path, info = T.prepare(settings, workdir)
        results["model"] = {"preset": args.preset, **info}
        contenders = {}
        for name in names:
            base, overrides = LAYOUTS[name]
            built = T.build(T.Settings(**{**vars(settings), "tspin_args": overrides}), (base,), os.path.join(
                workdir, name), tokenizer, data, path)  # fmt: skip
            contenders[name] = built[base]
            if overrides.get("gradient_checkpointing"):  # Trainer turns it on in train(), which the bench bypasses
                trainer = contenders[name].trainer
                trainer.model.gradient_checkpointing_enable(trainer.args.gradient_checkpointing_kwargs)
        results["logps_agreement"] = logps_agreement(contenders)  # before any step: identical weights
        steps = {name: c.step_fn() for name, c in contenders.items()}
        calls = {name: (lambda r, n=name: steps[n](contenders[n].batches[r % len(contenders[n].batches)]))
                 for name in contenders}  # fmt: skip
        times = alternate(calls, settings.repeats, settings.warmup)
        per_example = {}
        for name, c in contenders.items():
            batches = [c.batches[r % len(c.batches)] for r in range(settings.repeats)]
            per_example[name] = [t / b.examples for t, b in zip(times[name], batches)]
            trainer = c.trainer
            step_peak = max(peak_step_bytes(lambda n=name, b=b: steps[n](b)) for b in c.batches[:2])
            persistent = persistent_bytes(trainer)
            results["contenders"][name] = {
                "step_seconds": summarize(times[name]).to_dict(),
                "seconds_per_example": summarize(per_example[name]).to_dict(),
                "processed_tokens_per_step": summarize([b.processed_tokens for b in batches]).to_dict(),
                "padded_tokens_per_step": summarize([b.padded_tokens for b in batches]).to_dict(),
                "packed_attention": getattr(trainer, "packed_attention", None),
                "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
                "memory": {"persistent_bytes": persistent, "step_peak_bytes": step_peak,
                           "peak_bytes": persistent + step_peak},
            }  # fmt: skip
        results["ratios"] = {}
        if "dpo_spin" in per_example:
            dpo = results["contenders"]["dpo_spin"]["memory"]["peak_bytes"]
            for name in names:
                if name != "dpo_spin":
                    results["ratios"][f"time_per_example/{name}/dpo_spin"] = ratio_summary(
                        per_example[name], per_example["dpo_spin"]).to_dict()  # fmt: skip
                    results["ratios"][f"peak_memory/{name}/dpo_spin"] = {
                        "value": results["contenders"][name]["memory"]["peak_bytes"] / dpo
                    }
        results["profile"] = {}
        if args.profile:
            for name, c in contenders.items():
                c.enter_iteration()
                results["profile"][name] = P.profile(c.trainer, c.batches, steps=1, device=device)
    return results


def logps_agreement(contenders: dict) -> dict:
    """Largest difference of the summed response log-probs of each T-SPIN layout from the dense packed layout's, on
    the first batch, with the same weights (before any step)."""
    reference = contenders.get("tspin")
    out = {}
    if reference is None:
        return out
    with torch.no_grad():
        base = reference.trainer.response_logps(reference.trainer.model, dict(reference.batches[0].inputs))
        for name, c in contenders.items():
            if name.startswith("tspin") and name != "tspin":
                logps = c.trainer.response_logps(c.trainer.model, dict(c.batches[0].inputs))
                out[name] = {"max_abs_difference": float((logps - base).abs().max()),
                             "max_abs_logp": float(base.abs().max())}  # fmt: skip
    return out


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


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every table of the run: (title, header, rows)."""
    train, out = results["train"], []
    rows = []
    for name, e in train["contenders"].items():
        m, mem = results["mfu"][name], e["memory"]
        ratio = train["ratios"].get(f"time_per_example/{name}/dpo_spin")
        memory_ratio = train["ratios"].get(f"peak_memory/{name}/dpo_spin")
        rows.append([
            name, str(e["packed_attention"]), "on" if e["gradient_checkpointing"] else "off",
            summarize(e["seconds_per_example"]["values"]).fmt(1000, 1),
            f"{ratio['median']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f})" if ratio else "1",
            f"{m['processed_tokens_per_step']:.0f}", f"{m['achieved_tflops']:.1f}",
            f"{100 * m['mfu_measured_peak']:.1f}%" if m["mfu_measured_peak"] else "-",
            f"{mib(mem['peak_bytes'])} ({mib(mem['persistent_bytes'])} + {mib(mem['step_peak_bytes'])})",
            f"{memory_ratio['value']:.3f}" if memory_ratio else "1",
        ])  # fmt: skip
    out.append((
        "training step: layouts and DPO-as-SPIN (median (min-max) of alternated rounds)",
        ["contender", "packed attention", "grad. ckpt", "ms/example", "/ dpo_spin (paired)", "tokens/step",
         "TFLOP/s", "MFU (measured peak)", "peak MiB (resident + step)", "memory / dpo_spin"],
        rows,
    ))  # fmt: skip
    if train.get("logps_agreement"):
        out.append((
            "summed log-probs vs the dense packed layout (same weights, first batch)",
            ["layout", "max |difference|", "max |log-prob|"],
            [[n, f"{a['max_abs_difference']:.3g}", f"{a['max_abs_logp']:.1f}"]
             for n, a in train["logps_agreement"].items()],
        ))  # fmt: skip
    if train.get("profile"):
        from bench import profile_step as P

        out.append(("time per step by category (torch.profiler, one step each)", ["category", *train["profile"]],
                    P.table_rows(train["profile"])))  # fmt: skip
    if results.get("verdicts"):
        out.append(("targets (T-SPIN / SPIN)", ["what", "value", "verdict"], results["verdicts"]))
    return out


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"# gpu_check: {machine.get('gpu', 'cpu')}, torch {machine['torch']}, transformers {machine['transformers']}",
        "",
        f"Model {results['train']['model']['preset']} ({results['train']['model']['parameters'] / 1e6:.0f}M "
        f"parameters), batch {results['args']['batch_size']}, prompt {results['args']['prompt']}, responses "
        f"{results['args']['response']}; measured peak matmul {results['matmul']['best_tflops']:.1f} TFLOP/s "
        f"({results['matmul']['dtype']}); total {results['total_seconds']:.0f} s.",
    ]
    for title, header, rows in tables(results):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    if results.get("generation"):
        g = results["generation"]["scenarios"]["cap"]["ratio_tokens_per_second"]
        lines += [
            "",
            f"Generation useful tokens/s, ours / SPIN-style: {g['median']:.2f} ({g['min']:.2f}-{g['max']:.2f})",
        ]
    return "\n".join(lines) + "\n"


def report(results: dict) -> None:
    print(f"\ndevice: {results['machine'].get('gpu', 'cpu')}; torch {results['machine']['torch']}; "
          f"model {results['train']['model']['parameters'] / 1e6:.0f}M parameters "
          f"({results['train']['model']['flop_parameters'] / 1e6:.0f}M in FLOP counts)")  # fmt: skip
    mm = results["matmul"]
    print(f"measured peak matmul: {mm['best_tflops']:.1f} TFLOP/s ({mm['dtype']}; per size "
          f"{ {k: round(v, 1) for k, v in mm['per_size'].items()} }); nominal {NOMINAL_TFLOPS:.0f}")  # fmt: skip
    for title, header, rows in tables(results):
        print_table(title, header, rows)
    if results.get("generation"):
        from bench import bench_generation as G

        G.report(results["generation"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes (runs on CPU)")
    parser.add_argument("--preset", default="qwen2-0.5b", choices=list(MODEL_PRESETS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--response", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--contenders", default=",".join(LAYOUTS), help=f"from {', '.join(LAYOUTS)}")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler table")
    parser.add_argument("--gen-prompts", type=int, default=256)
    parser.add_argument("--spin-prompts", type=int, default=32)
    parser.add_argument("--gen-repeats", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--json", help="default: $OUT/gpu_results.json ($OUT defaults to ./out)")
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
    free_memory()  # the trainers (five model copies) are gone before generation starts
    print(f"[{time.perf_counter() - start:.0f}s] training step done", flush=True)
    if not args.skip_generation:
        results["generation"] = generation(args, device)
        print(f"[{time.perf_counter() - start:.0f}s] generation done", flush=True)

    verdicts = []
    ratios = results["train"].get("ratios", {})
    for name in LAYOUTS:
        if f"time_per_example/{name}/dpo_spin" in ratios:
            r = ratios[f"time_per_example/{name}/dpo_spin"]
            verdicts.append([f"training time per example ({name})", f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})",
                             verdict(r["median"], TARGETS["time_per_example"], False)])  # fmt: skip
            m = results["mfu"][name]["mfu_measured_peak"]
            if m is not None:
                verdicts.append([f"MFU ({name})", f"{100 * m:.1f}%", verdict(m, TARGETS["mfu"], True)])
            r = ratios[f"peak_memory/{name}/dpo_spin"]
            verdicts.append([f"peak memory ({name})", f"{r['value']:.3f}",
                             verdict(r["value"], TARGETS["peak_memory"], False)])  # fmt: skip
    if results.get("generation"):
        g = results["generation"]["scenarios"]["cap"]["ratio_tokens_per_second"]
        verdicts.append(["generation tokens/s", f"{g['median']:.2f}",
                         verdict(g["median"], TARGETS["generation_tokens_per_second"], True)])  # fmt: skip
    results["verdicts"] = verdicts
    results["total_seconds"] = time.perf_counter() - start
    report(results)
    print(f"\ntotal {results['total_seconds']:.0f} s")
    out = os.environ.get("OUT") or "out"
    path = args.json or os.path.join(out, "gpu_results.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json(path, results)
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write(markdown(results))
    return results


if __name__ == "__main__":
    main()
