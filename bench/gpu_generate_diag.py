"""Diagnostic: per-decode-step time of HF `generate` vs `generate_responses` by batch size (GPU, about a minute).

For each batch size the step time is (t(n_long) - t(n_short)) / (n_long - n_short): prefill and call overheads
cancel. Variants: HF `generate` called directly with SPIN's keyword arguments, on prompts of one length (no padding)
and on left-padded prompts of 16-128 tokens; `tspin_trl.generation.generate_responses` on the same padded prompts.

    python bench/gpu_generate_diag.py            # GPU
    python bench/gpu_generate_diag.py --smoke    # tiny model, CPU
"""

from __future__ import annotations

import argparse
import os
import sys


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
import torch

from bench.data import prompt_lengths
from bench.models import MODEL_PRESETS, build_model, build_tokenizer
from bench.report import write_json
from bench.timing import synchronize, timed
from tspin_trl.demo import CHAR_SPECIAL_TOKENS


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--preset", default="qwen2-0.5b")
    parser.add_argument("--batches", default="16,64,256")
    parser.add_argument("--short", type=int, default=4)
    parser.add_argument("--long", type=int, default=36)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every measurement, in alternation")
    parser.add_argument("--profile", type=int, help="cProfile one long call of each variant at this batch size")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset, args.batches, args.short, args.long = "tiny", "4,8", 2, 6
    from accelerate import Accelerator

    from tspin_trl.generation import SamplingSettings, generate_responses

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = build_tokenizer(MODEL_PRESETS[args.preset]["vocab_size"])
    model = build_model(args.preset, tokenizer, dtype=dtype, device=device)
    accelerator = Accelerator(cpu=device == "cpu")
    batches = [int(b) for b in args.batches.split(",")]
    n = max(batches)
    gen = torch.Generator().manual_seed(0)
    low = len(CHAR_SPECIAL_TOKENS)
    fixed = torch.randint(low, len(tokenizer), (n, 128), generator=gen)
    lengths = prompt_lengths(n, 16, 128)
    varied = [torch.randint(low, len(tokenizer), (m,), generator=gen).tolist() for m in lengths]
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    spin_kwargs = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, pad_token_id=pad, eos_token_id=eos)

    def hf_fixed(b, new):
        ids = fixed[:b].to(device)
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, **spin_kwargs)

    def hf_padded(b, new):
        width = max(len(p) for p in varied[:b])
        width = -(-width // 8) * 8
        ids = torch.full((b, width), pad)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, p in enumerate(varied[:b]):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        return model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                              **spin_kwargs)  # fmt: skip

    def ours(b, new):
        sampling = SamplingSettings(max_new_tokens=new, temperature=1.0, top_p=1.0, top_k=0)
        return generate_responses(model, accelerator, varied[:b], sampling=sampling, pad_token_id=pad, eos_ids=[eos],
                                  batch_size=b)  # fmt: skip

    variants = {"hf_fixed_len": hf_fixed, "hf_left_padded": hf_padded, "generate_responses": ours}
    with torch.no_grad():
        for fn in variants.values():
            fn(batches[0], 2)
        results = {}
        for r, b in [(r, b) for r in range(args.rounds) for b in batches]:
            for name, fn in variants.items():
                short, _ = timed(lambda fn=fn, b=b: fn(b, args.short))
                long, _ = timed(lambda fn=fn, b=b: fn(b, args.long))
                step = (long - short) / (args.long - args.short)
                results[f"{name}/{b}/{r}"] = {"step_ms": 1000 * step, "short_s": short, "long_s": long}
                print(f"round {r} {name:20s} batch {b:4d}: {1000 * step:6.1f} ms per decode step "
                      f"({b / step:7.0f} tokens/s); {args.short} tokens {short:.2f} s", flush=True)  # fmt: skip
        if args.profile:
            import cProfile
            import pstats

            for name, fn in variants.items():
                profiler = cProfile.Profile()
                synchronize()
                profiler.enable()
                fn(args.profile, args.long)
                synchronize()
                profiler.disable()
                print(f"\n===== cProfile {name}, batch {args.profile}, {args.long} new tokens")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    write_json(args.json or (os.path.join(os.environ["OUT"], "gen_diag.json") if os.environ.get("OUT") else None),
               results)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
