"""Checkpoints: their names, completeness, the one to resume from (on every node), their model weights loaded exactly as
saved, load errors, the node layout.

transformers' `resume_from_checkpoint=True` takes the highest-numbered `checkpoint-*` folder, complete or not; a save
killed midway leaves one without `trainer_state.json`. Here a checkpoint is complete when it has a readable
`trainer_state.json` and model weights, and a resume takes the last checkpoint complete on every node.
"""

import dataclasses
import errno
import glob
import json
import logging
import os
import re
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from accelerate.utils import gather_object

from .checked_io import atomic_write
from .compat import to_model_layout


if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator


logger = logging.getLogger(__name__)

_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


def checkpoint_dir(output_dir: str, step: int) -> str:
    """The folder transformers saves the checkpoint of optimizer step `step` in."""
    return os.path.join(output_dir, f"checkpoint-{step}")


def step_of(checkpoint: str) -> int | None:
    """The step of a `checkpoint-<step>` folder, or `None` for a folder of another name."""
    match = _CHECKPOINT_NAME.fullmatch(os.path.basename(os.path.normpath(checkpoint)))
    return int(match.group(1)) if match else None


def checkpoint_is_complete(path: str) -> bool:
    """Whether a `checkpoint-<step>` folder was saved to the end: a readable `trainer_state.json` and model weights
    (a weights file, or DeepSpeed's `global_step*` folder)."""
    try:
        with open(os.path.join(path, "trainer_state.json")) as f:
            if not isinstance(json.load(f), dict):
                return False
    except (OSError, ValueError):
        return False
    if any(os.path.isfile(os.path.join(path, name)) for name in _WEIGHT_FILES):
        return True
    return bool(glob.glob(os.path.join(path, "global_step*")))


def checkpoint_steps(output_dir: str) -> list[int]:
    """Steps of every `checkpoint-<step>` folder of `output_dir`, complete or not, highest first."""
    found = [step_of(path) for path in glob.glob(os.path.join(output_dir, "checkpoint-*")) if os.path.isdir(path)]
    return sorted((step for step in found if step is not None), reverse=True)


def complete_checkpoint_steps(output_dir: str) -> list[int]:
    """Steps of the complete `checkpoint-<step>` folders of `output_dir`, highest first; incomplete ones (a save killed
    midway or a full disk) are skipped with a warning naming them."""
    steps = []
    for step in checkpoint_steps(output_dir):
        path = checkpoint_dir(output_dir, step)
        if checkpoint_is_complete(path):
            steps.append(step)
        else:
            logger.warning(
                "Skipping the incomplete checkpoint %s (no readable trainer_state.json or no model weights: the save "
                "was interrupted). Delete it once the run has resumed.",
                path,
            )
    return steps


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The highest-numbered complete `checkpoint-<step>` folder of `output_dir` (see [`complete_checkpoint_steps`])."""
    steps = complete_checkpoint_steps(output_dir)
    return checkpoint_dir(output_dir, steps[0]) if steps else None


def last_checkpoint_on_every_node(output_dir: str, accelerator: "Accelerator", num_nodes: int) -> str:
    """The highest-numbered checkpoint complete on every node (on separate disks, one node's last save may have been
    interrupted). Collective: every process must call it."""
    steps = complete_checkpoint_steps(output_dir)
    common = set(steps)
    if accelerator.num_processes > 1:
        for other in gather_object([steps]):
            common &= set(other)
    if not common:
        raise ValueError(
            f"No complete checkpoint found in {output_dir!r}"
            + (" on every node" if num_nodes > 1 else "")
            + " to resume from (checkpoint-* folders with trainer_state.json and model weights). Start without "
            "`resume_from_checkpoint`."
        )
    step = max(common)
    if steps and steps[0] != step:
        logger.warning(
            "Resuming from checkpoint-%d, the last one every node has completely (this node also has checkpoint-%d).",
            step,
            steps[0],
        )
    return checkpoint_dir(output_dir, step)


def check_complete_on_every_node(checkpoint: str, accelerator: "Accelerator") -> None:
    """Raise when a checkpoint given by path is missing or incomplete on some node. Collective."""
    complete = gather_object([checkpoint_is_complete(checkpoint)])
    if not all(complete):
        raise ValueError(
            f"The checkpoint {checkpoint!r} is missing or incomplete on {complete.count(False)} of the {len(complete)} "
            "processes' nodes: every node reads it from its own output_dir. Resume from a checkpoint every node has."
        )


class CheckpointLoadError(RuntimeError):
    """A checkpoint's files exist but cannot be read (damaged or truncated)."""


def checkpoint_load_error(what: str, checkpoint: str | None, error: Exception) -> CheckpointLoadError:
    """The error for a checkpoint whose `what` cannot be loaded, naming the file's folder and an earlier checkpoint."""
    earlier = None
    if checkpoint:
        step = step_of(checkpoint)
        parent = os.path.dirname(os.path.abspath(checkpoint))
        steps = [s for s in complete_checkpoint_steps(parent) if step is None or s < step]
        earlier = checkpoint_dir(os.path.dirname(checkpoint), max(steps)) if steps else None
    fix = f"resume from an earlier checkpoint (`resume_from_checkpoint={earlier!r}`)" if earlier else "start over"
    return CheckpointLoadError(
        f"Could not load {what} from the checkpoint {checkpoint!r} ({type(error).__name__}: {error}); a file there is "
        f"damaged or truncated. Delete that checkpoint folder and {fix}."
    )


# ---- errors while a checkpoint is written ---------------------------------------------------------------------------

# The files of a save, in the order they are written, by the kind of writer (whose errors name no file): torch's
# (`torch.save`), safetensors' and Python's JSON and text writers. Patterns are relative to the checkpoint folder.
_TORCH_WRITTEN = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")
_SAFETENSORS_WRITTEN = ("model*.safetensors", "adapter_model.safetensors")
_TEXT_WRITTEN = (
    "../README.md",
    "tspin_iteration_monitor.json",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "tokenizer.json",
    "model.safetensors.index.json",
    "trainer_state.json",
)
_IO_MARKERS = ("inline_container", "PytorchStreamWriter", "file write failed", "I/O error", "IoError", "os error")


def checkpoint_write_error(folder: str, error: BaseException) -> OSError | None:
    """
    An error raised while the checkpoint `folder` was written, as an `OSError` naming the file being written (torch's,
    safetensors' and Python's writers say "No space left on device" or "unexpected pos 64 vs 0" without one), or
    `None` when `error` names its file already or is not about writing a file.

    The file is the last one, in the order a save writes them, of those its writer writes that exists: a writer
    creates its file before the write fails, and the files after it are not there yet.
    """
    if isinstance(error, OSError) and error.filename is not None:
        return None
    text = f"{type(error).__name__}: {error}"
    if type(error).__name__ == "SafetensorError":
        patterns = _SAFETENSORS_WRITTEN
    elif isinstance(error, RuntimeError) and any(marker in str(error) for marker in _IO_MARKERS):
        patterns = _TORCH_WRITTEN
    elif isinstance(error, OSError) or re.search(r"os error \d+|No space left on device", str(error)):
        patterns = _TEXT_WRITTEN  # Python's writers, and the tokenizers library's (a plain `Exception`)
    else:
        return None
    number = getattr(error, "errno", None)
    if not isinstance(number, int):
        found = re.search(r"os error (\d+)", str(error))
        number = int(found.group(1)) if found else (28 if "No space left on device" in str(error) else None)
    existing = [path for pattern in patterns for path in sorted(glob.glob(os.path.join(folder, pattern)))]
    path = os.path.normpath(existing[-1] if existing else os.path.join(folder, patterns[0].replace("*", "")))
    message = (
        f"{os.strerror(number) if number is not None else f'the write failed ({text})'} (writing {path}, while saving "
        f"{os.path.basename(os.path.normpath(folder))}). Free space on the disk of output_dir (or give another "
        "output_dir), then resume with `resume_from_checkpoint=True`: the incomplete checkpoint is skipped."
    )
    return OSError(number if number is not None else errno.EIO, message, path)


# ---- model weights, loaded exactly as saved ------------------------------------------------------------------------


def _weight_files(folder: str) -> list[str]:
    """The safetensors files of a whole model in a checkpoint folder: `model.safetensors`, or the shards its index
    lists."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return [os.path.join(folder, name) for name in sorted(set(json.load(f)["weight_map"].values()))]
    single = os.path.join(folder, "model.safetensors")
    return [single] if os.path.isfile(single) else []


def saved_model_weights(model: "torch.nn.Module", folder: str) -> "dict[str, torch.Tensor] | None":
    """
    The model weights a checkpoint folder holds, in `model`'s own layout, as `from_pretrained` would read them (see
    [`~tspin_trl.compat.to_model_layout`]: the experts of a Mixtral or Qwen2-MoE model are fused back); `None` when the
    folder holds no safetensors weights of a whole model (a PEFT adapter, DeepSpeed's files). Tensors of the checkpoint
    that fit nothing in the model are left out, with a warning.
    """
    files = _weight_files(folder)
    if not files:
        return None
    from safetensors.torch import load_file

    state_dict: dict[str, Any] = {}
    for file in files:
        state_dict.update(load_file(file, device="cpu"))
    converted, unexpected = to_model_layout(model, state_dict)
    if unexpected:
        logger.warning(
            "The checkpoint %s holds %d tensors this %s has no place for (%s); they are ignored.",
            folder,
            len(unexpected),
            type(model).__name__,
            ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else ""),
        )
    return converted


def _trained_tensors_missing(model: "torch.nn.Module", saved: dict[str, Any]) -> list[str]:
    """The trainable parameters of `model` that `saved` has no value for (a tied parameter is there when one of its
    names is). Frozen ones are left out: a resume that keeps them keeps their saved value too."""
    names: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        names.setdefault(id(tensor), []).append(name)
    return [
        name
        for name, param in model.named_parameters()
        if param.requires_grad and not any(alias in saved for alias in names.get(id(param), [name]))
    ]


def _named(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_model_weights(model: "torch.nn.Module", folder: str) -> bool:
    """
    Load a checkpoint's model weights into `model` exactly as they were saved (in place, so an optimizer built on the
    parameters keeps them), converted to the model's layout as `from_pretrained` converts them. Returns `False` when
    the folder holds no safetensors weights of a whole model (the caller loads it its own way). Raises a
    [`CheckpointLoadError`] naming the trained tensors the checkpoint lacks: resuming would keep their current values.
    """
    saved = saved_model_weights(model, folder)
    if saved is None:
        return False
    missing = _trained_tensors_missing(model, saved)
    if missing:
        raise CheckpointLoadError(
            f"The checkpoint {folder!r} holds no value for {len(missing)} trained tensors of this "
            f"{type(model).__name__} ({_named(missing)}): resuming would keep their current values instead of the saved "
            "ones. The checkpoint was written in a layout this model cannot read back (another transformers version, "
            "or a model that leaves tensors out of its saves); resume with the transformers version that wrote it."
        )
    model.load_state_dict(saved, strict=False)
    return True


def round_trip_problems(model: "torch.nn.Module", folder: str) -> list[str]:
    """
    What would not come back from a checkpoint folder the model was just saved to: every tensor of the model compared
    with the value a resume reads for it (the whole model's weights, converted as [`load_model_weights`] converts them;
    or a PEFT model's adapter weights, as PEFT reads them). Lists the trained tensors without a saved value and the
    tensors whose saved value differs; empty when the save round-trips exactly.
    """
    from accelerate.utils import is_peft_model

    if is_peft_model(model):
        from peft.utils import get_peft_model_state_dict, load_peft_weights

        current, saved = get_peft_model_state_dict(model), load_peft_weights(folder, device="cpu")
        missing = sorted(set(current) - set(saved))
    else:
        current, saved = model.state_dict(), saved_model_weights(model, folder)
        if saved is None:
            return [f"no model weights (model.safetensors) in {folder}"]
        missing = _trained_tensors_missing(model, saved)
    problems = [f"no saved value for {_named(missing)}"] if missing else []
    differ = [
        name
        for name, tensor in current.items()
        if name in saved and not saved[name].to(tensor.dtype).equal(tensor.detach().to("cpu"))
    ]
    if differ:
        problems.append(f"another value read back for {_named(differ)}")
    return problems


# ---- several nodes -------------------------------------------------------------------------------------------------

NODE_MARKER_PREFIX = ".tspin_node_"
MARKER_WAIT_SECONDS = 3.0


@dataclasses.dataclass(frozen=True)
class NodeLayout:
    """
    How the nodes of a run see `output_dir`.

    Args:
        num_nodes (`int`):
            Number of nodes (of local main processes).
        shared (`bool`):
            Whether every node sees the same `output_dir` (a shared file system), rather than each its own disk.
    """

    num_nodes: int
    shared: bool

    def check_writers(self, output_dir: str, save_on_each_node: bool) -> None:
        """Self-play files and checkpoints are written by the processes with `args.should_save`: the global main
        process, or with `save_on_each_node` every node's local main process. That must match the disk layout."""
        if self.num_nodes == 1:
            return
        if self.shared and save_on_each_node:
            raise ValueError(
                f"`save_on_each_node=True`, but the {self.num_nodes} nodes of this run share output_dir "
                f"{output_dir!r}: every node would write the same checkpoint and self-play files at once. Set "
                "`save_on_each_node=False` (the global main process then writes for all nodes)."
            )
        if not self.shared and not save_on_each_node:
            raise ValueError(
                f"The {self.num_nodes} nodes of this run do not share output_dir {output_dir!r} (each node sees only "
                "its own files there), and only the global main process would write checkpoints: the other nodes could "
                "not resume. Set `save_on_each_node=True` (each node then keeps a full copy of the checkpoints and "
                "self-play files), or put output_dir on a file system all nodes share."
            )


def detect_node_layout(output_dir: str, accelerator: "Accelerator") -> NodeLayout:
    """Whether the nodes of this run share `output_dir`, found out rather than assumed: every node's local main process
    writes a marker file with a random name into `output_dir`, and each then counts the other nodes' markers it sees.
    Collective: every process must call it. Raises a `ValueError` when some nodes share the folder and others do not.
    """
    if accelerator.num_processes == 1:
        return NodeLayout(1, True)
    me = (accelerator.is_local_main_process, secrets.token_hex(8))
    tokens = [token for local_main, token in gather_object([me]) if local_main]
    if len(tokens) == 1:
        return NodeLayout(1, True)
    marker = os.path.join(output_dir, NODE_MARKER_PREFIX + me[1])
    if accelerator.is_local_main_process:
        atomic_write(marker, socket.gethostname())
    accelerator.wait_for_everyone()
    seen = None
    if accelerator.is_local_main_process:
        # a listing, retried for a few seconds: a network file system may show another node's new file late
        deadline = time.monotonic() + MARKER_WAIT_SECONDS
        while True:
            names = set(os.listdir(output_dir))
            seen = sum(NODE_MARKER_PREFIX + token in names for token in tokens)
            if seen == len(tokens) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    counts = [count for count in gather_object([seen]) if count is not None]  # every node has looked
    if accelerator.is_local_main_process:
        os.remove(marker)
    if all(count == len(tokens) for count in counts):
        return NodeLayout(len(tokens), True)
    if all(count == 1 for count in counts):
        return NodeLayout(len(tokens), False)
    raise ValueError(
        f"Some of the {len(tokens)} nodes of this run share output_dir {output_dir!r} and others do not (each node "
        f"sees {counts} of the nodes' marker files). Use one shared output_dir for all nodes, or a local one on each "
        "node (then with `save_on_each_node=True`)."
    )
