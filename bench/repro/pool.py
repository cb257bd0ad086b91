"""Making the planned runs: one at a time in this process, or several at once in worker processes (on 2 CPU cores, two
single-thread workers make about twice the runs of one two-thread process: a tiny model does not use two threads
well; on a GPU, a small model leaves the device mostly idle, so runs share it), under an optional deadline.

The deadline is a safety net, not a plan: a run is not started when the mean wall time of the finished runs of its
kind says it would end after the deadline; it is recorded as skipped and the page says so. Runs still going at the
hard deadline are stopped (workers terminated) and recorded the same way. A run that raises is recorded as failed with
its error (the page lists it, and the script exits non-zero).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .plan import Job, Planner


_DATA: dict[str, Any] = {}


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from . import runs  # noqa: F401  (import transformers, trl and tspin_trl once, before the first run)


def run_job(setting: dict, method: str, lr: float | None, seed: int, warm_folder: str, work: str) -> dict:
    """One run (or, with `method == "warm"`, seed `seed`'s warm start into `warm_folder`), in whichever process calls
    it; its own output folder, the shared proto cache."""
    from . import runs

    s = runs.Setting(**setting)
    key = repr(sorted(setting.items()))
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = runs.make_data(s)
    if method == "warm":
        return runs.build_warm_start(s, _DATA[key], seed, warm_folder)
    output = os.path.join(work, "runs", f"{method}-{lr:g}-{seed}-{os.getpid()}")
    return runs.run_one(s, runs.METHODS[method], lr, seed, warm_folder, _DATA[key], output,
                        os.path.join(work, "proto_cache"))  # fmt: skip


class Runner:
    """Runs jobs for a [`Planner`]: `jobs` at once (1: in this process), reporting each record to `on_record`.

    Args:
        jobs: runs at once; above 1, each in a spawned worker process with `threads` CPU threads.
        threads: CPU threads per worker (default: the CPU count divided by `jobs`, at least 1).
    """

    def __init__(self, jobs: int = 1, threads: int | None = None):
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        self.jobs = jobs
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        self.pool = None
        if jobs > 1:
            # Workers start (and import torch, transformers, trl) while the parent builds the warm start.
            saved = os.environ.get("OMP_NUM_THREADS")
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
            self.pool = multiprocessing.get_context("spawn").Pool(jobs, _init_worker, (self.threads,))
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS")
            else:
                os.environ["OMP_NUM_THREADS"] = saved

    def close(self, terminate: bool = False) -> None:
        if self.pool is not None:
            if terminate:
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()
            self.pool = None

    def run(self, planner: Planner, args: Callable[[Job], tuple], on_record: Callable[[Job, dict], None],
            deadline: float | None = None, hard_deadline: float | None = None,
            log: Callable[[str], None] = print) -> list[dict]:  # fmt: skip
        """Run every job the planner hands out until none is left. `args(job)` gives `run_job`'s arguments; deadlines
        are `time.monotonic()` values. Returns the failures (`{"method", "lr", "seed", "error"}`). An interrupt
        (Ctrl-C, or `timeout --signal=INT` around the script) stops the runs going and returns, so that the caller
        can still write the page from the runs that finished."""
        failures: list[dict] = []
        try:
            self._run(planner, args, on_record, deadline, hard_deadline, log, failures)
        except KeyboardInterrupt:
            log("interrupted: stopping the runs going; the page is written from the finished runs")
            self.close(terminate=True)
            planner.abandon("stopped: interrupted")
        return failures

    def _run(self, planner, args, on_record, deadline, hard_deadline, log, failures: list[dict]) -> None:
        walls: dict[str, list[float]] = {}
        going: dict[tuple, tuple[Job, Any, float]] = {}

        def kind(job: Job) -> str:
            return "warm" if job.method == "warm" else planner.methods[job.method].kind

        def estimate(job: Job) -> float:
            return statistics.fmean(walls[kind(job)]) if walls.get(kind(job)) else 0.0

        def finish(job: Job, record: dict | None, error: str | None, began: float) -> None:
            if error is not None:
                planner.skip(job, "failed: " + error.strip().splitlines()[-1])
                failures.append({"method": job.method, "lr": job.lr, "seed": job.seed, "error": error})
                log(f"FAILED {job.method} lr {job.lr} seed {job.seed}:\n{error}")
                return
            walls.setdefault(kind(job), []).append(time.monotonic() - began)
            record.update(method=job.method, k=job.k, seed=job.seed)
            planner.record(record)
            on_record(job, record)

        while True:
            started_any = False
            for job in planner.ready():
                if len(going) >= self.jobs:
                    break
                if deadline is not None and time.monotonic() + estimate(job) > deadline:
                    planner.skip(job, "not run: the recipe's deadline")
                    started_any = True  # skipping can finalize a row and ready new jobs: look again
                    continue
                planner.start(job)
                started_any = True
                began = time.monotonic()
                if self.pool is None:
                    try:
                        record = run_job(*args(job))
                    except Exception:  # noqa: BLE001  (recorded on the page, and the script exits non-zero)
                        finish(job, None, traceback.format_exc(), began)
                    else:
                        finish(job, record, None, began)
                    break  # in-process: re-plan after every run
                going[job.key] = (job, self.pool.apply_async(run_job, args(job)), began)
            if started_any and self.pool is None:
                continue
            if not going:
                if started_any:
                    continue
                break
            time.sleep(0.2)
            for key, (job, result, began) in list(going.items()):
                if result.ready():
                    del going[key]
                    try:
                        record, error = result.get(), None
                    except Exception:  # noqa: BLE001
                        record, error = None, traceback.format_exc()
                    finish(job, record, error, began)
            if going and hard_deadline is not None and time.monotonic() > hard_deadline:
                for job, _, _ in going.values():
                    log(f"stopped {job.method} lr {job.lr} seed {job.seed} at the hard deadline")
                self.close(terminate=True)
                planner.abandon("stopped at the recipe's hard deadline")
                break


def remove_run_folders(work: Path) -> None:
    """Output folders left by stopped runs (finished runs remove their own)."""
    import shutil

    shutil.rmtree(work / "runs", ignore_errors=True)
