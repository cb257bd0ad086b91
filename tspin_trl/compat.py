"""Quirks of the pinned TRL/transformers versions, handled in one place."""

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any


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


class _DropDeepSpeedCpuNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Setting accelerator to CPU.")


def quiet_deepspeed_cpu_notice() -> None:
    """Drop the warning DeepSpeed logs when it finds no GPU ("Setting accelerator to CPU. If you have GPU or other
    accelerator, we were unable to detect it."): accelerate imports DeepSpeed whenever it is installed, so every CPU
    run printed it at start, though it runs no DeepSpeed engine. Set on DeepSpeed's logger by name, before it is
    imported; every other DeepSpeed message passes."""
    logging.getLogger("DeepSpeed").addFilter(_DropDeepSpeedCpuNotice())


def to_model_layout(model: Any, state_dict: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """
    A checkpoint's tensors, as `save_pretrained` wrote them, in `model`'s own layout: converted as `from_pretrained`
    converts them (transformers' conversion mapping of the architecture). Returns the tensors by the model's keys, and
    the checkpoint keys that fit nothing in the model.

    transformers 5 holds some architectures in another layout than the one it saves: a Mixtral or Qwen2-MoE model keeps
    its experts fused (`mlp.experts.gate_up_proj`), `save_pretrained` writes them one by one
    (`block_sparse_moe.experts.0.w1.weight`) and `from_pretrained` fuses them back. The Trainer's resume loads with a
    plain `load_state_dict`, which finds none of those keys and leaves experts and router at their values with only a
    "missing keys" warning. The conversion runs into a copy of the model's structure on the meta device (no memory, the
    model itself untouched).
    """
    import torch
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import convert_and_load_state_dict_in_model
    from transformers.modeling_utils import LoadStateDictConfig
    from transformers.utils import logging as hf_logging

    with torch.device("meta"):
        shell = type(model)(model.config)
    config = LoadStateDictConfig(weight_mapping=get_model_conversion_mapping(shell), device_map={"": "cpu"})
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per checkpoint read
    try:
        info, _ = convert_and_load_state_dict_in_model(shell, state_dict, config)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    converted = {key: tensor for key, tensor in shell.state_dict().items() if tensor.device.type != "meta"}
    return converted, sorted(info.unexpected_keys)
