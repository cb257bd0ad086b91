"""Reproduce the T-SPIN paper's comparison at small scale, in a setting with headroom whose target is known exactly;
write docs/reproduction.md (or, with --gpu, the GPU recipe's page to the folder given).

The task (`bench/repro/task.py`): a prompt is 4-7 distinct digits; the answer is as many digits drawn uniformly with
replacement from the prompt digits shifted by k (mod 10). Each seed's warm start learns the old rule (k = 0); every
row then learns the new rule (k = 1) from it. Rows (`bench/repro/runs.py`): SFT on the 25% subset (with self-play's
steps, and with SFT 100%'s), SFT on 100%, SPIN, T-SPIN, T-SPIN w/o H-A, T-SPIN_ref (AdamW); SPIN and T-SPIN with
RMSProp and the paper's per-iteration reset (the fidelity arm); beyond the paper, NeMo-Aligner's annealing and prompt
selection. Which runs are made follows rules fixed before the run (`bench/repro/plan.py`); the preconditions and the
verdicts follow rules written in `bench/repro/analysis.py` (and in the results JSON).

```bash
make reproduce                                # = python bench/reproduce.py: the full run, writes docs/
python bench/reproduce.py --quick             # smaller, 3 seeds, 3 iterations; writes outputs/reproduce-quick/
python bench/reproduce.py --smoke --out DIR   # a few dozen prompts, 2 seeds, 2 iterations (the test)
python bench/reproduce.py --gpu --out DIR     # the GPU recipe: a 26M-parameter Llama, 8 runs at once (one H100/H200)
python bench/reproduce.py --gpu --smoke --out DIR   # the GPU recipe's code path at the smoke size (runs on a CPU)
python bench/reproduce.py --resume            # skip the runs already recorded in the work folder's runs.jsonl
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
from repro import analysis, pool, report, runs  # noqa: E402
from repro.plan import Planner  # noqa: E402
from repro.settings import setting_for  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]


def run_key(setting: runs.Setting, method: str, k, seed: int) -> str:
    blob = json.dumps([setting.to_dict(), method, k, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rows_that_run(setting: runs.Setting, skip: list[str]) -> tuple[list[str], dict[str, str]]:
    """The rows that run, and for each row that does not, why (switched off, or TSPINConfig lacks its fields)."""
    unknown = [m for m in skip if m not in runs.METHODS]
    if unknown:
        raise SystemExit(f"--skip-rows: unknown row(s) {', '.join(unknown)}; rows are {', '.join(runs.METHODS)}")
    rows, not_run = [], {}
    for m in runs.METHODS:
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
    size.add_argument("--quick", action="store_true", help="smaller data, 3 seeds, 3 iterations")
    size.add_argument("--smoke", action="store_true", help="a few dozen prompts, 2 seeds, 2 iterations (the test)")
    parser.add_argument("--gpu", action="store_true", help="the GPU recipe (a 26M-parameter Llama, runs in parallel)")
    parser.add_argument("--out", help="folder for reproduction.md and figures/ (default: docs/ for the full run, "
                        "outputs/reproduce-<mode>/ otherwise)")  # fmt: skip
    parser.add_argument(
        "--work-dir", help="warm starts, proto cache and runs.jsonl (default: outputs/reproduce-work-<mode>)"
    )
    parser.add_argument("--jobs", type=int, help="runs at once (default: 8 with --gpu, 2 for the CPU page and "
                        "--quick (one thread each), 1 with --smoke)")  # fmt: skip
    parser.add_argument("--deadline-min", type=float, help="start no run that would end after this many minutes "
                        "from the start (default: 7 with --gpu, else none); runs still going 0.5 min later stop")  # fmt: skip
    parser.add_argument("--skip-rows", default="", help="comma-separated rows not to run (e.g. spin_anneal,"
                        "tspin_anneal,tspin_select); the page says so")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="skip runs already recorded in the work folder")
    parser.add_argument("--ignore-preconditions", action="store_true", help="make every run even when a "
                        "precondition fails (the verdicts stay marked untestable; the smoke test uses it)")  # fmt: skip
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
    jobs = args.jobs or (8 if args.gpu else 1 if mode == "smoke" else 2)
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

    def warm_folder(seed: int) -> str:
        return str(work / f"warm_start_{run_key(setting, 'warm', None, seed)}")

    # Workers start (and import torch, transformers, trl) now; on a CPU each gets one thread (tiny models run best so).
    runner = pool.Runner(jobs, threads=None if args.gpu else 1)
    load_start = os.getloadavg()[0]
    planner = Planner(
        setting, runs.METHODS, rows, gate=analysis.gate(setting.seeds), past_failed_gate=args.ignore_preconditions
    )
    records: list[dict] = []
    warm_starts: dict[int, dict] = {}
    for key, record in done.items():
        if key != run_key(setting, record["method"], record["k"], record["seed"]):
            continue  # recorded under another setting: not this run's
        if record["method"] == "warm":
            warm_starts[record["seed"]] = record
        elif record["method"] in rows:
            records.append(record)
        else:
            continue
        planner.record(record)
    printed_gate = False

    def stamp() -> str:
        return f"[{time.perf_counter() - started:6.0f}s]"

    def on_record(job, record: dict) -> None:
        nonlocal printed_gate
        record["method"], record["k"] = job.method, job.k
        record["key"] = run_key(setting, job.method, job.k, job.seed)
        record["reason"] = job.reason
        with open(runs_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if job.method == "warm":
            warm_starts[job.seed] = record
            h = record["held_out"]
            print(f"{stamp()} warm start seed {job.seed}: held-out KL to the new rule {h['forward_kl']:.3f}, to the "
                  f"old rule {record['held_out_old_rule_kl']:.3f}; sampled validity new/old rule "
                  f"{h['validity_sampled']:.3f}/{h['validity_old_rule']:.3f} ({record['cpu_s']:.0f} s CPU)", flush=True)  # fmt: skip
        else:
            records.append(record)
            kls = " ".join(f"{p['forward_kl']:.3f}" for p in record["points"])
            print(f"{stamp()} {job.method:13s} lr {job.lr:<8g} seed {job.seed} ({job.reason}): held-out KL {kls}; "
                  f"validation {record['validation_kl']:.3f} ({record['cpu_s']:.0f} s CPU)", flush=True)  # fmt: skip
        planner.ready()  # lets the gate run as soon as its runs are in
        if planner.gate_result is not None and not printed_gate:
            printed_gate = True
            holds, text = planner.gate_result
            outcome = (
                "HOLD"
                if holds
                else "FAIL (the claims are untestable; "
                + ("the runs go on: --ignore-preconditions)" if args.ignore_preconditions else "nothing else runs)")
            )
            print(f"{stamp()} PRECONDITIONS {outcome}: {text}", flush=True)

    def job_args(job) -> tuple:
        return (setting.to_dict(), job.method, job.lr, job.seed, warm_folder(job.seed), str(work))

    try:
        failures = runner.run(planner, job_args, on_record, deadline, hard_deadline)
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
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "jobs": jobs,
        "threads_per_job": runner.threads if jobs > 1 else None,
        "deadline_min": deadline_min,
    }
    results = {"meta": meta, "setting": setting.to_dict(), "rules": analysis.RULES, "warm_starts": warm_starts,
               "runs": records, "plan": plan, "not_run": not_run, "failures": failures}  # fmt: skip
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
