"""Where `tspin-trl train` reads its model and data from: a local path, which must exist, or a Hub id, which must be
reachable. Checked before anything heavy runs, with errors that say which of the two the name was taken for."""

import difflib
import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import InputNotFoundError


def _data_suffixes() -> set[str]:
    """File suffixes `datasets` reads (`.jsonl`, `.csv`, `.parquet`, ...) and the compression suffixes it undoes."""
    from datasets.packaged_modules import _EXTENSION_TO_MODULE
    from datasets.utils.file_utils import COMPRESSION_EXTENSION_TO_PROTOCOL

    return {suffix.lower() for suffix in _EXTENSION_TO_MODULE} | {
        f".{ext}" for ext in COMPRESSION_EXTENSION_TO_PROTOCOL
    }


def looks_local(name: str, data: bool = False) -> bool:
    """
    Whether `name` can only be a local path, so that it is never looked up on the Hub: it exists; it starts with `.`,
    `/` or `~` (a Hub id cannot); it has more than one `/` (a Hub id is `name` or `org/name`); its first folder exists
    here (`models/tinyy` when `./models` exists, a typo of `models/tiny`); or (with `data`) it ends with a suffix of a
    data file (`.jsonl`, `.csv.gz`, ...).
    """
    if os.path.exists(os.path.expanduser(name)) or os.path.isabs(name):
        return True
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        return True
    if "/" in name and os.path.isdir(name.split("/", 1)[0]):
        return True
    return data and Path(name.lower()).suffix in _data_suffixes()


def closest_existing(name: str, folders_only: bool = False) -> str | None:
    """The existing path closest to a missing `name`: in its deepest existing folder, the entry whose name is closest
    to the next part of `name` (`models/tiny` for `models/tinyy`), or `None` when none is close."""
    path = Path(os.path.expanduser(name))
    parent, missing = path.parent, path.name
    while not parent.is_dir() and parent != parent.parent:
        parent, missing = parent.parent, parent.name
    if not parent.is_dir():
        return None
    try:
        entries = [entry.name for entry in parent.iterdir() if not folders_only or entry.is_dir()]
    except OSError:
        return None
    close = difflib.get_close_matches(missing, entries, n=1, cutoff=0.6)
    if not close:
        return None
    found = parent / close[0]
    return str(found) if os.path.isabs(os.path.expanduser(name)) else os.path.relpath(found)


def _hub_hint() -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set, so only what is already in the Hugging Face cache can be loaded"
    return "check the id, your network connection, and `hf auth login` for a private or gated repository"


def check_model_source(name_or_path: str, revision: str | None = None) -> None:
    """
    Raise an [`InputNotFoundError`] when `name_or_path` is neither an existing model folder nor a reachable Hub model.

    A local-looking name (see [`looks_local`]) must be a folder with a `config.json` (or a PEFT adapter's
    `adapter_config.json`), and a missing one is reported at once with the closest existing folder. Anything else is
    taken for a Hub id, and its `config.json` is fetched (from the cache when `HF_HUB_OFFLINE` is set): a
    repository that does not exist, cannot be reached or is not cached offline is reported here, before the data is
    loaded. A repository that exists but has no `config.json` is left for transformers to judge.
    """
    path = Path(name_or_path).expanduser()
    if looks_local(name_or_path):
        if not path.is_dir():
            raise InputNotFoundError(
                f"The model folder {name_or_path!r} does not exist ({path.resolve()}){_closest(name_or_path, True)}. "
                "A name that looks like a path is never looked up on the Hub. --model_name_or_path takes a folder "
                "written by `save_pretrained`, a Hub id such as `Qwen/Qwen2.5-0.5B-Instruct` (run from a folder "
                "without a subfolder of its first part), or `preset:tiny` (offline)."
            )
        if not any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
            raise InputNotFoundError(
                f"The folder {name_or_path!r} is not a model folder: it has no config.json. Give the folder that "
                "`save_pretrained` wrote (it holds config.json and the weights)."
            )
        return

    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    failure = None
    for filename in ("config.json", "adapter_config.json"):
        try:
            hf_hub_download(name_or_path, filename, revision=revision)
            return
        except LocalEntryNotFoundError as error:  # not cached, and the Hub cannot be reached (or offline mode)
            failure = error
            if not constants.HF_HUB_OFFLINE:  # the second file would wait through the same retries (~35 s)
                break
        except EntryNotFoundError:  # the repository exists without this file: transformers decides
            if filename == "adapter_config.json":
                return
        except HFValidationError as error:
            raise InputNotFoundError(
                f"The model {name_or_path!r} is not a local folder, and not a valid Hub id ({error}). Check the path."
            ) from error
        except RevisionNotFoundError as error:
            raise InputNotFoundError(
                f"The model {name_or_path!r} has no revision {revision!r} on the Hub: check --model_revision."
            ) from error
        except RepositoryNotFoundError as error:
            raise InputNotFoundError(
                f"The model {name_or_path!r} is not a local folder, and the Hub has no such model repository (or it "
                f"is private or gated): {_hub_hint()}."
            ) from error
        except OSError as error:  # a connection failure without a cached copy
            failure = error
            break
    raise InputNotFoundError(
        f"The model {name_or_path!r} is not a local folder{_closest(name_or_path, True)}, and it could not be fetched "
        f"from the Hub ({type(failure).__name__}): {_hub_hint()}. Or give a local folder written by `save_pretrained`."
    ) from failure


def _closest(name: str, folders_only: bool = False) -> str:
    """`" (the closest existing one: 'x')"` for a missing path, or `""`."""
    close = closest_existing(name, folders_only)
    return f" (the closest existing {'folder' if folders_only else 'path'}: {close!r})" if close else ""


def check_dataset_source(name: str, flag: str = "--dataset_name") -> None:
    """Raise an [`InputNotFoundError`] when `name` looks like a local file or folder (see [`looks_local`]) and does
    not exist, so that it is not looked up on the Hub."""
    if looks_local(name, data=True) and not Path(name).expanduser().exists():
        raise InputNotFoundError(
            f"The dataset file or folder {name!r} given to {flag} does not exist ({Path(name).expanduser().resolve()})"
            f"{_closest(name)}. Check the path; a Hub dataset id has the form `org/name`."
        )


def check_data_files(data_files: str | Iterable | dict | None, where: str) -> None:
    """Raise an [`InputNotFoundError`] for a local `data_files` entry (of a `datasets:` list) that matches no file.
    URLs and `hf://` paths are left to `datasets`."""
    if data_files is None:
        return
    values: Iterable[Any] = data_files.values() if isinstance(data_files, dict) else [data_files]
    names = [name for value in values for name in ([value] if isinstance(value, str) else value)]
    for name in names:
        if "://" in name:
            continue
        expanded = os.path.expanduser(name)
        if not (glob.glob(expanded) if glob.has_magic(expanded) else os.path.exists(expanded)):
            raise InputNotFoundError(
                f"The data file {name!r} of {where} does not exist ({Path(expanded).resolve()}). Check the path "
                "(relative paths are read from the current folder)."
            )


def _hub_failure(name: str, error: Exception, flag: str) -> InputNotFoundError:
    return InputNotFoundError(
        f"The dataset {name!r} given to {flag} is not a local file or folder, and it could not be loaded from the Hub "
        f"({type(error).__name__}: {error}): {_hub_hint()}."
    )


def _is_data_file(path: str) -> bool:
    return any(suffix.lower() in _data_suffixes() for suffix in Path(path).suffixes)


def _unreadable(name: str, flag: str, error: Exception) -> ValueError:
    """The error for a local dataset file (or folder) `datasets` could not read: its innermost cause, named."""
    import zlib

    causes = [error]
    while causes[-1].__cause__ is not None or causes[-1].__context__ is not None:
        causes.append(causes[-1].__cause__ or causes[-1].__context__)
    # the most telling cause: a decoding error, else the first below `datasets`' "error while generating the dataset"
    root = next((cause for cause in causes if isinstance(cause, UnicodeDecodeError)), causes[min(1, len(causes) - 1)])
    about = f"{type(root).__name__}: {root}"
    if any(isinstance(cause, (EOFError, zlib.error)) for cause in causes) or "compressed" in str(root).lower():
        return ValueError(
            f"The dataset file {name!r} given to {flag} is cut short or damaged ({about}): its compressed data ends "
            "before the end. It was not completely written, copied or downloaded: write, copy or download it again."
        )
    kinds = {".jsonl": "JSON Lines", ".json": "JSON", ".csv": "CSV", ".parquet": "Parquet", ".arrow": "Arrow"}
    kind = next((kinds[suffix] for suffix in Path(name.lower()).suffixes if suffix in kinds), "a dataset")
    return ValueError(
        f"The dataset file or folder {name!r} given to {flag} could not be read as {kind} ({about}). Check that it "
        "is what its name says, UTF-8 encoded (one JSON object per line for .jsonl; docs/data_formats.md lists the "
        "formats)."
    )


def load_named_dataset(
    name: str,
    config: str | None = None,
    streaming: bool = False,
    split: str = "train",
    flag: str = "--dataset_name",
):
    """
    `datasets.load_dataset` for a Hub id or a local folder, and also for a single local file.

    `load_dataset` takes a local folder but not a local file; for a file, its folder is loaded with the file as the
    only data file, so `datasets` infers the builder from the name (`.jsonl`, `.json`, `.csv`, `.parquet`, compressed
    `.gz`/`.zst`/..., ...) exactly as it does for a folder. The file becomes the split `split`. A local-looking name
    that does not exist, or a Hub id that cannot be loaded, raises an [`InputNotFoundError`] naming `flag`; a local
    file that is empty, cut short (a truncated `.gz`) or cannot be decoded raises a `ValueError` naming it.
    """
    from datasets import load_dataset
    from datasets.exceptions import DatasetNotFoundError

    check_dataset_source(name, flag)
    path = os.path.expanduser(name)
    if os.path.isfile(path) or os.path.isdir(path):
        files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "**", "*"), recursive=True))
        empty = [file for file in files if os.path.isfile(file) and _is_data_file(file) and os.path.getsize(file) == 0]
        if empty:
            raise ValueError(
                f"The dataset file {empty[0]!r} given to {flag}"
                + (f" (in the folder {name!r})" if empty[0] != path else "")
                + " is empty (0 bytes). Give a file with the examples: one JSON object per line for .jsonl, a header "
                "and rows for .csv (docs/data_formats.md lists the columns)."
            )
        try:
            if os.path.isfile(path):
                folder, file = os.path.split(os.path.abspath(path))
                return load_dataset(folder, data_files={split: file}, streaming=streaming)
            return load_dataset(path, name=config, streaming=streaming)
        except Exception as error:
            raise _unreadable(name, flag, error) from error
    try:
        return load_dataset(name, name=config, streaming=streaming)
    except (ConnectionError, DatasetNotFoundError) as error:
        raise _hub_failure(name, error, flag) from error
