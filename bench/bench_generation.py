"""Regeneration pass: tspin_trl's `generate_responses` vs the SPIN-style fixed-batch loop, on the same prompts.

- `ours`: `tspin_trl.generation.generate_responses`: prompts sorted by length, chunks of `generation_batch_size`
  prompts (automatic unless `--ours-batch`: 32 on CPU, what half the free memory holds on a GPU), each response cut
  at its first end-of-sequence token.
- `spin`: SPIN's loop (its `generate.py` before vLLM): fixed batches of 16 prompts per device in dataset order, left
  padding to a multiple of 8, HF `generate` with a fixed `max_new_tokens`, prompt stripped, decoded, gathered.

Both sample with the same settings (temperature 1, no top-k/top-p) from the same model. Two scenarios:

- `cap`: a random model almost never samples the end of sequence, so every response runs to `max_new_tokens`;
- `realistic`: each response ends at a length fixed by its prompt (log-normal around half the cap, 20% at the cap;
  see `bench.generation.ForcedLengthProcessor`), the same for both contenders whatever the batching.

Throughput counts useful tokens: each response up to and including its end-of-sequence token (identical for both
contenders by construction); `spin` also reports the tokens it generated in all, padding after an early end included.

    python bench/bench_generation.py --quick     # about a minute on 2 CPU cores
    python bench/bench_generation.py             # the CPU reference size
    python bench/bench_generation.py --smoke     # seconds; used by the tests
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

from bench.cli import resolve_device, run_main
from bench.data import prompt_lengths, random_text, response_lengths
from bench.generation import ForcedLengthProcessor, spin_style_generate
from bench.machine import machine_info
from bench.models import MODEL_PRESETS, build_model, build_tokenizer, parameter_count, vocab_chars
from bench.report import print_table, verdict
from bench.timing import alternate, ratio_summary, summarize, timed
from tspin_trl.data import cut_at_eos
from tspin_trl.demo import CHAR_SPECIAL_TOKENS


MODES = {
    "smoke": dict(preset="tiny", num_prompts=24, max_new_tokens=8, prompt_min=8, prompt_max=24, repeats=1,
                  scenarios="cap,realistic"),
    "quick": dict(preset="cpu", num_prompts=64, max_new_tokens=32, prompt_min=16, prompt_max=128, repeats=2,
                  scenarios="realistic"),
    "full": dict(preset="cpu", num_prompts=128, max_new_tokens=64, prompt_min=16, prompt_max=128, repeats=2,
                 scenarios="cap,realistic"),
}  # fmt: skip

TARGETS = {"cpu": 1.5, "cuda": 10.0}


@dataclass
class Settings:
    preset: str
    num_prompts: int
    max_new_tokens: int
    prompt_min: int
    prompt_max: int
    repeats: int
    scenarios: str
    spin_batch: int = 16
    ours_batch: int | None = None
    spin_prompts: int | None = None  # SPIN's loop on the first N prompts only (its tokens/s does not depend on N)
    warmup_rounds: int = 0  # untimed full passes of each contender before the timed rounds
    device: str = "cpu"
    bf16: bool = False
    seed: int = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true")
    mode.add_argument("--quick", action="store_true")
    parser.add_argument("--preset", choices=list(MODEL_PRESETS))
    parser.add_argument("--num-prompts", type=int)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--prompt-min", type=int)
    parser.add_argument("--prompt-max", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--scenarios", help="comma-separated: cap, realistic")
    parser.add_argument("--spin-batch", type=int, default=16, help="SPIN's prompts per batch and device")
    parser.add_argument("--ours-batch", type=int, help="generation_batch_size for ours (default: automatic)")
    parser.add_argument("--spin-prompts", type=int, help="run SPIN's loop on the first N prompts only")
    parser.add_argument("--warmup-rounds", type=int, default=0, help="untimed full passes of each contender first")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json")


def settings_from_args(args) -> Settings:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    values = dict(MODES[mode])
    for key in values:
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    device = resolve_device(args.device)
    return Settings(**values, spin_batch=args.spin_batch, ours_batch=args.ours_batch, spin_prompts=args.spin_prompts,
                    warmup_rounds=args.warmup_rounds, device=device, bf16=device == "cuda")  # fmt: skip


def make_prompts(tokenizer, settings: Settings) -> tuple[list[str], list[list[int]]]:
    import random

    rng = random.Random(settings.seed + 1)
    alphabet = vocab_chars(len(tokenizer) - len(CHAR_SPECIAL_TOKENS))
    lengths = prompt_lengths(settings.num_prompts, settings.prompt_min, settings.prompt_max, settings.seed)
    texts = [random_text(rng, alphabet, n) for n in lengths]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert [len(i) for i in ids] == lengths
    return texts, ids


def run_generation(model, tokenizer, settings: Settings, texts: list[str], ids: list[list[int]]) -> dict:
    """Time both contenders on every scenario; returns the results per scenario."""
    from accelerate import Accelerator
    from transformers import LogitsProcessorList

    from tspin_trl.generation import SamplingSettings, generate_responses

    accelerator = Accelerator(cpu=settings.device == "cpu")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    sampling = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
    spin_n = min(settings.spin_prompts or len(texts), len(texts))
    out = {}
    for scenario in [s for s in settings.scenarios.split(",") if s]:
        extra = {}
        if scenario == "realistic":
            lengths = response_lengths(len(ids), settings.max_new_tokens, settings.seed)
            extra["logits_processor"] = LogitsProcessorList([ForcedLengthProcessor(ids, lengths, pad, eos)])
        elif scenario != "cap":
            raise ValueError(f"unknown scenario {scenario!r}")
        state: dict = {"ours": [], "spin": [], "ours_useful": [], "spin_useful": [], "spin_raw": []}

        def ours(r, n=None, extra=extra, state=state):
            settings_ = SamplingSettings(max_new_tokens=settings.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                                         generation_kwargs=dict(extra))  # fmt: skip
            responses, stats = generate_responses(
                model, accelerator, ids[: n or len(ids)], sampling=settings_, pad_token_id=pad, eos_ids=[eos],
                batch_size=settings.ours_batch, seed=1000 + max(r, 0),
            )  # fmt: skip
            if r >= 0:
                state["ours_useful"].append(sum(len(x) for x in responses))
                state["ours_calls"] = stats.generate_calls
            return responses

        def spin(r, n=spin_n, extra=extra, state=state):
            torch.manual_seed(1000 + max(r, 0))
            raw, _ = spin_style_generate(
                model, accelerator, tokenizer, texts[:n], batch_size=settings.spin_batch,
                max_new_tokens=settings.max_new_tokens, sampling_kwargs={**sampling, **extra},
            )  # fmt: skip
            if r >= 0:
                state["spin_useful"].append(sum(len(cut_at_eos(x, [eos])) for x in raw))
                state["spin_raw"].append(sum(len(x) for x in raw))
            return raw

        # Warm-up: a couple of short calls each (kernels, allocator, lazy imports)
        warm = SamplingSettings(max_new_tokens=4, temperature=1.0, top_p=1.0, top_k=0)
        generate_responses(model, accelerator, ids[:4], sampling=warm, pad_token_id=pad, eos_ids=[eos], seed=0)
        spin_style_generate(model, accelerator, tokenizer, texts[:4], max_new_tokens=4, sampling_kwargs=sampling)
        # `warmup_rounds` full passes first: on a GPU the first decode at every new (batch, length) shape is several
        # times slower (kernel selection per shape); a real pass over a large dataset runs warm.
        times = alternate({"ours": ours, "spin": spin}, settings.repeats, warmup=settings.warmup_rounds)
        same_prompts = None
        if spin_n < len(ids):  # SPIN ran on a prefix: also time ours on exactly those prompts
            useful_before = list(state["ours_useful"])
            for _ in range(settings.warmup_rounds):
                ours(-1, n=spin_n)
            seconds, _ = timed(lambda: ours(0, n=spin_n))
            same_prompts = {"prompts": spin_n, "seconds": seconds, "useful_tokens": state["ours_useful"][-1],
                            "tokens_per_second": state["ours_useful"][-1] / seconds}  # fmt: skip
            state["ours_useful"] = useful_before
        ours_tps = [u / t for u, t in zip(state["ours_useful"], times["ours"])]
        spin_tps = [u / t for u, t in zip(state["spin_useful"], times["spin"])]
        out[scenario] = {
            "ours": {
                "seconds": summarize(times["ours"]).to_dict(),
                "useful_tokens": state["ours_useful"][0],
                "prompts": len(ids),
                "tokens_per_second": summarize(ours_tps).to_dict(),
                "generate_calls": state.get("ours_calls"),
                "batch_size": settings.ours_batch or "auto",
            },
            "spin": {
                "seconds": summarize(times["spin"]).to_dict(),
                "useful_tokens": state["spin_useful"][0],
                "generated_tokens_with_padding": state["spin_raw"][0],
                "prompts": spin_n,
                "tokens_per_second": summarize(spin_tps).to_dict(),
                "generate_calls": -(-spin_n // settings.spin_batch),
                "batch_size": settings.spin_batch,
            },
            "ours_same_prompts": same_prompts,
            "ratio_tokens_per_second": ratio_summary(ours_tps, spin_tps).to_dict(),
            "ratio_wall_time_same_prompts": (
                ratio_summary(times["spin"], times["ours"]).to_dict() if spin_n == len(ids) else None
            ),
        }
    return out


def run(settings: Settings) -> dict:
    results = {"settings": asdict(settings), "machine": machine_info(), "load_before": os.getloadavg()}
    tokenizer = build_tokenizer(MODEL_PRESETS[settings.preset]["vocab_size"])
    texts, ids = make_prompts(tokenizer, settings)
    dtype = torch.bfloat16 if settings.bf16 else torch.float32
    start = time.perf_counter()
    model = build_model(settings.preset, tokenizer, dtype=dtype, device=settings.device, seed=settings.seed)
    results["model"] = {"preset": settings.preset, "parameters": parameter_count(model),
                        "build_seconds": time.perf_counter() - start}  # fmt: skip
    results["scenarios"] = run_generation(model, tokenizer, settings, texts, ids)
    results["load_after"] = os.getloadavg()
    return results


def report(results: dict) -> None:
    s = results["settings"]
    print(f"\nmodel {s['preset']} ({results['model']['parameters'] / 1e6:.1f}M parameters), device {s['device']}, "
          f"{s['num_prompts']} prompts of {s['prompt_min']}-{s['prompt_max']} tokens, max_new_tokens "
          f"{s['max_new_tokens']}, {s['repeats']} rounds")  # fmt: skip
    target = TARGETS["cuda" if s["device"] == "cuda" else "cpu"]
    rows, ratio_rows = [], []
    for scenario, r in results["scenarios"].items():
        for name in ("ours", "spin"):
            e = r[name]
            rows.append([
                scenario, name, f"{e['prompts']}", f"{e['batch_size']}", f"{e['generate_calls']}",
                summarize(e["seconds"]["values"]).fmt(1, 2), f"{e['useful_tokens']}",
                f"{e.get('generated_tokens_with_padding', e['useful_tokens'])}",
                summarize(e["tokens_per_second"]["values"]).fmt(1, 0),
            ])  # fmt: skip
        same = r.get("ours_same_prompts")
        if same:
            rows.append([scenario, "ours (same prompts as spin)", f"{same['prompts']}", r["ours"]["batch_size"], "-",
                         f"{same['seconds']:.2f}", f"{same['useful_tokens']}", f"{same['useful_tokens']}",
                         f"{same['tokens_per_second']:.0f}"])  # fmt: skip
        ratio = r["ratio_tokens_per_second"]
        ratio_rows.append([scenario, f"{ratio['median']:.2f}", f"{ratio['min']:.2f}-{ratio['max']:.2f}",
                           verdict(ratio["median"], target, higher_is_better=True)])  # fmt: skip
    print_table(
        "generation pass (median (min-max))",
        [
            "scenario",
            "contender",
            "prompts",
            "batch",
            "calls",
            "wall s",
            "useful tok",
            "generated tok",
            "useful tok/s",
        ],
        rows,
    )
    print_table("ours / SPIN-style, useful tokens per second (paired by round)",
                ["scenario", "median", "min-max", "target"], ratio_rows)  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_main(parser, argv, lambda args: run(settings_from_args(args)), report)


if __name__ == "__main__":
    main()
