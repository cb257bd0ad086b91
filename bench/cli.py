"""What every benchmark script's `main` shares: the CPU flags, then run, print the report and write `--json`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from .report import write_json


def add_cpu_arguments(parser) -> None:
    """`--flush-denormal` and `--threads`, the CPU flags of every script."""
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


def resolve_device(device: str) -> str:
    """`--device`: `"auto"` is `"cuda"` when a GPU is available, else `"cpu"`; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_main(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    run: Callable[[argparse.Namespace], dict | None],
    report: Callable[[dict], None],
) -> dict | None:
    """Add the CPU flags to `parser`, parse `argv`, apply the flags, `run(args)`, print `report(results)` and write
    them to `--json` (with the CPU settings under `cpu_settings`). A `run` that returns `None` (a worker process that
    printed its own output) skips the report."""
    add_cpu_arguments(parser)
    args = parser.parse_args(argv)
    cpu = apply_cpu_arguments(args)
    results = run(args)
    if results is None:
        return None
    results["cpu_settings"] = cpu
    report(results)
    write_json(args.json, results)
    return results
