"""The run folder: the layout of `output_dir/self_play/` and its per-iteration records.

Everything self-play writes lives under `output_dir/self_play/`:

```
self_play/
  run.json                      identity of the run (what decides its responses), written at its first start
  run.lock                      held by the process that trains in this output_dir (pid, host, start time)
  iteration_<t>/<name>.jsonl    the responses (and reference log-probs) iteration t trained on, per dataset
  iteration_<t>/<name>.meta.json   their checksum, count and identity
  iteration_<t>/<name>_chunks/  completed chunks of a generation pass still running (removed when it ends)
  evaluate/step_<s>/<name>-<digest>.jsonl   responses of a dataset passed to `evaluate()` at step s (and sidecar)
  proto_<name>_chunks/          the same for a proto pass when the proto cache is off
  logs.jsonl                    every logged line, with its step
  iterations.jsonl              one summary record per iteration, computed from every training step
  heldout.jsonl                 held-out evidence on the evaluation data, before training and after every iteration,
                                with its per-prompt log-probs (with an evaluation set)
  scores.jsonl                  scorer results (optional)
  vllm_model/, vllm_weights/    with `use_vllm`: a model built in memory, saved for vLLM; weights for a CPU server
  replaced/<time>/              what a fresh start in a used output_dir moved aside (the earlier run's checkpoints)
  preflight_checkpoint/         the preflight's save of the model, loaded back and removed before step 1
```

This module is the only one that spells these paths. Files are written through `checked_io`.
"""

import glob
import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from .checked_io import append_jsonl, atomic_write, read_jsonl


SELF_PLAY_DIR = "self_play"
ITERATION_KEY = "self_play/iteration"

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_dataset_name(name: str) -> str:
    """A dataset name used in file names: letters, digits, `_`, `.`, `-`, not starting with a dot (no path
    traversal). Raises a `ValueError` naming the fix otherwise."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"Evaluation dataset name {name!r} cannot be used in file names under output_dir/self_play/: use letters, "
            "digits, '_', '.' and '-' only (no path separators or '..'), e.g. rename the key of your `eval_dataset` "
            "dict."
        )
    return name


class RunFolder:
    """
    Paths of everything a run keeps under `output_dir/self_play/`, and its per-iteration records.

    Args:
        output_dir (`str`):
            The run's `output_dir`.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.root = os.path.join(output_dir, SELF_PLAY_DIR)

    def iteration_dir(self, iteration: int) -> str:
        return os.path.join(self.root, f"iteration_{iteration}")

    def iteration_files(self, iteration: int, name: str) -> tuple[str, str]:
        """Data and sidecar paths of `iteration`'s responses for the dataset `name` (`"train"`, `"eval"`...)."""
        directory = self.iteration_dir(iteration)
        return os.path.join(directory, f"{name}.jsonl"), os.path.join(directory, f"{name}.meta.json")

    def evaluation_files(self, step: int, name: str) -> tuple[str, str]:
        """Data and sidecar paths of the responses of a dataset passed to `evaluate()` at optimizer step `step`."""
        directory = os.path.join(self.root, "evaluate", f"step_{step}")
        return os.path.join(directory, f"{name}.jsonl"), os.path.join(directory, f"{name}.meta.json")

    def generation_chunks_dir(self, iteration: int, name: str) -> str:
        return os.path.join(self.iteration_dir(iteration), f"{name}_chunks")

    def proto_chunks_dir(self, name: str) -> str:
        return os.path.join(self.root, f"proto_{name}_chunks")

    @property
    def vllm_model_dir(self) -> str:
        """Where a model built in memory is saved once for vLLM to load (vLLM loads from a folder)."""
        return os.path.join(self.root, "vllm_model")

    @property
    def vllm_weights_dir(self) -> str:
        """Where weights go to a vLLM server on CPU (no NCCL there): saved, then reloaded by the server."""
        return os.path.join(self.root, "vllm_weights")

    @property
    def identity_path(self) -> str:
        return os.path.join(self.root, "run.json")

    @property
    def lock_path(self) -> str:
        return os.path.join(self.root, "run.lock")

    @property
    def logs_path(self) -> str:
        return os.path.join(self.root, "logs.jsonl")

    @property
    def iterations_path(self) -> str:
        return os.path.join(self.root, "iterations.jsonl")

    @property
    def scores_path(self) -> str:
        return os.path.join(self.root, "scores.jsonl")

    @property
    def heldout_path(self) -> str:
        return os.path.join(self.root, "heldout.jsonl")

    @property
    def preflight_dir(self) -> str:
        """Where the preflight saves the model once to load it back (removed right after)."""
        return os.path.join(self.root, "preflight_checkpoint")

    @property
    def replaced_dir(self) -> str:
        """Where a fresh start moves what an earlier run left in `output_dir` (one subfolder per fresh start)."""
        return os.path.join(self.root, "replaced")

    def move_aside(self, paths: Sequence[str], reason: str) -> str:
        """Move `paths` (under `output_dir`) into a new `replaced/<time>/` folder with a `replaced.json` record of what
        was moved and why; returns that folder. Nothing is deleted: the user decides what to keep."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = os.path.join(self.replaced_dir, stamp)
        suffix = 1
        while os.path.exists(target):
            suffix += 1
            target = os.path.join(self.replaced_dir, f"{stamp}-{suffix}")
        os.makedirs(target)
        moved = []
        for path in paths:
            destination = os.path.join(target, os.path.relpath(path, self.output_dir))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            os.replace(path, destination)
            moved.append(os.path.relpath(path, self.output_dir))
        record = {"reason": reason, "moved": moved, "time_utc": stamp}
        atomic_write(os.path.join(target, "replaced.json"), json.dumps(record, indent=2))
        return target

    def iteration_numbers(self) -> list[int]:
        """Iterations with a training file, in order."""
        found = []
        for path in glob.glob(os.path.join(self.root, "iteration_*", "train.jsonl")):
            match = re.fullmatch(r"iteration_(\d+)", os.path.basename(os.path.dirname(path)))
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    # ---- logs and per-iteration records ----

    def append_log(self, record: dict[str, Any]) -> None:
        append_jsonl(self.logs_path, record)

    def drop_records_after(self, step: int) -> None:
        """On resume from `step`: drop the log and iteration records of steps the interrupted run did after it (they
        are replayed), so that every step appears once."""
        for path in (self.logs_path, self.iterations_path, self.heldout_path):
            if not os.path.isfile(path):
                continue
            records = read_jsonl(path)
            kept = [r for r in records if r.get("step", 0) <= step]
            if len(kept) != len(records):
                atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))

    def append_iteration_record(self, record: dict[str, Any]) -> None:
        """Add a per-iteration record (`{"iteration": t, "step": ..., ...}`); records of one iteration merge."""
        append_jsonl(self.iterations_path, record)

    def iteration_records(self) -> dict[int, dict[str, Any]]:
        """`{t: record}`: the merged per-iteration records (a later record's keys win)."""
        return merge_iteration_records(read_jsonl(self.iterations_path))

    # ---- held-out evidence and scores ----

    def append_heldout(self, record: dict[str, Any]) -> None:
        append_jsonl(self.heldout_path, record)

    def heldout(self) -> list[dict[str, Any]]:
        return read_jsonl(self.heldout_path)

    def append_score(self, record: dict[str, Any]) -> None:
        append_jsonl(self.scores_path, record)

    def scores(self) -> list[dict[str, Any]]:
        return read_jsonl(self.scores_path)


def merge_iteration_records(records: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    merged: dict[int, dict[str, Any]] = {}
    for record in records:
        if isinstance(record.get("iteration"), int):
            merged.setdefault(record["iteration"], {}).update(record)
    return dict(sorted(merged.items()))
