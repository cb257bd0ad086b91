"""Quirks of the pinned TRL/transformers versions, handled in one place."""

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_checkpointing_renames() -> Iterator[None]:
    """Silence the FutureWarnings transformers 5.24 raises when TRL 1.16's helpers (`disable_gradient_checkpointing`,
    `unwrap_model_for_generation`) call `is_gradient_checkpointing` and `gradient_checkpointing_enable/disable` by
    their old names: three warnings per generation or log-prob pass, at every iteration boundary, that a user can do
    nothing about. Other warnings pass through."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated",
            category=FutureWarning,
        )
        yield


@contextlib.contextmanager
def score_response_positions_only() -> Iterator[None]:
    """Make TRL's fused LM head project only the labelled (response) positions on every device.

    TRL projects only labelled positions where Triton runs (CUDA) and every position elsewhere, because on some
    accelerators (Neuron) a varying number of rows recompiles the kernel. A CPU has no such cost, and the prompt and
    padding positions are most of the head's work there: the LM head was 68% of a CPU step (docs/benchmarks.md).
    Scoped to this trainer's forward passes, so other TRL trainers in the process keep TRL's behaviour.
    """
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original
