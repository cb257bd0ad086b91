"""Telling a launch that asked for several processes and got one: accelerate's simple launcher, or processes that were
started together but each train alone (on CPU without `--use_cpu true`)."""

import os
from collections.abc import Mapping


def single_process_launch_warning(env: Mapping[str, str] | None = None) -> str | None:
    """
    A warning when this process was started by `accelerate launch --num_processes N` (N > 1) as the only process.

    Without `--multi_gpu` (and on a machine without several GPUs), `accelerate launch --num_processes 2` and
    `accelerate launch --cpu --num_processes 2` start one process with accelerate's simple launcher. That launcher
    sets `ACCELERATE_USE_CPU` (the distributed launchers do not) and, only when more than one process was asked for,
    `MASTER_ADDR`; it never sets `WORLD_SIZE`, which every distributed launcher (torchrun, `--multi_gpu`, DeepSpeed)
    does. A `MASTER_ADDR` exported by the user for a one-process launch reads the same: the warning says "looks like".

    Args:
        env (`Mapping[str, str]`, *optional*):
            The environment to read; defaults to `os.environ`.

    Returns:
        `str` or `None`: the warning, or `None` when the process is not such a launch.
    """
    env = os.environ if env is None else env
    if "ACCELERATE_USE_CPU" not in env or "MASTER_ADDR" not in env or "WORLD_SIZE" in env:
        return None
    return (
        "this looks like `accelerate launch --num_processes N` with N > 1 that started a single process: without "
        "--multi_gpu, accelerate's simple launcher runs one process (MASTER_ADDR is set, WORLD_SIZE is not). On CPU, "
        "launch several with `accelerate launch --multi_gpu --num_processes N -m tspin_trl train ... --use_cpu true` "
        "(docs/distributed.md). Training goes on in this one process."
    )


def lone_process_warning(world_size: int, env: Mapping[str, str] | None = None) -> str | None:
    """
    A warning when the launcher started `WORLD_SIZE` > 1 processes but this one trains alone (`world_size` is the
    number of processes the training arguments see, `TrainingArguments.world_size`).

    `accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs and without `use_cpu=True` starts two
    processes that each see one process (accelerate's `DistributedType.NO`): two independent runs in one
    `output_dir`.

    Args:
        world_size (`int`):
            The number of processes training together, as the training arguments see it.
        env (`Mapping[str, str]`, *optional*):
            The environment to read; defaults to `os.environ`.
    """
    env = os.environ if env is None else env
    try:
        launched = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if launched <= 1 or world_size > 1:
        return None
    return (
        f"this process is one of WORLD_SIZE={launched} started by the launcher, but it trains alone (no distributed "
        "backend was set up). On a machine without GPUs, add `--use_cpu true` to the training flags; otherwise the "
        "processes run as independent copies of the same run."
    )
