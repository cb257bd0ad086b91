"""What the contract scripts share (`dpo_contract.py`, `sft_contract.py`): the probe registry, running one probe on one
side, the results JSON, and the page's sentence and table of outcomes.

A contract compares TRL's trainer (`DPOTrainer`, `SFTTrainer`: the *other* side) with `TSPINTrainer` on the same user
code. Each probe is a function `(ctx, which) -> str` registered with `Contract.probe`; it runs once per side and its
outcome is `ok: <what came out>`, `error: <type>: <message>` (an exception it raised) or whatever text it returns (e.g.
`not measured: ...`). Set `CONTRACT_TRACE=1` to print the traceback of every probe that raises.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
import trl

from tspin_trl.demo import save_tiny_preset


TSPIN = "T-SPIN"
# The outcomes of a probe, in the order the page counts them.
OUTCOMES = ("same", "both run", "T-SPIN only", "{other} only", "both fail")


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


class ScratchContext:
    """What both contracts' contexts share: a scratch folder, the tiny preset saved once (the model given by path; TRL
    loads a reference model by that name), numbered sub-folders, and the settings both sides' configs take."""

    def __init__(self, root: Path):
        self.root = root
        self.model_dir = save_tiny_preset(root / "tiny")
        self.count = 0

    def folder(self, name: str) -> str:
        """A new empty folder `NNN-name` under the scratch folder."""
        self.count += 1
        path = self.root / f"{self.count:03d}-{name}"
        path.mkdir(parents=True)
        return str(path)

    def common(self, **overrides) -> dict:
        """The user's settings, the same for both sides: a short CPU run of the tiny preset."""
        return {
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "report_to": [],
            "save_strategy": "no",
            "use_cpu": True,
            "bf16": False,
            "gradient_checkpointing": False,
            "max_length": 64,
            "dataloader_pin_memory": False,
        } | overrides


def summary(value: Any, limit: int = 160) -> str:
    """`value` as text, cut to `limit` characters (`...` at the end where cut)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def metric_keys(history: list[dict]) -> list[str]:
    """Every key of the log entries `history`, sorted."""
    return sorted({key for entry in history for key in entry})


def run_probe(ctx: Any, function: Callable[[Any, str], str], which: str) -> tuple[str, float]:
    """Run one probe on one side, its output and warnings silenced: its outcome and seconds."""
    start = time.perf_counter()
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = function(ctx, which)
    except Exception as error:
        outcome = f"error: {type(error).__name__}: {summary(str(error).splitlines()[0] if str(error) else '', 200)}"
        if os.environ.get("CONTRACT_TRACE"):
            traceback.print_exc()
    return outcome, time.perf_counter() - start


@dataclass
class Contract:
    """
    One contract: its probes and how its results are written and shown.

    Args:
        other (`str`):
            The other side's name in the results (`"DPO"`, `"SFT"`); T-SPIN's is `"T-SPIN"`.
        results (`Path`):
            Where `main` writes the results JSON by default.
        renames (`dict[str, str]`):
            T-SPIN's names and the other side's (`{"TSPINTrainer": "DPOTrainer"}`): two outcomes that differ only by
            them are the same.
        cell_limit (`int`, *optional*):
            Outcomes longer than this are cut in the table; `None` shows them whole.
    """

    other: str
    results: Path
    renames: dict[str, str]
    cell_limit: int | None = None
    probes: list[tuple[str, str, Callable[[Any, str], str]]] = field(default_factory=list)

    @property
    def sides(self) -> tuple[str, str]:
        return (self.other, TSPIN)

    def probe(self, name: str, what: str):
        """Register a probe: `name` (its row), `what` (the user code it runs, as the table shows it)."""

        def register(function):
            self.probes.append((name, what, function))
            return function

        return register

    def outcome(self, other: str, tspin: str) -> str:
        """How two outcomes compare: the same text (the renamed names aside), both run, one side only, or neither."""
        normalised = [other, tspin]
        for ours, theirs in self.renames.items():
            normalised = [text.replace(ours, theirs) for text in normalised]
        if normalised[0] == normalised[1]:
            return "same"
        if other.startswith("ok") and tspin.startswith("ok"):
            return "both run"
        if tspin.startswith("ok"):
            return "T-SPIN only"
        if other.startswith("ok"):
            return f"{self.other} only"
        return "both fail"

    def counts(self, report: dict) -> dict[str, int]:
        """How many probes had each outcome, in `OUTCOMES`' order (outcomes no probe had left out)."""
        found = [self.outcome(row[self.other], row[TSPIN]) for row in report["probes"]]
        kinds = [kind.format(other=self.other) for kind in OUTCOMES]
        return {kind: found.count(kind) for kind in kinds if kind in found}

    def sentence(self, report: dict) -> str:
        """The page's sentence: the versions measured with and how many probes had each outcome."""
        trainers = {"T-SPIN only": "TSPINTrainer", f"{self.other} only": f"{self.other}Trainer"}
        parts = []
        for kind, n in self.counts(report).items():
            one = n == 1
            if kind == "same":
                parts.append(f"{n} {'gives' if one else 'give'} the same outcome")
            elif kind == "both run":
                parts.append(f"{n} {'runs' if one else 'run'} on both with different content")
            elif kind == "both fail":
                parts.append(f"{n} {'fails' if one else 'fail'} on both")
            else:
                parts.append(f"{n} {'runs' if one else 'run'} only with `{trainers[kind]}`")
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
        versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        return f"Measured with {versions}: of the {len(report['probes'])} probes, {listed}."

    def table(self, report: dict) -> str:
        """The page's sentence, then the markdown table: one row per probe, both outcomes and how they compare."""
        lines = [
            self.sentence(report),
            "",
            f"| probe | user code | {self.other}Trainer | TSPINTrainer | outcome |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in report["probes"]:
            other, tspin = row[self.other], row[TSPIN]
            shown = [text if self.cell_limit is None else summary(text, self.cell_limit) for text in (other, tspin)]
            cells = [f"`{row['name']}`", row["what"], *shown, self.outcome(other, tspin)]
            lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
        return "\n".join(lines)

    def run(self, context: Callable[[Path], Any], only: str | None = None) -> list[dict]:
        """Every probe (or those whose name contains `only`) on both sides, in a scratch folder: one row each."""
        torch.set_num_threads(1)
        # transformers' default verbosity, as in a user's script: `bench` sets TRANSFORMERS_VERBOSITY=error, under which
        # TrainingArguments turns the progress bar off and logs through PrinterCallback, which drops `total_flos` from
        # the metrics `train()` returns. Python's logging is silenced instead (the probes' messages are not measured).
        transformers.logging.set_verbosity_warning()
        logging.disable(logging.WARNING)
        results = []
        with tempfile.TemporaryDirectory(prefix=f"{self.other.lower()}-contract-") as root:
            os.environ["TSPIN_TRL_CACHE"] = os.path.join(root, "proto_cache")
            ctx = context(Path(root))
            for name, what, function in self.probes:
                if only and only not in name:
                    continue
                row = {"name": name, "what": what}
                for which in self.sides:
                    row[which], row[f"{which} seconds"] = run_probe(ctx, function, which)
                results.append(row)
                print(f"{name}: " + " | ".join(f"{which} {row[which][:80]!r}" for which in self.sides), flush=True)
        return results

    def main(self, description: str, context: Callable[[Path], Any], argv: list[str] | None = None) -> None:
        """The script's command line: run the probes and write the JSON, or `--table FILE` to print the page's part."""
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--only", default=None, help="run the probes whose name contains this")
        parser.add_argument("--out", default=str(self.results), help="where to write the JSON")
        parser.add_argument("--table", default=None, help="print a results JSON as the page's sentence and table")
        args = parser.parse_args(argv)
        if args.table:
            print(self.table(json.loads(Path(args.table).read_text())))
            return
        results = self.run(context, args.only)
        report = {
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
            "probes": results,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"{len(results)} probes -> {args.out}")
