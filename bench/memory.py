"""Memory: "peak tensor memory" and the resident set size.

Peak tensor memory is the bytes of the contender's own persistent tensors (policy, reference model, optimizer states)
plus the peak of the bytes allocated on top of them during a training step. On a GPU the step peak comes from
`torch.cuda.max_memory_allocated`; on a CPU from the allocation events of `torch.profiler` (`profile_memory=True`),
which see every tensor allocated through PyTorch's CPU allocator (not oneDNN/MKL scratch buffers). Both contenders are
measured the same way in the same process. `bench_train_step.py --rss` cross-checks it with the peak resident set size
of one subprocess per contender.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

import torch


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


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
