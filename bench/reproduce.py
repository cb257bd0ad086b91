"""Reproduce the T-SPIN paper's comparison at small scale on a task whose target distribution is known exactly;
write docs/reproduction.md (or, with --gpu, the GPU recipe's page to the folder given).

The task (`bench/repro/task.py`): prompt = 4-7 distinct digits, real answer = as many digits drawn uniformly with
replacement from them. Rows (`bench/repro/runs.py`): SFT on 100% (continued) and on 25%, SPIN with and without its
data mixing, T-SPIN alpha 1, T-SPIN w/o historical advantage, T-SPIN alpha 0.1, T-SPIN_ref, and beyond the paper SPIN
and T-SPIN with NeMo-Aligner's annealing and T-SPIN with prompt selection; all from one warm start (SFT on the whole
pool), every iteration its own run. Which runs are made follows rules fixed before the run (`bench/repro/plan.py`:
per-row learning-rate grids extended until the chosen rate is interior, every seed at the chosen rate, equal-rate
comparisons with every seed); the verdicts (`bench/repro/analysis.py`) follow rules stated in the page
(`bench/repro/template.md`).

```bash
make reproduce                                # = python bench/reproduce.py: the full run, writes docs/
python bench/reproduce.py --quick             # fewer rates, 1 seed, 3 iterations; writes outputs/reproduce-quick/
python bench/reproduce.py --smoke --out DIR   # a few dozen prompts, 2 iterations (the test)
python bench/reproduce.py --gpu --out DIR     # the GPU recipe: a 26M-parameter Llama, 8 runs at once (one H100/H200)
python bench/reproduce.py --gpu --smoke --out DIR   # the GPU recipe's code path at the smoke size (runs on a CPU)
python bench/reproduce.py --resume            # skip the runs already in the work folder's runs.jsonl
```
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro import pool, report, runs  # noqa: E402
from repro.plan import Planner  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
TINY_SHAPE = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)
GPU_SHAPE = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1408)
SMOKE_SHAPE = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def setting_for(mode: str) -> runs.Setting:
    """The setting of a mode: "full", "quick", "smoke", "gpu" or "gpu-smoke"."""
    setting = runs.Setting(
        name="draws",
        model="llama",
        pool=1200,
        held_out=300,
        validation=200,
        iterations=5,  # the paper's iter0 .. iter4
        sft_lrs=[1e-4, 3e-4, 1e-3],
        selfplay_lrs=[1e-5, 3e-5, 1e-4],
        seeds=[0, 1, 2],
        methods=list(runs.METHODS),
        tiny_shape=TINY_SHAPE,
        min_digits=4,
        max_digits=7,
        replacement=True,
        warm_epochs=12,
        warm_lr=3e-3,
        eval_samples=2,
    )
    if mode == "quick":
        setting.iterations, setting.seeds = 3, [0]
        setting.sft_lrs, setting.selfplay_lrs = [3e-4], [3e-5, 1e-4]
        setting.extend_down, setting.extend_up, setting.equal_lrs = 1, 0, [1e-4]
    elif mode in ("smoke", "gpu-smoke"):
        setting.pool, setting.held_out, setting.validation, setting.iterations = 48, 16, 16, 2
        setting.sft_lrs, setting.selfplay_lrs, setting.seeds = [1e-3], [1e-4], [0]
        setting.extend_down, setting.extend_up, setting.equal_lrs = 0, 0, [1e-4]
        setting.tiny_shape = SMOKE_SHAPE
        setting.warm_epochs, setting.batch_size, setting.warm_batch_size = 1, 8, 8
        setting.eval_paths, setting.eval_samples = 2, 2
    elif mode == "gpu":
        # One H100/H200, 8 runs at once: a 26M-parameter Llama (40x the CPU model), 3.3x the data, 1000 held-out
        # prompts, 8 p_data paths and 4 samples per prompt. Sized in docs/reproduction.md ("The GPU recipe").
        setting.name = "draws-gpu"
        setting.tiny_shape = GPU_SHAPE
        setting.pool, setting.held_out, setting.validation = 4000, 1000, 500
        setting.batch_size, setting.warm_batch_size, setting.warm_epochs, setting.warm_lr = 64, 64, 6, 1e-3
        setting.sft_lrs, setting.selfplay_lrs = [3e-5, 1e-4, 3e-4], [3e-6, 1e-5, 3e-5]
        setting.eval_paths, setting.eval_samples = 8, 4
        setting.eval_batch_size = setting.generation_batch_size = 4096
    if mode == "gpu-smoke":
        setting.name = "draws-gpu-smoke"
    return setting


def run_key(setting: runs.Setting, method: str, lr: float, seed: int) -> str:
    blob = json.dumps([setting.to_dict(), method, lr, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rows_that_run(setting: runs.Setting, skip: list[str]) -> tuple[list[str], dict[str, str]]:
    """The rows that run, and for each row that does not, why (switched off, or TSPINConfig lacks its fields)."""
    unknown = [m for m in skip if m not in runs.METHODS]
    if unknown:
        raise SystemExit(f"--skip-rows: unknown row(s) {', '.join(unknown)}; rows are {', '.join(runs.METHODS)}")
    rows, not_run = [], {}
    for m in setting.methods:
        missing = runs.missing_fields(runs.METHODS[m])
        if m in skip:
            not_run[m] = "switched off (--skip-rows)"
        elif missing:
            not_run[m] = f"this tspin_trl's TSPINConfig has no {', '.join(f'`{f}`' for f in missing)}"
        else:
            rows.append(m)
    return rows, not_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer rates, 1 seed, 3 iterations")
    size.add_argument("--smoke", action="store_true", help="a few dozen prompts, 2 iterations (the test)")
    parser.add_argument("--gpu", action="store_true", help="the GPU recipe (a 26M-parameter Llama, runs in parallel)")
    parser.add_argument("--out", help="folder for reproduction.md and figures/ (default: docs/ for the full run, "
                        "outputs/reproduce-<mode>/ otherwise)")  # fmt: skip
    parser.add_argument(
        "--work-dir", help="warm start, proto cache and runs.jsonl (default: outputs/reproduce-work-<mode>)"
    )
    parser.add_argument("--jobs", type=int, help="runs at once (default: 8 with --gpu, else 1)")
    parser.add_argument("--deadline-min", type=float, help="start no run that would end after this many minutes "
                        "from the start (default: 7 with --gpu, else none); runs still going 0.5 min later stop")  # fmt: skip
    parser.add_argument("--skip-rows", default="", help="comma-separated rows not to run (e.g. spin_anneal,"
                        "tspin_anneal,tspin_select until TSPINConfig has their fields); the page says so")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="skip runs already recorded in the work folder")
    parser.add_argument("--render-only", metavar="JSON", help="re-draw the page and figures from a results JSON")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    if args.gpu:
        mode = "gpu-smoke" if args.smoke else "gpu"
        if args.quick:
            parser.error("--gpu has no --quick size (use --smoke for the code path)")
    if args.out:
        doc_path = Path(args.out) / "reproduction.md"
    elif mode == "full":
        doc_path = ROOT / "docs" / "reproduction.md"
    else:
        doc_path = ROOT / "outputs" / f"reproduce-{mode}" / "reproduction.md"
    figures = doc_path.parent / "figures"
    command = "python bench/reproduce.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])
    )
    if args.render_only:
        results = json.loads(Path(args.render_only).read_text())
        results["meta"]["rendered_with"] = command
        report.render(results, doc_path, figures)
        print(f"wrote {doc_path} and {figures}", flush=True)
        return 0

    started = time.perf_counter()
    clock0 = time.monotonic()
    setting = setting_for(mode)
    rows, not_run = rows_that_run(setting, [m for m in args.skip_rows.split(",") if m])
    for m, why in not_run.items():
        print(f"row {m} does not run: {why}", flush=True)
    jobs = args.jobs or (8 if args.gpu else 1)
    deadline_min = args.deadline_min if args.deadline_min is not None else (7.0 if mode == "gpu" else None)
    deadline = clock0 + 60 * deadline_min if deadline_min else None
    hard_deadline = deadline + 30 if deadline else None

    work = Path(args.work_dir or ROOT / "outputs" / f"reproduce-work-{mode}")
    work.mkdir(parents=True, exist_ok=True)
    runs_path = work / "runs.jsonl"
    done: dict[str, dict] = {}
    if args.resume and runs_path.is_file():
        for line in runs_path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["key"]] = record
    elif runs_path.exists():
        runs_path.unlink()

    runner = pool.Runner(jobs)  # workers start now, while the warm start trains here
    load_start = os.getloadavg()[0]
    data = runs.make_data(setting)
    warm_folder = str(work / f"warm_start_{run_key(setting, 'warm', 0, 0)}")
    warm = runs.build_warm_start(setting, data, setting.seeds[0], warm_folder)
    print(f"[{time.perf_counter() - started:6.0f}s] warm start: held-out KL {warm['held_out']['forward_kl']:.3f}, "
          f"validity {warm['held_out']['validity']:.3f} ({warm['wall_s']:.0f}s)", flush=True)  # fmt: skip

    planner = Planner(setting, runs.METHODS, rows, warm["validation"]["forward_kl"])
    records: list[dict] = []
    for record in done.values():
        if record["method"] in rows:
            planner.record(record)
            records.append(record)

    def on_record(job, record: dict) -> None:
        record["key"] = run_key(setting, job.method, job.lr, job.seed)
        record["reason"] = job.reason
        records.append(record)
        with open(runs_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        kls = " ".join(f"{p['forward_kl']:.3f}" for p in record["points"])
        print(f"[{time.perf_counter() - started:6.0f}s] {job.method:12s} lr {job.lr:<7g} seed {job.seed} "
              f"({job.reason}): held-out KL {kls}; validation {record['validation_kl']:.3f} "
              f"({record['wall_s']:.0f}s)", flush=True)  # fmt: skip

    try:
        failures = runner.run(planner, lambda job: (setting.to_dict(), job.method, job.lr, job.seed, warm_folder,
                                                    str(work)), on_record, deadline, hard_deadline)  # fmt: skip
    finally:
        runner.close()
        pool.remove_run_folders(work)
    plan = planner.summary()
    print("chosen rates: " + ", ".join(f"{m} {v['chosen']:g} ({v['status']})" for m, v in plan["rows"].items()
                                       if v["chosen"] is not None), flush=True)  # fmt: skip

    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    meta = {
        "mode": mode,
        "command": command,
        "wall_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime,
        "load_average": [load_start, os.getloadavg()[0]],
        "machine": _machine(),
        "python": platform.python_version(),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "jobs": jobs,
        "deadline_min": deadline_min,
    }
    results = {"meta": meta, "setting": setting.to_dict(), "warm_start": warm, "runs": records, "plan": plan,
               "not_run": not_run, "failures": failures}  # fmt: skip
    report.render(results, doc_path, figures)
    print(f"wrote {doc_path} and {figures} (wall {meta['wall_s'] / 60:.1f} min, CPU {meta['cpu_s'] / 60:.1f} min)",
          flush=True)  # fmt: skip
    return 1 if failures else 0


def _machine() -> str:
    text = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}"
    import torch

    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "tspin-trl"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    raise SystemExit(main())
