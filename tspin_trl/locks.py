"""Lock files naming their holder: one training run per `output_dir`, one writer per proto-cache entry."""

import json
import logging
import os
import socket
import time
from typing import Any


logger = logging.getLogger(__name__)


class OutputDirLockedError(RuntimeError):
    """Another live process holds the lock (it is training in the same `output_dir`, or writing the same entry)."""


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
    A lock file that names the process holding it (pid, its start time, host, when it took the lock).

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
        conflict (`str`, *optional*):
            What two holders at once would break, for the error message.
    """

    def __init__(
        self, path: str, guards: str | None = None, foreign_is_stale: bool = False, conflict: str | None = None
    ):
        self.path = path
        self.guards = guards or f"training in {os.path.dirname(os.path.dirname(path))!r}"
        self.foreign_is_stale = foreign_is_stale
        self.conflict = conflict or (
            "Two runs in one output_dir would overwrite each other's self-play files and checkpoints: use another "
            "`output_dir`, or, if that process is dead (e.g. it ran on another node), delete the lock file."
        )
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
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
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
                        f"{self.path}). {self.conflict}"
                    ) from None
                if not ours:
                    logger.warning("Taking over the stale lock %s of process %s on %s.", self.path, pid, host)
                os.remove(self.path)
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
            except OSError as error:  # a full disk: name the file, and leave no empty lock behind
                os.remove(self.path)
                raise OSError(
                    error.errno, f"{error.strerror} (writing the lock file {self.path})", self.path
                ) from error
            self.held = True
            return
        raise OutputDirLockedError(f"Could not take the lock {self.path}: it keeps changing hands.")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                os.remove(self.path)
            self.held = False
