"""Where a training step's time goes: torch.profiler over real steps, summarised by part of the model.

Every operator's *self* time (device time on a GPU, CPU time on a CPU) is charged to one category:

- `attention`: inside a decoder layer's `self_attn` (q/k/v/o projections, rotary, the attention kernel), forward
  and backward; `attention kernel` is the kernel alone (SDPA/FlexAttention ops), a part of `attention`;
- `mlp`: inside a decoder layer's `mlp`; `other backbone`: embeddings, norms, residuals;
- `lm head + log-softmax`: forward outside the backbone (TRL's fused LM head and the loss) and its backward;
- `reference forward`: DPOTrainer's no-grad reference model forward (LM head included);
- `optimizer`: `Optimizer.step`/`zero_grad` and gradient clipping;
- `copies`: `copy_`/`to`/`cat`/`contiguous`-type ops and memcpy wherever they occur (taken out of their category);
- `other`: everything else (the trainer's Python-side work, metric gathering).

Backward operators are charged to the category of the forward operator that created their autograd node (matched
by sequence number). Forward ranges come from module hooks that open `record_function` ranges.

    python bench/profile_step.py --preset cpu --batch-size 4      # the table in docs/benchmarks.md
    python bench/profile_step.py --smoke
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
import torch
from torch.autograd import profiler as autograd_profiler

from bench.cli import add_cpu_arguments, apply_cpu_arguments
from bench.models import MODEL_PRESETS
from bench.report import print_table, write_json
from bench.timing import synchronize
from bench.trainers import make_step, temporary_workdir


CATEGORIES = (
    "attention",
    "attention kernel",
    "mlp",
    "other backbone",
    "lm head + log-softmax",
    "reference forward",
    "optimizer",
    "copies",
    "other",
)
_RANGES = {
    "prof::attention": "attention",
    "prof::mlp": "mlp",
    "prof::backbone": "other backbone",
    "prof::reference": "reference forward",
}
_COPY_OPS = ("aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone", "aten::cat", "Memcpy")
_ATTENTION_KERNEL = (
    "scaled_dot_product",
    "flash_attention",
    "efficient_attention",
    "flex_attention",
    "cudnn_attention",
)


class _Ranges:
    """Module hooks that open a `record_function` range around each attention, MLP and backbone forward."""

    def __init__(self, model: torch.nn.Module, reference: torch.nn.Module | None = None):
        self.handles = []
        backbone = model.get_decoder() if hasattr(model, "get_decoder") else None
        modules = list(model.named_modules()) + ([("", reference)] if reference is not None else [])
        for name, module in modules:
            label = None
            if module is reference:
                label = "prof::reference"
            elif name.endswith("self_attn"):
                label = "prof::attention"
            elif name.endswith(".mlp"):
                label = "prof::mlp"
            elif module is backbone:
                label = "prof::backbone"
            if label:
                self.handles.append(module.register_forward_pre_hook(self._enter(label)))
                self.handles.append(module.register_forward_hook(self._exit))
        self.stack: list = []

    def _enter(self, label):
        def hook(module, args):
            scope = autograd_profiler.record_function(label)
            scope.__enter__()
            self.stack.append(scope)

        return hook

    def _exit(self, module, args, output):
        self.stack.pop().__exit__(None, None, None)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _ancestors(event):
    parent = event.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent


def _forward_category(event) -> str | None:
    for parent in [event, *_ancestors(event)]:
        if parent.name in _RANGES:
            return _RANGES[parent.name]
    return None


def summarize(events, device: str) -> dict[str, float]:
    """Seconds per category (see the module docstring) from a profiler's `events()`."""
    self_time = (lambda e: e.self_device_time_total) if device == "cuda" else (lambda e: e.self_cpu_time_total)
    by_sequence: dict[int, str] = {}
    for event in events:  # forward ops that recorded an autograd node
        if getattr(event, "sequence_nr", -1) >= 0 and not event.name.startswith("autograd::"):
            by_sequence.setdefault(event.sequence_nr, _forward_category(event) or "lm head + log-softmax")
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        seconds = self_time(event) / 1e6
        if seconds <= 0 or event.name in _RANGES:
            continue
        chain = [event, *_ancestors(event)]
        names = [e.name for e in chain]
        if any(n.startswith("Optimizer.") or "clip_grad" in n for n in names):
            category = "optimizer"
        elif any(n.startswith(_COPY_OPS) for n in names[:1]):
            category = "copies"
        else:
            backward = next((e for e in chain if e.name.startswith("autograd::engine::evaluate_function")), None)
            if backward is not None:
                category = by_sequence.get(backward.sequence_nr, "lm head + log-softmax")
                if "ChunkedLogProb" in backward.name:
                    category = "lm head + log-softmax"
            else:
                category = _forward_category(event)
                if category is None:
                    inside_loss = any(n.startswith(("prof::step_forward",)) for n in names)
                    category = "lm head + log-softmax" if inside_loss else "other"
        if category == "attention" and any(k in n for n in names for k in _ATTENTION_KERNEL):
            totals["attention kernel"] += seconds
        totals[category] += seconds
    return {c: totals.get(c, 0.0) for c in CATEGORIES}


def profile(trainer, batches: list, steps: int = 2, device: str = "cpu") -> dict:
    """Profile `steps` real steps (after one warm-up) of `trainer`; returns seconds per step by category."""
    step = make_step(trainer)
    model = trainer.model
    loss_fn = trainer.compute_loss

    def compute_loss(*args, **kwargs):
        with autograd_profiler.record_function("prof::step_forward"):
            return loss_fn(*args, **kwargs)

    trainer.compute_loss = compute_loss
    ranges = _Ranges(
        model.get_base_model() if hasattr(model, "get_base_model") else model, getattr(trainer, "ref_model", None)
    )
    try:
        step(batches[0])
        synchronize()
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for i in range(steps):
                step(batches[i % len(batches)])
            synchronize()
    finally:
        ranges.remove()
        trainer.compute_loss = loss_fn
    totals = summarize(prof.events(), device)
    wall = sum(v for k, v in totals.items() if k != "attention kernel")
    return {"seconds_per_step": {k: v / steps for k, v in totals.items()}, "profiled_seconds_per_step": wall / steps}


def table_rows(profiles: dict[str, dict]) -> list[list[str]]:
    rows = []
    for category in CATEGORIES:
        row = [category]
        for result in profiles.values():
            seconds = result["seconds_per_step"][category]
            share = seconds / result["profiled_seconds_per_step"] if result["profiled_seconds_per_step"] else 0
            row.append(f"{seconds * 1000:.1f} ms ({100 * share:.0f}%)")
        rows.append(row)
    rows.append(["total (profiled)"] + [f"{r['profiled_seconds_per_step'] * 1000:.1f} ms" for r in profiles.values()])
    return rows


def markdown(profiles: dict[str, dict]) -> str:
    header = ["category", *profiles]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(profiles)]
    return "\n".join(lines)


def main(argv=None) -> dict:
    from bench import bench_train_step as T

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--preset", default="cpu", choices=list(MODEL_PRESETS))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--response-max", type=int, default=64)
    parser.add_argument("--prompt-max", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--contenders", default="tspin,dpo_spin")
    parser.add_argument("--tspin-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json")
    add_cpu_arguments(parser)
    args = parser.parse_args(argv)
    apply_cpu_arguments(args)
    if args.smoke:
        args.preset, args.batch_size, args.response_max, args.prompt_max, args.steps = "tiny", 2, 16, 24, 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = T.Settings(
        preset=args.preset, batch_size=args.batch_size, response_max=args.response_max, prompt_min=16,
        prompt_max=args.prompt_max, num_examples=args.batch_size * 2, repeats=1, warmup=1, epoch=False,
        contenders=tuple(args.contenders.split(",")), device=device, bf16=device == "cuda",
        tspin_args=T.parse_kv(args.tspin_arg),
    )  # fmt: skip
    with temporary_workdir() as workdir:
        tokenizer, data, path, _ = T.prepare(settings, workdir)
        contenders = T.build(settings, settings.contenders, workdir, tokenizer, data, path)
        profiles = {}
        for name, c in contenders.items():
            c.enter_iteration()
            profiles[name] = profile(c.trainer, c.batches, args.steps, device)
    print_table(f"time per step by category ({args.preset}, batch {args.batch_size}, {device})",
                  ["category", *profiles], table_rows(profiles))  # fmt: skip
    write_json(args.json, {"settings": vars(args), "profiles": profiles})
    return profiles


if __name__ == "__main__":
    main()
