"""`tspin_trl/locks.py`: lock files naming their holder; stale ones taken over."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tspin_trl.locks import OutputDirLockedError, RunLock


def test_run_lock_is_reentrant_within_a_process(tmp_path):
    lock = RunLock(str(tmp_path / "run.lock"))
    lock.acquire()
    RunLock(str(tmp_path / "run.lock")).acquire()  # e.g. a crashed train() in this process left it behind
    lock.release()


def test_a_lock_whose_pid_was_reused_is_stale(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "run.lock"
        owner = {"pid": sleeper.pid, "pid_start": "1", "host": os.uname().nodename, "started": 0}
        path.write_text(json.dumps(owner))  # a live pid, but not the process that took the lock
        lock = RunLock(str(path))
        lock.acquire()
        assert lock.held
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_shared_cache_lock_says_what_is_shared(tmp_path):
    sleeper_lock = tmp_path / "entry.lock"
    sleeper_lock.write_text(
        json.dumps({"pid": os.getppid(), "pid_start": None, "host": socket.gethostname(), "started": time.time()})
    )
    lock = RunLock(str(sleeper_lock), guards="generating the proto cache entry k", conflict="Runs that share a cache.")
    with pytest.raises(OutputDirLockedError) as raised:
        lock.acquire()
    assert "Runs that share a cache" in str(raised.value) and "output_dir" not in str(raised.value)
