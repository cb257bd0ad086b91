"""`tspin_trl/cache.py`: the proto-response cache (content-addressed, checksummed, validated, shared between runs
under a lock) and the fingerprints that key it."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import torch

from tspin_trl.cache import ProtoCache, model_fingerprint
from tspin_trl.checked_io import json_digest
from tspin_trl.demo.presets import build_tiny_model
from tspin_trl.locks import RunLock


def _hold_entry_then_save(directory: str, key: str, responses: list, ready) -> None:
    lock = ProtoCache(directory).claim(key, len(responses), 100)
    ready.set()
    time.sleep(2)
    ProtoCache(directory).save(key, responses, {"test": True})
    lock.release()


def test_two_runs_share_a_proto_cache_entry_without_duplicated_work(tmp_path):
    directory, key, responses = str(tmp_path / "cache"), json_digest({"test": True})[:32], [[1, 2], [3]]
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    writer = context.Process(target=_hold_entry_then_save, args=(directory, key, responses, ready))
    writer.start()
    assert ready.wait(30)
    start = time.perf_counter()
    got = ProtoCache(directory).claim(key, len(responses), 100, poll_seconds=0.2)
    writer.join(30)
    assert got == responses, "the second run waits for the first and uses its entry instead of generating"
    assert time.perf_counter() - start > 1


def test_the_fingerprint_covers_every_parameter(tokenizer):
    model = build_tiny_model(tokenizer)
    before = model_fingerprint(model)["weights"]
    with torch.no_grad():
        weight = model.model.layers[0].mlp.up_proj.weight
        weight.view(-1)[weight.numel() // 2] += 1e-3  # the middle of one tensor: not in its first or last values
    assert model_fingerprint(model)["weights"] != before


def test_a_renamed_cache_entry_is_ignored(tmp_path):
    cache = ProtoCache(str(tmp_path))
    cache.save("a" * 32, [[1]], {"model": "other"})
    for suffix in (".jsonl", ".json"):
        os.rename(tmp_path / ("a" * 32 + suffix), tmp_path / ("b" * 32 + suffix))
    assert cache.load("b" * 32, 1, 10) is None


def test_a_foreign_lock_naming_a_live_process_is_stale(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "k.lock"
        path.write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))  # not written by a RunLock
        lock = ProtoCache(str(tmp_path)).claim("k", 1, 10, poll_seconds=0.1)
        assert isinstance(lock, RunLock) and lock.held
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_cache_lock_without_progress_is_taken_over(tmp_path):
    path = tmp_path / "k.lock"
    # a holder on another host (its liveness cannot be checked here) that stopped writing long ago
    path.write_text(json.dumps({"pid": 1, "pid_start": "1", "host": "another-host", "started": 0}))
    os.utime(path, (0, 0))
    lock = ProtoCache(str(tmp_path)).claim("k", 1, 10, poll_seconds=0.1, stale_after=60)
    assert isinstance(lock, RunLock) and lock.held
    lock.release()
