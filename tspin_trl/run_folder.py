"""The run folder: the layout of `output_dir/self_play/`, checked JSONL I/O, the run lock, and the per-iteration records.

Everything self-play writes lives under `output_dir/self_play/`:

```
self_play/
  run.json                      identity of the run (what decides its responses), written at its first start
  run.lock                      held by the process that trains in this output_dir (pid, host, start time)
  iteration_<t>/<name>.jsonl    the responses (and reference log-probs) iteration t trained on, per dataset
  iteration_<t>/<name>.meta.json   their checksum, count and identity
  iteration_<t>/<name>_chunks/  completed chunks of a generation pass still running (removed when it ends)
  proto_<name>_chunks/          the same for a proto pass when the proto cache is off
  logs.jsonl                    every logged line, with its step
  iterations.jsonl              one summary record per iteration, computed from every training step
  scores.jsonl                  scorer results (optional)
  vllm_model/, vllm_weights/    with `use_vllm`: a model built in memory, saved for vLLM; weights for a CPU server
```

Writers go through [`atomic_write`] (a unique temporary name, then a rename), so a file that exists is complete and two
writers never collide. Readers of `*.jsonl` logs tolerate a truncated last line (a process killed while writing).
"""

import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from accelerate.utils import gather_object


if TYPE_CHECKING:
    from accelerate import Accelerator


logger = logging.getLogger(__name__)

SELF_PLAY_DIR = "self_play"
ITERATION_KEY = "self_play/iteration"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(value: Any) -> str:
    """SHA-256 of the canonical JSON of `value`."""
    return sha256_hex(json.dumps(value, sort_keys=True, default=str).encode())


# ---- file I/O ------------------------------------------------------------------------------------------------------


def atomic_write(path: str, content: str) -> None:
    """Write a file under a unique temporary name in the same folder and rename it: a file that exists is complete,
    and concurrent writers of the same path never rename each other's temporary file."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_checked_jsonl(data_path: str, meta_path: str, rows: Sequence[Any], meta: dict[str, Any]) -> None:
    """Write `rows` as JSONL, then a JSON sidecar with `meta`, their SHA-256 and count (written last: it marks the
    pair complete)."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(data_path, text)
    atomic_write(meta_path, json.dumps({**meta, "sha256": sha256_hex(text.encode()), "count": len(rows)}, indent=2))


def read_checked_jsonl(data_path: str, meta_path: str) -> tuple[list[Any], dict[str, Any]] | None:
    """The rows and sidecar written by [`write_checked_jsonl`]; `None` when absent or, with a warning, when the
    sidecar is not a JSON object or the checksum or count does not match (a truncated or corrupted file is never
    used)."""
    if not (os.path.isfile(data_path) and os.path.isfile(meta_path)):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            raise ValueError(f"the sidecar {meta_path} is a JSON {type(meta).__name__}, not an object")
        with open(data_path, "rb") as f:
            raw = f.read()
        if sha256_hex(raw) != meta.get("sha256"):
            raise ValueError("checksum mismatch")
        rows = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        if len(rows) != meta.get("count"):
            raise ValueError(f"{len(rows)} rows, {meta.get('count')} expected")
    except (ValueError, UnicodeDecodeError, OSError) as error:  # JSONDecodeError is a ValueError
        logger.warning("Ignoring %s (%s).", data_path, error)
        return None
    return rows, meta


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Records of a JSONL log; a line that does not parse (the last one of a killed writer) is skipped with a
    warning."""
    if not os.path.isfile(path):
        return []
    records, bad = [], 0
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
    if bad:
        logger.warning("Skipped %d unreadable line(s) of %s (a writer was killed mid-line?).", bad, path)
    return records


def append_jsonl(path: str, record: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def valid_token_ids(value: Any, vocab_size: int) -> bool:
    """Whether `value` is a list of token ids of a vocabulary of `vocab_size` tokens."""
    return isinstance(value, list) and all(
        isinstance(token, int) and not isinstance(token, bool) and 0 <= token < vocab_size for token in value
    )


# ---- names and paths -----------------------------------------------------------------------------------------------


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
        for path in (self.logs_path, self.iterations_path):
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

    # ---- scores ----

    def scores(self) -> list[dict[str, Any]]:
        return read_jsonl(self.scores_path)


def merge_iteration_records(records: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    merged: dict[int, dict[str, Any]] = {}
    for record in records:
        if isinstance(record.get("iteration"), int):
            merged.setdefault(record["iteration"], {}).update(record)
    return dict(sorted(merged.items()))


# ---- the run lock --------------------------------------------------------------------------------------------------


class OutputDirLockedError(RuntimeError):
    """Another live process is training in the same `output_dir`."""


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or `None` where /proc is not available: a pid
    reused by another process has another start time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process `pid` runs (and, when `start` is known, is the process that started then, not a reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    current = _process_start(pid)
    return start is None or current is None or current == start


class RunLock:
    """
    One training run per `output_dir` at a time: `self_play/run.lock` names the process that holds it.

    A lock left by a process that no longer runs on this host is stale (a pid reused by an unrelated process is told
    apart by its start time): it is taken over with a warning. A lock held by a live process, or by a process on another
    host (whose liveness cannot be checked here), is an [`OutputDirLockedError`] naming it.

    Args:
        path (`str`):
            The lock file.
        guards (`str`, *optional*):
            What the lock protects, for the error message.
        foreign_is_stale (`bool`, *optional*, defaults to `False`):
            Whether a lock of this host that a `RunLock` did not write (no holder start time) is stale. For the proto
            cache, whose locks only this code writes, it is garbage; for `output_dir`, a live process it names is
            taken at its word (two runs in one output_dir would be the worse failure).
    """

    def __init__(self, path: str, guards: str | None = None, foreign_is_stale: bool = False):
        self.path = path
        self.guards = guards or f"training in {os.path.dirname(os.path.dirname(path))!r}"
        self.foreign_is_stale = foreign_is_stale
        self.held = False

    def _owner(self) -> dict[str, Any] | None:
        try:
            with open(self.path) as f:
                owner = json.load(f)
            return owner if isinstance(owner, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: a writer killed mid-write, treated as stale

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "host": socket.gethostname(),
            "started": time.time(),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue  # released in between: try again
                pid, host = owner.get("pid"), owner.get("host")
                ours = pid == me["pid"] and host == me["host"]
                # a lock of this host without the holder's start time was not written by a RunLock (which records it
                # wherever /proc exists)
                foreign = (
                    self.foreign_is_stale
                    and host == me["host"]
                    and me["pid_start"] is not None
                    and "pid_start" not in owner
                )
                stale = (
                    not isinstance(pid, int)
                    or foreign
                    or (host == me["host"] and not _process_alive(pid, owner.get("pid_start")))
                )
                if not (ours or stale):
                    started = owner.get("started")
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "unknown time"
                    raise OutputDirLockedError(
                        f"Another process is {self.guards}: process {pid} on host {host!r}, started {when} (lock file "
                        f"{self.path}). Two runs in one output_dir would overwrite each other's self-play files and "
                        "checkpoints: use another `output_dir`, or, if that process is dead (e.g. it ran on another "
                        "node), delete the lock file."
                    ) from None
                if not ours:
                    logger.warning("Taking over the stale run lock %s of process %s on %s.", self.path, pid, host)
                os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise OutputDirLockedError(f"Could not take the run lock {self.path}: it keeps changing hands.")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                os.remove(self.path)
            self.held = False


# ---- checkpoints ---------------------------------------------------------------------------------------------------

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


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


def complete_checkpoint_steps(output_dir: str) -> list[int]:
    """Steps of the complete `checkpoint-<step>` folders of `output_dir`, highest first; incomplete ones (a save killed
    midway or a full disk) are skipped with a warning naming them."""
    found = []
    for path in glob.glob(os.path.join(output_dir, "checkpoint-*")):
        match = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(path))
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    steps = []
    for step, path in sorted(found, reverse=True):
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
    return os.path.join(output_dir, f"checkpoint-{steps[0]}") if steps else None


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
