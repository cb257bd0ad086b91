"""Shared pieces of the benchmark scripts: models built from configs, synthetic data, the contenders, timing, memory.

Nothing here downloads anything. Models are randomly initialised from a config (a tiny character-level preset for
smoke runs, Llama configs sized so that compute dominates on a CPU, a 0.5B-class Qwen2 config for a GPU), and the
tokenizer is a synthetic one-character-per-token tokenizer whose vocabulary matches the model's, so random token ids
round-trip exactly through text (both trainers take text datasets) and every token id of the vocabulary can occur.

Timing: contenders run on identical models, data, batch sizes and sequence lengths; after a warm-up they are run in
alternation (A, B, C, then B, C, A, ...: the order rotates every round), and medians and min-max are reported.

Memory ("peak tensor memory"): the bytes of the contender's own persistent tensors (policy, reference model,
optimizer states) plus the peak of the bytes allocated on top of them during a training step. On a GPU the step peak
comes from `torch.cuda.max_memory_allocated`; on a CPU from the allocation events of `torch.profiler`
(`profile_memory=True`), which see every tensor allocated through PyTorch's CPU allocator (not oneDNN/MKL scratch
buffers). Both contenders are measured the same way in the same process. `bench_train_step.py --rss` cross-checks it
with the peak resident set size of one subprocess per contender.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


# libgomp threads spin for a while at every barrier: on a machine where other processes also run (2 cores shared),
# that made a tiny training step 50x slower (570 ms instead of 11 ms). Passive waiting costs nothing measurable when
# the cores are free. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DATASETS_VERBOSITY", "error")

import warnings  # noqa: E402

import torch  # noqa: E402
from transformers import LogitsProcessor  # noqa: E402


# Scripts run as `python bench/<script>.py`: make the repository's package importable when it is not installed.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


# ---------------------------------------------------------------------------------------------------------------------
# Models and tokenizer
# ---------------------------------------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]

# Model presets, by name. `vocab_size` is also the tokenizer's size.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # ~0.1M parameters: the smoke tests.
    "tiny": dict(arch="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 vocab_size=512),
    # ~5.7M parameters (4.1M of them in the embedding and LM head): --quick runs on 2 CPU cores.
    "cpu-small": dict(arch="llama", hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=688, vocab_size=8000),
    # ~45M parameters (13M in the decoder layers): the CPU reference size; a step is compute-bound (matmuls and
    # the LM head's vocabulary-wide math), not overhead-bound.
    "cpu": dict(arch="llama", hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1376,
                vocab_size=32000),
    # ~92M parameters: the largest CPU point of the scaling runs.
    "cpu-large": dict(arch="llama", hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=2048, vocab_size=32000),
    # Qwen2.5-0.5B's shape (494M parameters, tied embeddings): the GPU check.
    "qwen2-0.5b": dict(arch="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
                       rope_theta=1_000_000.0, max_position_embeddings=32768),
}  # fmt: skip


def _vocab_chars(count: int) -> list[str]:
    """`count` distinct single characters, none of them whitespace, from U+4E00 upwards (CJK, then beyond)."""
    chars, code = [], 0x4E00
    while len(chars) < count:
        if not (0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE):
            ch = chr(code)
            if not ch.isspace():
                chars.append(ch)
        code += 1
    return chars


def build_tokenizer(vocab_size: int, model_max_length: int = 4096):
    """A one-character-per-token tokenizer with exactly `vocab_size` tokens (8 special tokens, then characters).

    Any id decodes to one character (or a special token) and encodes back to the same id, so generated ids survive
    a decode/encode round trip and text lengths are token counts. Padding `<pad>` (0), end of sequence `<|end|>` (7).
    """
    from tspin_trl.demo import build_char_tokenizer

    return build_char_tokenizer(model_max_length, characters=_vocab_chars(vocab_size - len(SPECIAL_TOKENS)))


def build_model(preset: str, tokenizer, *, dtype=torch.float32, device="cpu", seed: int = 0, attn="sdpa"):
    """A randomly initialised causal LM of the given preset, in eval mode, on `device`."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(MODEL_PRESETS[preset])
    arch = spec.pop("arch")
    if spec["vocab_size"] != len(tokenizer):
        raise ValueError(f"preset {preset} has vocab_size {spec['vocab_size']}, tokenizer has {len(tokenizer)}")
    spec.setdefault("num_key_value_heads", spec["num_attention_heads"])
    spec.setdefault("max_position_embeddings", 4096)
    spec.setdefault("tie_word_embeddings", False)
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    config = config_cls(**spec, **ids, dtype=dtype)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls(config).to(dtype)
    for key, value in ids.items():
        setattr(model.generation_config, key, value)
    model.eval()
    return model


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def flop_parameter_count(model) -> int:
    """Parameters that do matmul work per token: all of them minus the input embedding, unless it is tied."""
    total = parameter_count(model)
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total if embed is head else total - embed.numel()


def save_pretrained(model, tokenizer, directory: str) -> str:
    """Save model + tokenizer, so DPOTrainer can load its reference model from the path (it reloads by name)."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load_pretrained(path: str, *, dtype=torch.float32, device="cpu", attn="sdpa"):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn)
    return model.to(device)


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def lognormal_lengths(rng: random.Random, n: int, low: int, high: int, median: float, sigma: float) -> list[int]:
    """`n` lengths from a log-normal distribution with the given median, clipped to [low, high]."""
    return [int(min(high, max(low, round(rng.lognormvariate(math.log(median), sigma))))) for _ in range(n)]


def prompt_lengths(n: int, low: int = 16, high: int = 128, seed: int = 0) -> list[int]:
    """A realistic spread of prompt lengths: log-normal (sigma 0.6), median 2.5 * low (40 tokens for [16, 128])."""
    rng = random.Random(seed)
    return lognormal_lengths(rng, n, low, high, median=min(high, 2.5 * low), sigma=0.6)


def random_text(rng: random.Random, alphabet: Sequence[str], length: int) -> str:
    return "".join(rng.choices(alphabet, k=length))


@dataclass
class BenchData:
    """Text rows for both trainers: the same prompts, real responses and synthetic responses for every contender."""

    rows: list[dict[str, str]]  # prompt, completion (real), synthetic, proto
    prompt_max: int
    response_max: int

    @property
    def max_length(self) -> int:
        return self.prompt_max + self.response_max

    def tspin_rows(self, synthetic: bool = True, proto: bool = True) -> list[dict[str, str]]:
        keys = ["prompt", "completion"] + (["synthetic"] if synthetic else []) + (["proto"] if proto else [])
        return [{k: row[k] for k in keys} for row in self.rows]

    def dpo_rows(self) -> list[dict[str, str]]:
        """SPIN as DPO: the real response is chosen, the synthetic one rejected."""
        return [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["synthetic"]} for r in self.rows]

    def prompts(self) -> list[str]:
        return [row["prompt"] for row in self.rows]


def make_data(
    tokenizer,
    n: int,
    *,
    prompt_low: int = 16,
    prompt_high: int = 128,
    response_max: int = 64,
    seed: int = 0,
    fixed_lengths: bool = False,
) -> BenchData:
    """`n` rows of random text: prompts of [prompt_low, prompt_high] tokens (log-normal spread), responses of at most
    `response_max` tokens including the end-of-sequence token the trainers append. Real responses are log-normal
    around half the cap; synthetic and proto responses too, with a third of them at the cap (generations that ran
    out of tokens). `fixed_lengths`: every prompt is `prompt_high` tokens and every response `response_max`."""
    rng = random.Random(seed)
    alphabet = _vocab_chars(len(tokenizer) - len(SPECIAL_TOKENS))
    lengths = [prompt_high] * n if fixed_lengths else prompt_lengths(n, prompt_low, prompt_high, seed)
    cap = response_max - 1  # the trainers append an eos token

    def response_len() -> int:
        if fixed_lengths:
            return cap
        return lognormal_lengths(rng, 1, min(8, cap), cap, median=max(1, cap / 2), sigma=0.5)[0]

    rows = []
    for length in lengths:
        rows.append(
            {
                "prompt": random_text(rng, alphabet, length),
                "completion": random_text(rng, alphabet, response_len()),
                "synthetic": random_text(rng, alphabet, cap if rng.random() < 1 / 3 else response_len()),
                "proto": random_text(rng, alphabet, cap if rng.random() < 1 / 3 else response_len()),
            }
        )
    return BenchData(rows=rows, prompt_max=prompt_high, response_max=response_max)


# ---------------------------------------------------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------------------------------------------------


def common_training_kwargs(output_dir: str, batch_size: int, max_length: int, device: str, bf16: bool) -> dict:
    """Training arguments both contenders share (same optimizer, batch, length; no checkpointing, no logging)."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=1,
        max_length=max_length,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        bf16=bf16,
        use_cpu=device == "cpu",
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        dataloader_num_workers=0,
        seed=0,
    )


def tspin_trainer(model, tokenizer, rows: list[dict], *, batch_size: int, max_length: int, response_max: int,
                  output_dir: str, device: str = "cpu", bf16: bool = False, num_iterations: int = 1,
                  callbacks=None, **config):  # fmt: skip
    from datasets import Dataset

    from tspin_trl import TSPINConfig, TSPINTrainer

    kwargs = common_training_kwargs(output_dir, batch_size, max_length, device, bf16)
    kwargs.update(objective="tspin", alpha=1.0, beta=0.1, num_iterations=num_iterations,
                  max_completion_length=response_max, use_proto_cache=False)  # fmt: skip
    kwargs.update(config)
    args = TSPINConfig(**kwargs)
    return TSPINTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=callbacks
    )


def dpo_trainer(model, tokenizer, rows: list[dict], *, batch_size: int, max_length: int, output_dir: str,
                device: str = "cpu", bf16: bool = False, precompute: bool = False, model_dtype=torch.float32,
                **config):  # fmt: skip
    """TRL's DPOTrainer as SPIN (sigmoid loss, beta 0.1, real = chosen, synthetic = rejected).

    `model` is a path or a model loaded from one: the reference model is reloaded from that path (resident unless
    `precompute`).
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    kwargs = common_training_kwargs(output_dir, batch_size, max_length, device, bf16)
    kwargs.update(beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=precompute)
    if isinstance(model, str):
        kwargs["model_init_kwargs"] = {"dtype": model_dtype}
    kwargs.update(config)
    args = DPOConfig(**kwargs)
    return DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


@dataclass
class Batch:
    """A collated batch and the token counts of its examples (counted from the examples, not the padded tensors)."""

    inputs: dict
    examples: int
    pair_tokens: int  # prompt+real and prompt+synthetic: the sequences SPIN trains on
    tokens: int  # every sequence the policy trains on (T-SPIN adds prompt+proto)

    @property
    def processed_tokens(self) -> int:
        """Non-padding positions of the collated batch: what the forward pass computes usefully."""
        return int(self.inputs["attention_mask"].sum())

    @property
    def padded_tokens(self) -> int:
        """Positions of the collated batch, padding included: what one forward pass computes."""
        return int(self.inputs["input_ids"].numel())


def tspin_batches(trainer, batch_size: int, num_batches: int, proto: bool = True) -> list[Batch]:
    """Collated batches of the T-SPIN trainer, examples [0, B), [B, 2B), ... (wrapping around)."""
    dataset = trainer.train_dataset
    dataset.include_proto = proto
    out = []
    for b in range(num_batches):
        items = [dataset[(b * batch_size + i) % len(dataset)] for i in range(batch_size)]
        pair = sum(2 * len(x["prompt_ids"]) + len(x["real_ids"]) + len(x["synthetic_ids"]) for x in items)
        extra = sum(len(x["prompt_ids"]) + len(x["proto_ids"]) for x in items) if proto else 0
        out.append(Batch(trainer.data_collator(items), batch_size, pair, pair + extra))
    return out


def dpo_batches(trainer, batch_size: int, num_batches: int) -> list[Batch]:
    dataset = trainer.train_dataset
    out = []
    for b in range(num_batches):
        items = [dataset[(b * batch_size + i) % len(dataset)] for i in range(batch_size)]
        pair = sum(2 * len(x["prompt_ids"]) + len(x["chosen_ids"]) + len(x["rejected_ids"]) for x in items)
        out.append(Batch(trainer.data_collator(items), batch_size, pair, pair))
    return out


def make_step(trainer) -> Callable[[dict], float]:
    """One real optimisation step of `trainer` on a pre-built batch: `training_step` (forward + backward), gradient
    clipping, optimizer step, zero_grad. Returns the loss."""
    if trainer.optimizer is None:
        trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the `train()` loop otherwise
    model = trainer.model
    max_norm = trainer.args.max_grad_norm

    def step(batch: Batch | dict) -> float:
        loss = trainer.training_step(model, dict(batch.inputs if isinstance(batch, Batch) else batch))
        if max_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        for metrics in trainer._metrics.values():  # both trainers accumulate per-step metrics until `log`
            metrics.clear()
        return loss

    return step


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    synchronize()
    start = time.perf_counter()
    out = fn()
    synchronize()
    return time.perf_counter() - start, out


def alternate(contenders: dict[str, Callable[[int], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every contender `warmup` times, then `repeats` rounds in alternation, the order rotating each round.

    Each contender is called with the round index (`-1 - w` during warm-up). Returns the seconds of every timed call.
    """
    names = list(contenders)
    for w in range(warmup):
        for name in names:
            contenders[name](-1 - w)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, _ = timed(lambda name=name, r=r: contenders[name](r))
            times[name].append(seconds)
    return times


@dataclass
class Summary:
    median: float
    low: float
    high: float
    n: int
    values: list[float] = field(default_factory=list)

    def fmt(self, scale: float = 1.0, digits: int = 1) -> str:
        return f"{self.median * scale:.{digits}f} ({self.low * scale:.{digits}f}-{self.high * scale:.{digits}f})"

    def to_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n, "values": self.values}


def summarize(values: Sequence[float]) -> Summary:
    values = list(values)
    return Summary(statistics.median(values), min(values), max(values), len(values), values)


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> Summary:
    """Ratios of paired measurements (round by round), so slow phases of a noisy machine cancel out."""
    return summarize([a / b for a, b in zip(numerator, denominator)])


# ---------------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------------


def tensor_bytes(*objects) -> int:
    """Bytes of the distinct storages of the given modules' parameters/buffers and optimizers' states."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            key = (storage.data_ptr(), t.device.type)
            if key not in seen and storage.nbytes():
                seen.add(key)
                total += storage.nbytes()

    for obj in objects:
        if obj is None:
            continue
        if isinstance(obj, torch.nn.Module):
            for t in list(obj.parameters()) + list(obj.buffers()):
                add(t)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for t in state.values():
                    add(t)
        elif hasattr(obj, "optimizer"):  # accelerate's AcceleratedOptimizer
            for state in obj.optimizer.state.values():
                for t in state.values():
                    add(t)
    return total


def persistent_bytes(trainer) -> int:
    """The contender's own resident tensors: policy, reference model (if any), optimizer states."""
    return tensor_bytes(trainer.model, getattr(trainer, "ref_model", None), trainer.optimizer)


def peak_step_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated during `fn()` on top of what was allocated before it (GPU: CUDA allocator statistics;
    CPU: torch.profiler allocation events)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and int(e.device_type()) == 0]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image: `VmHWM` (`ru_maxrss` would also count the parent's RSS at
    fork, which `exec` keeps)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------------------------------
# Generation: the SPIN-style loop, forced response lengths
# ---------------------------------------------------------------------------------------------------------------------


def spin_style_generate(model, accelerator, tokenizer, prompts: Sequence[str], *, batch_size: int = 16,
                        max_new_tokens: int, sampling_kwargs: dict | None = None,
                        pad_to_multiple_of: int = 8) -> tuple[list[list[int]], list[str]]:  # fmt: skip
    """SPIN's generation loop (its `generate.py` before it moved to vLLM): split the prompts over processes, fixed
    batches of `batch_size` prompts in dataset order, left padding (to a multiple of 8), `model.generate` with a fixed
    `max_new_tokens`, prompt stripped, decoded to text, gathered. Returns the completions' token ids (as generated,
    padding after the end of sequence included) and their decoded texts, in prompt order."""
    from accelerate.utils import gather_object

    results = []
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    try:
        with accelerator.split_between_processes(list(prompts)) as mine:
            for start in range(0, len(mine), batch_size):
                batch = tokenizer(
                    mine[start : start + batch_size],
                    return_tensors="pt",
                    padding="longest",
                    truncation=False,
                    pad_to_multiple_of=pad_to_multiple_of,
                    add_special_tokens=False,
                ).to(device)
                with torch.no_grad():
                    output = model.generate(
                        **batch,
                        max_new_tokens=max_new_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        **(sampling_kwargs or {}),
                    )
                completions = output[:, batch["input_ids"].size(1) :]
                texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
                results.extend(zip(completions.tolist(), texts))
    finally:
        tokenizer.padding_side = "right"
    gathered = gather_object(results) if accelerator.num_processes > 1 else results
    return [ids for ids, _ in gathered], [text for _, text in gathered]


def cut_at_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


class ForcedLengthProcessor(LogitsProcessor):
    """A logits processor that ends each response at a length decided by its prompt (a stand-in for a trained model's
    realistic response lengths: a random model almost never samples the end of sequence).

    `lengths` maps the first `key_tokens` tokens of a prompt to its response length (end-of-sequence token included).
    The decision depends only on the prompt and the number of tokens generated, never on the batch or its padding, so
    every contender generates exactly the same number of useful tokens per prompt.
    """

    def __init__(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int], pad_id: int, eos_id: int,
                 key_tokens: int = 12):  # fmt: skip
        self.key_tokens, self.pad_id, self.eos_id = key_tokens, pad_id, eos_id
        self.table = {tuple(p[:key_tokens]): (len(p), n) for p, n in zip(prompts, lengths)}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        is_token = input_ids != self.pad_id
        start = is_token.int().argmax(dim=1)  # left padding: the first token of the prompt
        width = min(self.key_tokens, input_ids.size(1))
        index = (start[:, None] + torch.arange(width, device=input_ids.device)).clamp(max=input_ids.size(1) - 1)
        keys = input_ids.gather(1, index).tolist()
        starts = start.tolist()
        force = []
        for row, key in enumerate(keys):
            prompt_len, target = self.table.get(tuple(key), (None, None))
            generated = input_ids.size(1) - starts[row] - prompt_len if prompt_len is not None else -1
            force.append(target is not None and generated >= target - 1)
        if any(force):
            rows = torch.tensor(force, device=scores.device)
            forced = torch.full_like(scores[0], float("-inf"))
            forced[self.eos_id] = 0.0
            scores = torch.where(rows[:, None], forced, scores)
        return scores


def response_lengths(n: int, cap: int, seed: int = 0) -> list[int]:
    """Realistic response lengths for forced-length generation: log-normal around half the cap, 20% at the cap."""
    rng = random.Random(seed + 17)
    lengths = lognormal_lengths(rng, n, 4, cap, median=cap / 2, sigma=0.6)
    return [cap if rng.random() < 0.2 else length for length in lengths]


# ---------------------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------------------


def add_cpu_arguments(parser) -> None:
    parser.add_argument(
        "--flush-denormal",
        action="store_true",
        help="treat subnormal floats as zero on CPU (torch.set_flush_denormal), set before any thread starts",
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")


def apply_cpu_arguments(args) -> dict:
    """Apply --flush-denormal / --threads; call before any computation (worker threads inherit the FP mode)."""
    if getattr(args, "flush_denormal", False):
        torch.set_flush_denormal(True)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return {"flush_denormal": bool(getattr(args, "flush_denormal", False)), "threads": torch.get_num_threads()}


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": os.getloadavg(),
    }
    try:
        import transformers
        import trl

        info["transformers"], info["trl"] = transformers.__version__, trl.__version__
    except ImportError:
        pass
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n## {title}")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return f"{'met' if ok else 'MISSED'} (target {'>=' if higher_is_better else '<='} {target:g})"


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    print(f"\nwrote {path}")


def mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


@contextlib.contextmanager
def workdir(prefix: str = "tspin_bench_"):
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield d


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
