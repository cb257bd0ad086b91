"""Running the campaign: each case in isolation with a timeout, the results JSON, and its markdown tables."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from .harness import CASES, DEFECT, OUTCOMES, ROOT, Case, CaseTimeout, Ctx, Session, Verdict, error_text


# The modules of cases, in the order of the report (each registers its cases when imported).
CASE_MODULES = (
    "settings",
    "inputs",
    "identity",
    "run_files",
    "proto_cache",
    "checkpoints",
    "interrupts",
    "kills",
    "disk",
    "concurrency",
    "vllm_server",
    "scorers",
)


def load_cases() -> list[Case]:
    for name in CASE_MODULES:
        importlib.import_module(f"{__package__}.{name}")
    return CASES


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def run_case(item: Case) -> dict[str, Any]:
    """Run one case in its own folder and proto cache, with its timeout; stdout, stderr and Python warnings muted."""
    folder = Path(tempfile.mkdtemp(prefix=f"{item.name}-", dir=Session.folder))
    handler = _Records()
    logging.getLogger().addHandler(handler)
    os.environ["TSPIN_TRL_CACHE"] = str(folder / "cache")

    def on_alarm(signum, frame):
        raise CaseTimeout(f"no result within {item.timeout} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(item.timeout)
    start = time.perf_counter()
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            verdict = item.run(Ctx(folder, handler.records))
    except CaseTimeout as error:
        verdict = Verdict(DEFECT, f"hang: {error}")
    except Exception as error:  # noqa: BLE001 - a bug of the case itself is reported, not hidden
        verdict = Verdict(DEFECT, f"campaign error: {error_text(error)}", traceback.format_exc()[-1500:])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        logging.getLogger().removeHandler(handler)
        _make_removable(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "name": item.name,
        "category": item.category,
        "finding": item.finding,
        "action": item.action,
        "outcome": verdict.outcome,
        "message": verdict.message[:400],
        "detail": verdict.detail[:400],
        "seconds": round(time.perf_counter() - start, 2),
    }


def _make_removable(folder: Path) -> None:
    """A case that made folders read-only (or whose worker ran with a strict umask) leaves them removable."""
    for root, directories, _ in os.walk(folder):
        for name in directories:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o755)


def markdown_tables(report: dict[str, Any]) -> str:
    """The cases of a results JSON as one markdown table per category (for docs/reliability.md)."""
    lines = []
    categories = dict.fromkeys(c["category"] for c in report["cases"])
    for category in categories:
        cases = [c for c in report["cases"] if c["category"] == category]
        lines += [f"### {category} ({len(cases)})", "", "| case | what was done | outcome | message (excerpt) |"]
        lines.append("| --- | --- | --- | --- |")
        for c in cases:
            message = c["message"].replace("|", "\\|").replace("\n", " ")
            message = message if len(message) <= 160 else message[:157] + "..."
            outcome = f"**{c['outcome']}**" if c["outcome"] == DEFECT else c["outcome"]
            action = c["action"].replace("|", "\\|")
            lines.append(f"| `{c['name']}` | {action} | {outcome} | {message} |")
        lines.append("")
    return "\n".join(lines)


def totals_of(results: list[dict[str, Any]]) -> dict[str, int]:
    return {"tried": len(results)} | {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}


def main(argv: list[str] | None = None) -> int:
    from . import __doc__ as description

    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=description.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset of every category (about 2 minutes)")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--finding", default=None, help="run the cases of one finding (an issue number, e.g. 32)")
    parser.add_argument("--out", default=None, help="where to write the JSON (default: bench/results/faults.json)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--table", default=None, help="print a results JSON as markdown tables and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_tables(json.loads(Path(args.table).read_text())))
        return 0
    if args.worker:
        from .workers import worker

        worker(json.loads(args.worker))
        return 0
    import torch

    cases = [
        c
        for c in load_cases()
        if (c.quick or not args.quick)
        and (args.only is None or args.only in c.name)
        and (args.finding is None or c.finding == args.finding)
    ]
    if args.list:
        for item in cases:
            print(f"{item.category:40s} {item.name:45s} {item.action}")
        print(f"{len(cases)} cases")
        return 0
    torch.set_num_threads(1)
    logging.getLogger("tspin_trl").setLevel(logging.WARNING)
    Session.folder = Path(tempfile.mkdtemp(prefix="tspin-faults-"))
    out = Path(args.out or ROOT / "bench" / "results" / ("faults_quick.json" if args.quick else "faults.json"))
    start = time.perf_counter()
    results = []
    try:
        for index, item in enumerate(cases, 1):
            result = run_case(item)
            results.append(result)
            print(
                f"[{index:3d}/{len(cases)}] {result['outcome']:24s} {item.name} ({result['seconds']} s): "
                f"{result['message'][:110]}",
                flush=True,
            )
    finally:
        _make_removable(Session.folder)
        shutil.rmtree(Session.folder, ignore_errors=True)
    report = {
        "campaign": "python -m tests.faults" + (" --quick" if args.quick else ""),
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread",
        "seconds": round(time.perf_counter() - start, 1),
        "totals": totals_of(results),
        "cases": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["totals"]), f"in {report['seconds']} s ->", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
