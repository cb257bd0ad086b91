"""`tspin-plot`: diagnostic figures and a generations page for the output directory of a T-SPIN run.

```
python -m tspin_trl.plot OUTPUT_DIR [--out DIR] [--num_examples 5]
```

reads `OUTPUT_DIR/self_play/logs.jsonl` (or, without it, the `log_history` of the newest `trainer_state.json`), the
per-iteration records `self_play/iterations.jsonl` (means over every training step of each iteration), the held-out
evidence `self_play/heldout.jsonl`, the `self_play/iteration_<t>/train.jsonl` files and the optional
`self_play/scores.jsonl` (the layout is [`RunFolder`]'s), and writes to `OUTPUT_DIR/plots` one figure per question:

- `heldout.png`: did self-play help on held-out data? (log-likelihood of the real responses per token, margins over
  the proto responses and the likelihood inversion, before training and after every iteration);
- `scores.png`: did the task score rise? (with 95% intervals when the per-prompt rewards are known);
- `loglikelihood.png`: how do the three responses' log-likelihoods move during training? (the paper's Fig. 3);
- `advantages.png`: are the current and historical advantages positive, and for what share of pairs?;
- `rewards.png`, only for objectives with reference log-probs (`spin`, `tspin_ref`): the rewards, and where their
  order disagrees with the log-likelihoods' (under `tspin` the rewards are the log-likelihoods scaled);

and `generations.md` (responses side by side) and `summary.md` (the run's verdict and per-iteration table). Figures
whose inputs are absent are skipped, with a note in `summary.md`.

matplotlib is imported only when a figure is drawn (`pip install tspin-trl[plot]`).
"""

import argparse
import glob
import json
import os
from collections.abc import Sequence
from typing import Any

from .checked_io import read_jsonl
from .report import _labels, heldout_records_by_label, t_quantile, verdict
from .run_folder import ITERATION_KEY, RunFolder


# Columns of the per-iteration table (`summary.md`, `results.md`, the model card), from the per-iteration records:
# (record key, column name). The held-out evidence and the score come first: they answer whether self-play helped.
HELDOUT_COLUMNS = (
    ("heldout_logp_real_per_token", "heldout logp(y)/token"),
    ("heldout_margin_real_proto", "heldout logp(y)-logp(y0)"),
    ("heldout_margin_synthetic_proto", "heldout logp(y')-logp(y0)"),
    ("likelihood_inversion", "likelihood_inversion"),
)
TABLE_COLUMNS = (
    ("learning_rate", "learning_rate"),
    ("alpha", "alpha"),
    ("beta", "beta"),
    ("prompts_kept", "prompts_kept"),
    ("prompts_skipped", "prompts_skipped"),
    *HELDOUT_COLUMNS,
    ("means.loss/per_example", "loss"),
    ("means.logps/real", "logps/real"),
    ("means.logps/synthetic", "logps/synthetic"),
    ("means.logps/proto", "logps/proto"),
    ("means.advantage/current", "advantage/current"),
    ("means.advantage/historical", "advantage/historical"),
    ("means.advantage/current_accuracy", "current_accuracy"),
    ("means.rewards/disagreement", "disagreement"),
    ("means.rewards/ties", "ties"),
    ("means.self_play/synthetic_equals_real", "identical_pairs"),
    ("means.advantage/saturated", "saturated_pairs"),
    ("advantage_vanished", "advantage_vanished"),
    ("advantage_saturated", "advantage_saturated"),
)
SCORE = "score"  # the task score's column, from `self_play/scores.jsonl`
# Per-iteration settings: shown only when they change from one iteration to another (a schedule)
SETTING_COLUMNS = ("learning_rate", "alpha", "beta")
_ROLES = ("real", "synthetic", "proto")
_ROLE_STYLE = {"real": ("C0", "-"), "synthetic": ("C1", "-"), "proto": ("C2", "--")}


# ---- reading a run -------------------------------------------------------------------------------------------------


def _log_source(output_dir: str) -> str | None:
    logs = RunFolder(output_dir).logs_path
    if os.path.isfile(logs):
        return logs
    states = glob.glob(os.path.join(output_dir, "checkpoint-*", "trainer_state.json"))
    states += glob.glob(os.path.join(output_dir, "trainer_state.json"))
    if not states:
        return None

    def global_step(path: str) -> tuple[int, bool]:
        with open(path) as f:
            return json.load(f).get("global_step", 0), os.path.dirname(path) == output_dir.rstrip(os.sep)

    return max(states, key=global_step)


def load_logs(output_dir: str) -> tuple[list[dict[str, Any]], str]:
    """
    Read the log records of a run.

    Args:
        output_dir (`str`):
            The `output_dir` of a [`TSPINTrainer`] run.

    Returns:
        `tuple[list[dict[str, Any]], str]`: the records in step order, each with its `"step"`, and the file they came
        from: `self_play/logs.jsonl`, else the `log_history` of the newest `trainer_state.json` (of a checkpoint or
        of `output_dir`). When a resumed or restarted run logged a step again, only its last logging is kept; a
        truncated last line (a writer killed mid-line) is skipped.

    Raises:
        `FileNotFoundError`: when `output_dir` has neither file.
    """
    source = _log_source(output_dir)
    if source is None:
        raise FileNotFoundError(
            f"No training logs in {output_dir!r}: expected self_play/logs.jsonl, checkpoint-*/trainer_state.json or "
            "trainer_state.json. Is it the output_dir of a TSPINTrainer run?"
        )
    if source.endswith(".jsonl"):
        records = read_jsonl(source)
    else:
        with open(source) as f:
            records = json.load(f).get("log_history", [])

    def kind(record: dict[str, Any]) -> str:
        return "train" if "loss" in record else "summary" if "train_runtime" in record else "other"

    kept: list[dict[str, Any]] = []
    for record in records:
        record = {**record, "step": record.get("step", kept[-1]["step"] if kept else 0)}
        # A step logged again: the run was resumed from a checkpoint or restarted; drop what it redid.
        while kept and (
            kept[-1]["step"] > record["step"]
            or (kept[-1]["step"] == record["step"] and kind(kept[-1]) == kind(record) == "train")
        ):
            kept.pop()
        kept.append(record)
    return kept, source


def _iteration_files(output_dir: str) -> dict[int, tuple[list[dict[str, Any]], dict[str, Any]]]:
    """`{t: (rows, meta)}` of every `self_play/iteration_<t>/train.jsonl`."""
    folder = RunFolder(output_dir)
    found = {}
    for t in folder.iteration_numbers():
        data_path, meta_path = folder.iteration_files(t, "train")
        meta = {}
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
        found[t] = (read_jsonl(data_path), meta if isinstance(meta, dict) else {})
    return found


def _iteration_of(record: dict[str, Any]) -> int | None:
    """The iteration a logged line belongs to: its own tag, the iteration of its step (a logging window may span a
    boundary, as `logging_steps` makes it)."""
    value = record.get(ITERATION_KEY)
    return int(value) if isinstance(value, (int, float)) and float(value).is_integer() else None


def _training_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training-step records (not the final summary or evaluation ones), each with its `"iteration"`."""
    return [{**record, "iteration": _iteration_of(record)} for record in records if "loss" in record]


# ---- figures -------------------------------------------------------------------------------------------------------


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("tspin-plot needs matplotlib: pip install tspin-trl[plot]") from error
    return Figure


def _series(lines: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(line["step"], line[key]) for line in lines if isinstance(line.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _boundaries(lines: list[dict[str, Any]], records: dict[int, dict[str, Any]]) -> list[tuple[float, int]]:
    """`(x, t)` where iteration `t` begins, within the logged steps: before its first step, from the per-iteration
    records; without them, after the last logged step of the previous iteration (exact when every step logs)."""
    starts = sorted((r["first_step"], t) for t, r in records.items() if isinstance(r.get("first_step"), int))
    tagged = {line["iteration"] for line in lines} - {None}
    if lines and starts and tagged <= {t for _, t in starts}:
        first, last = lines[0]["step"], lines[-1]["step"]
        return [(step - 0.5, t) for step, t in starts[1:] if first < step <= last]
    found = []
    for before, after in zip(lines, lines[1:]):
        if (
            after["iteration"] is not None
            and before["iteration"] is not None
            and after["iteration"] != before["iteration"]
        ):
            found.append((before["step"] + 0.5, after["iteration"]))
    return found


def _mark_iterations(ax, lines: list[dict[str, Any]], boundaries: list[tuple[float, int]], label: bool) -> None:
    for x, _ in boundaries:
        ax.axvline(x, color="0.4", linestyle="--", linewidth=1)
    if not label or not lines or lines[0]["iteration"] is None:
        return
    edges = [lines[0]["step"] - 0.5, *(x for x, _ in boundaries), lines[-1]["step"] + 0.5]
    # the first line's own iteration, or the one before the first boundary (the first line's window may span it)
    names = [boundaries[0][1] - 1 if boundaries else lines[0]["iteration"], *(t for _, t in boundaries)]
    for left, right, t in zip(edges, edges[1:], names):
        ax.text(
            (left + right) / 2,
            1.01,
            f"iteration {t}",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.3",
        )


def _line_figure(
    path: str,
    lines: list[dict[str, Any]],
    boundaries: list[tuple[float, int]],
    panels: list[tuple[str, list[tuple[str, str]]]],
    title: str,
) -> bool:
    """One panel per `(ylabel, [(key, legend label), ...])`; False (nothing written) when no key has a value."""
    panels = [(ylabel, [(k, n) for k, n in keys if _series(lines, k)[0]]) for ylabel, keys in panels]
    panels = [(ylabel, keys) for ylabel, keys in panels if keys]
    if not panels:
        return False
    figure = _figure_class()(figsize=(9, 3.2 + 2.6 * len(panels)), dpi=110, layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, (ylabel, keys)) in enumerate(zip(axes, panels)):
        for key, name in keys:
            role = key.rsplit("/", 1)[-1].removesuffix("_accuracy")
            color, style = _ROLE_STYLE.get(role, (None, "-"))
            steps, values = _series(lines, key)
            marker = "o" if len(steps) <= 100 else None
            ax.plot(steps, values, marker=marker, markersize=3, color=color, linestyle=style, label=name)
        if any(k.startswith("advantage/") and not k.endswith("accuracy") for k, _ in keys):
            ax.axhline(0, color="0.7", linewidth=0.8)
        _mark_iterations(ax, lines, boundaries, label=i == 0)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("global step")
    figure.suptitle(title)
    figure.savefig(path)
    return True


def _scores_figure(path: str, scores: list[dict[str, Any]]) -> None:
    """The task score before training and after every iteration, with the 95% interval of each mean when the
    per-prompt rewards are recorded (reward functions in TRL's shape)."""
    latest = {record["label"]: record for record in scores if "label" in record}  # a resumed run may score again
    labels = _labels(latest)
    figure = _figure_class()(figsize=(7, 4), dpi=110, layout="constrained")
    ax = figure.subplots()
    values = [latest[label]["score"] for label in labels]
    halves = []
    for label in labels:
        kept = [v for v in latest[label].get("per_prompt") or [] if v == v]
        if len(kept) < 2:
            halves.append(0.0)
            continue
        mean = sum(kept) / len(kept)
        variance = sum((v - mean) ** 2 for v in kept) / (len(kept) - 1)
        halves.append(t_quantile(len(kept) - 1) * (variance / len(kept)) ** 0.5)
    if any(halves):
        ax.errorbar(range(len(labels)), values, yerr=halves, marker="o", capsize=4, label="mean, 95% interval")
        ax.legend(loc="best", fontsize=8)
    else:
        ax.plot(range(len(labels)), values, marker="o")
    ax.set_xticks(range(len(labels)), [_label_text(label) for label in labels])
    ax.set_xlabel("greedy responses to the held-out prompts")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.set_title("Task score: did self-play help?")
    figure.savefig(path)


# ---- markdown ------------------------------------------------------------------------------------------------------


def _cell(text: Any) -> str:
    """Escape a value for a markdown table cell: pipes, markup characters and newlines (as `<br>`)."""
    text = str(text)
    if not text.strip():
        return "*(empty)*"
    for char in "\\|*_`<>[]~&":
        text = text.replace(char, "\\" + char)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>").replace("\t", " ")


def _generations_markdown(iterations: dict[int, tuple[list[dict], dict]], num_examples: int) -> str:
    by_iteration = {t: {row["index"]: row for row in rows} for t, (rows, _) in iterations.items()}
    first = next(iter(by_iteration.values()))
    meta = next(iter(iterations.values()))[1]
    parts = ["# Generations across self-play iterations", ""]
    if meta:
        sampling = ", ".join(f"{k}={v}" for k, v in meta.get("sampling", {}).items() if v not in ({}, None))
        parts += [f"Objective `{meta.get('objective', '?')}`; sampling: {sampling}.", ""]
    for index in sorted(first)[:num_examples]:
        row = first[index]
        parts += [f"## Example {index}", "", "| | response |", "|---|---|"]
        parts += [f"| prompt | {_cell(row['prompt'])} |", f"| real | {_cell(row['real'])} |"]
        proto = next((rows[index]["proto"] for rows in by_iteration.values() if "proto" in rows.get(index, {})), None)
        if proto is not None:
            parts.append(f"| proto (initial policy) | {_cell(proto)} |")
        parts += ["", "| iteration | synthetic response |", "|---|---|"]
        for t, rows in by_iteration.items():
            if index in rows:
                parts.append(f"| iteration {t} | {_cell(rows[index].get('synthetic', ''))} |")
        parts.append("")
    return "\n".join(parts)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _lookup(record: dict[str, Any], key: str) -> Any:
    if key.startswith("means."):
        return record.get("means", {}).get(key.removeprefix("means."))
    return record.get(key)


def _is_heldout(key: str) -> bool:
    return key.startswith(("heldout_", "likelihood_inversion"))


def _columns(records: dict[int, dict[str, Any]], start: dict[str, Any], has_scores: bool) -> list[tuple[str, str]]:
    """The table's `(key, name)` columns that have a value: settings only when they change between iterations, the
    held-out evidence of every evaluation set (a set other than `eval` under its own suffix), then the score (key
    `SCORE`), then the means over the training steps and the alarms."""
    rows = [*records.values(), start]
    present = sorted({key for row in rows for key in row})
    columns = []
    for key, name in TABLE_COLUMNS:
        found = [(key, name)]
        if _is_heldout(key):  # `<key>_<set>` for the evaluation set `eval_<set>`
            found += [(k, f"{name} [{k.removeprefix(key + '_')}]") for k in present if k.startswith(key + "_")]
        for column_key, column_name in found:
            if not any(_lookup(row, column_key) is not None for row in rows):
                continue
            if column_key in SETTING_COLUMNS and len({_format(r.get(column_key)) for r in records.values()}) <= 1:
                continue
            columns.append((column_key, column_name))
    if has_scores:  # after the settings and the held-out evidence
        before = [i + 1 for i, (key, _) in enumerate(columns) if key in SETTING_COLUMNS or key.startswith("prompts_")]
        before += [i + 1 for i, (key, _) in enumerate(columns) if _is_heldout(key)]
        columns.insert(max(before, default=0), (SCORE, "score"))
    return columns


def _start_values(folder: RunFolder) -> dict[str, Any]:
    """The held-out evidence before training (`heldout.jsonl`), keyed as the per-iteration records key it."""
    values: dict[str, Any] = {}
    for record in folder.heldout():
        if record.get("label") == "start" and isinstance(record.get("dataset"), str):
            name = record["dataset"]
            suffix = "" if name == "eval" else f"_{name.removeprefix('eval_')}"
            values.update({f"{key}{suffix}": value for key, value in (record.get("measures") or {}).items()})
    return values


def _has_results(record: dict[str, Any]) -> bool:
    """Whether an iteration's record holds results, not only the settings it started with."""
    return "means" in record or any(_is_heldout(key) for key in record)


def _iteration_rows(output_dir: str) -> tuple[list[str], list[list[str]], list[bool]]:
    """The per-iteration table as header, rows of formatted cells (a `start` row first when there is held-out evidence
    or a score before training) and whether each row's iteration stopped early. Columns without any value are left
    out, and so are iterations that recorded nothing but the settings they started with."""
    folder = RunFolder(output_dir)
    scores = {record.get("label"): record.get("score") for record in folder.scores()}
    records = {
        t: record
        for t, record in folder.iteration_records().items()
        if _has_results(record) or f"iteration_{t}" in scores
    }
    start = _start_values(folder)
    if "start" in scores:
        start[SCORE] = scores["start"]
    for t, record in records.items():
        if f"iteration_{t}" in scores:
            records[t] = {**record, SCORE: scores[f"iteration_{t}"]}
    columns = _columns(records, start, has_scores=any(SCORE in row for row in (start, *records.values())))
    header = ["iteration", "steps", *(name for _, name in columns)]
    rows, stopped = [], []
    if records and start:
        rows.append(["start", "", *(_format(_lookup(start, key)) for key, _ in columns)])
        stopped.append(False)
    for t, record in records.items():
        steps = f"{record.get('first_step')}-{record.get('last_step')}" if "first_step" in record else ""
        rows.append([str(t), steps, *(_format(_lookup(record, key)) for key, _ in columns)])
        stopped.append(record.get("complete") is False)
    return header, rows, stopped


def iteration_table(output_dir: str) -> str:
    """
    Markdown table of a run's iterations: its settings where they change between iterations (peak learning rate,
    alpha, beta), the prompts kept and skipped by prompt selection, the held-out evidence on the evaluation data after
    each iteration (see `tspin_trl.self_play.inversion`), its score, the means over every training step of each
    iteration and its alarms, from `self_play/iterations.jsonl`, `self_play/heldout.jsonl` and
    `self_play/scores.jsonl`. A first row, `start`, holds the held-out evidence and the score before training.
    `summary.md`, `results.md` and the model card show this table.

    Args:
        output_dir (`str`):
            The run's `output_dir`.

    Returns:
        `str`: the table, or a line saying there is no per-iteration record yet.
    """
    header, rows, stopped = _iteration_rows(output_dir)
    if not rows:
        return NO_RECORDS
    parts = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells, early in zip(rows, stopped):
        cells = [cells[0], cells[1] + (" (stopped early)" if early else ""), *cells[2:]]
        parts.append("| " + " | ".join(cells) + " |")
    return "\n".join(parts) + "\n"


NO_RECORDS = "No per-iteration records (`self_play/iterations.jsonl`) yet.\n"
# The console's short names of `TABLE_COLUMNS`, in the order they are shown; `_CONSOLE_PRIORITY` is the order in
# which they are kept when the terminal is too narrow for all of them.
_CONSOLE_NAMES = {
    "iteration": "iter",
    "steps": "steps",
    "loss": "loss",
    "logps/real": "logp(y)",
    "logps/synthetic": "logp(y')",
    "logps/proto": "logp(y0)",
    "advantage/current": "adv(cur)",
    "advantage/historical": "adv(hist)",
    "current_accuracy": "acc(cur)",
    "disagreement": "disagree",
    "ties": "ties",
    "identical_pairs": "y'=y",
    "saturated_pairs": "saturated",
    "heldout logp(y)/token": "ho:lp/tok",
    "heldout logp(y)-logp(y0)": "ho:y-y0",
    "heldout logp(y')-logp(y0)": "ho:y'-y0",
    "likelihood_inversion": "inversion",
    "learning_rate": "lr",
    "alpha": "alpha",
    "beta": "beta",
    "prompts_kept": "kept",
    "prompts_skipped": "skipped",
    "score": "score",
    "alarms": "alarms",
}
_CONSOLE_PRIORITY = (
    "iteration",
    "steps",
    "heldout logp(y)/token",
    "score",
    "loss",
    "logps/real",
    "logps/synthetic",
    "advantage/current",
    "advantage/historical",
    "alarms",
    "likelihood_inversion",
    "heldout logp(y)-logp(y0)",
    "beta",
    "alpha",
    "learning_rate",
    "prompts_kept",
    "prompts_skipped",
    "current_accuracy",
    "logps/proto",
    "identical_pairs",
    "saturated_pairs",
    "ties",
    "disagreement",
    "heldout logp(y')-logp(y0)",
)
_CONSOLE_LEGEND = {
    "ho:lp/tok": "ho: on the held-out (evaluation) prompts, lp/tok: log-likelihood of the real responses per token, "
    "y-y0 and y'-y0: mean margins of the real and current synthetic responses over the proto ones",
    "logp(y)": "logp(y), logp(y'), logp(y0): summed log-probs of the real, synthetic and proto responses",
    "adv(cur)": "adv(cur) = reward(y) - reward(y'), adv(hist) = reward(y') - reward(y0)",
    "acc(cur)": "acc(cur): share of pairs with adv(cur) > 0",
    "inversion": "inversion: share of evaluation prompts whose own sample is likelier than the real response",
    "alarms": "alarms: the current advantage vanished, or the loss saturated (docs/self_play.md)",
    "y'=y": "y'=y: share of synthetic responses equal to the real one",
    "kept": "kept, skipped: prompts kept and skipped by prompt selection",
    "beta": "beta, alpha, lr: the iteration's loss weights and peak learning rate (shown when they change)",
}


def console_iteration_table(output_dir: str, width: int = 100) -> str:
    """
    The per-iteration table of [`iteration_table`] for a terminal: aligned columns with short names that fit in
    `width` characters, the most telling first (loss, log-probs, advantages, inversion, score, alarms) while room is
    left, and a legend. The training script prints it at the end of a run; `results.md` keeps the full table.

    Args:
        output_dir (`str`):
            The run's `output_dir`.
        width (`int`, *optional*, defaults to `100`):
            The widest line, in characters.

    Returns:
        `str`: the table and its legend, or a line saying there is no per-iteration record yet.
    """
    import textwrap

    header, rows, stopped = _iteration_rows(output_dir)
    if not rows:
        return NO_RECORDS
    names = dict(_CONSOLE_NAMES)
    for name in header:  # the held-out evidence of a named evaluation set: `<name> [<set>]`
        base, _, suffix = name.partition(" [")
        if suffix and base in names:
            names[name] = f"{names[base]}[{suffix}"
    order = list(_CONSOLE_NAMES) + [name for name in header if name not in _CONSOLE_NAMES]
    alarm_names = {"advantage_vanished": "vanished", "advantage_saturated": "saturated"}
    columns: dict[str, list[str]] = {}
    for index, name in enumerate(header):
        if name in alarm_names:
            continue
        cells = [row[index] for row in rows]
        if name == "steps":
            cells = [cell + ("*" if early else "") for cell, early in zip(cells, stopped)]
        columns[name] = cells
    alarms = [
        ",".join(alarm_names[n] for i, n in enumerate(header) if n in alarm_names and row[i] == "True") for row in rows
    ]
    if any(alarms):
        columns["alarms"] = alarms

    def line_width(shown: list[str]) -> int:
        return sum(max(len(names[n]), *(len(c) for c in columns[n])) for n in shown) + 2 * (len(shown) - 1)

    kept: list[str] = []
    for name in [*_CONSOLE_PRIORITY, *(n for n in order if n not in _CONSOLE_PRIORITY)]:
        if name in columns and line_width([*kept, name]) <= width:
            kept.append(name)
    shown = [name for name in order if name in kept]
    widths = [max(len(names[n]), *(len(c) for c in columns[n])) for n in shown]
    lines = ["  ".join(names[n].rjust(w) for n, w in zip(shown, widths))]
    for i in range(len(rows)):
        lines.append("  ".join(columns[n][i].rjust(w) for n, w in zip(shown, widths)))
    shown_names = {names[n] for n in shown}
    legend = [text for key, text in _CONSOLE_LEGEND.items() if key in shown_names]
    if any(stopped):
        legend.append("*: the iteration stopped early")
    hidden = [names.get(n, n) for n in columns if n not in kept]
    if hidden:
        legend.append(f"not shown for width: {', '.join(hidden)}")
    lines += textwrap.wrap("; ".join(legend) + ".", width=width) if legend else []
    return "\n".join(line for line in lines if line) + "\n"


def _summary_markdown(output_dir: str, notes: list[str]) -> str:
    parts = ["# Summary", "", verdict(output_dir), "", "## Per iteration", "", iteration_table(output_dir)]
    parts += [
        "`heldout ...` and `likelihood_inversion`: measured on the evaluation data with the initial policy (`start`) "
        "and after each iteration (docs/self_play.md, diagnostics); `score`: the task score of greedy responses to "
        "held-out prompts. The other columns are means over every training step of the iteration; "
        "`disagreement` and `current_accuracy` count ties (within 1e-3 nats) and identical pairs as neither.",
    ]
    if notes:
        parts += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(parts) + "\n"


def _heldout_figure(path: str, heldout: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """Held-out evidence before training and after every iteration, one line per evaluation set: the log-likelihood of
    the real responses per token, the margins over the proto responses, the likelihood inversion."""
    panels = [
        ("logp(real) per token", [("heldout_logp_real_per_token", "")]),
        (
            "mean margin over proto (nats)",
            [("heldout_margin_real_proto", "real - proto"), ("heldout_margin_synthetic_proto", "synthetic - proto")],
        ),
        ("share with logp(own sample)\n> logp(real)", [("likelihood_inversion", "")]),
    ]
    series = []  # (panel, label, xs, ys)
    labels = _labels({label: None for records in heldout.values() for label in records})
    positions = {label: i for i, label in enumerate(labels)}
    for panel, (_, keys) in enumerate(panels):
        for key, what in keys:
            for name, records in sorted(heldout.items()):
                points = [
                    (positions[label], record["measures"][key])
                    for label, record in sorted(records.items(), key=lambda item: _label_order(item[0]))
                    if isinstance((record.get("measures") or {}).get(key), (int, float))
                ]
                if points:
                    label = " ".join(
                        part for part in (name.removeprefix("eval_") if name != "eval" else "", what) if part
                    )
                    series.append((panel, label or name, [p[0] for p in points], [p[1] for p in points]))
    if not series:
        return False
    used = sorted({panel for panel, *_ in series})
    figure = _figure_class()(figsize=(7, 2.2 + 2.4 * len(used)), dpi=110, layout="constrained")
    axes = figure.subplots(len(used), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, used):
        for _, label, xs, ys in (entry for entry in series if entry[0] == panel):
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_ylabel(panels[panel][0])
        ax.grid(alpha=0.3)
        if panel == 2:
            ax.set_ylim(-0.02, 1.02)
        if panel == 1:
            ax.axhline(0, color="0.7", linewidth=0.8)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xticks(range(len(labels)), [_label_text(label) for label in labels])
    axes[-1].set_xlabel("measured")
    figure.suptitle("Held-out evidence: did self-play help?")
    figure.savefig(path)
    return True


def _label_order(label: str) -> int:
    return -1 if label == "start" else int(label.removeprefix("iteration_"))


def _label_text(label: str) -> str:
    return "before training" if label == "start" else f"after iteration {label.removeprefix('iteration_')}"


# ---- entry points --------------------------------------------------------------------------------------------------


def plot_run(output_dir: str, out_dir: str | None = None, num_examples: int = 5) -> list[str]:
    """
    Draw the self-play diagnostics of a [`TSPINTrainer`] run.

    Args:
        output_dir (`str`):
            The run's `output_dir`, holding `self_play/logs.jsonl` (or a `trainer_state.json`), the
            `self_play/iteration_<t>/train.jsonl` files and optionally `self_play/heldout.jsonl` and
            `self_play/scores.jsonl`.
        out_dir (`str`, *optional*):
            Where to write; defaults to `output_dir/plots`.
        num_examples (`int`, *optional*, defaults to `5`):
            Number of prompts (the first indices) shown in `generations.md`.

    Returns:
        `list[str]`: paths of the written files, among `loglikelihood.png` (log-probs of the real, synthetic and
        proto responses with the iteration boundaries, the paper's Fig. 3), `advantages.png`, `rewards.png` (objectives
        with reference log-probs only, with the disagreement share), `heldout.png` (the held-out evidence before
        training and after every iteration), `scores.png` (the task score, with 95% intervals when per-prompt rewards
        are known), `generations.md` (the paper's Table 5) and `summary.md` (the run's verdict, the per-iteration table
        of [`iteration_table`], and a note for every output skipped because its inputs are absent).

    Raises:
        `FileNotFoundError`: when `output_dir` has no training logs.
        `ImportError`: when matplotlib is not installed.

    Example:

    ```python
    >>> from tspin_trl.plot import plot_run

    >>> plot_run("outputs/tspin-run", num_examples=3)
    ['outputs/tspin-run/plots/loglikelihood.png', ...]
    ```
    """
    records, source = load_logs(output_dir)
    _figure_class()  # fail early, before writing anything, when matplotlib is missing
    out_dir = out_dir or os.path.join(output_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    folder = RunFolder(output_dir)
    iterations = _iteration_files(output_dir)
    lines = _training_lines(records)
    boundaries = _boundaries(lines, folder.iteration_records())
    scores = folder.scores()
    written: list[str] = []
    notes = [f"Logs read from `{source}`."]

    figures = {
        "loglikelihood.png": (
            [("summed log-prob", [(f"logps/{r}", r) for r in _ROLES])],
            "Log-likelihood of the real, synthetic and proto responses",
        ),
        "advantages.png": (
            [
                (
                    "advantage",
                    [
                        ("advantage/current", "current: r(real) - r(synthetic)"),
                        ("advantage/historical", "historical: r(synthetic) - r(proto)"),
                    ],
                ),
                (
                    "accuracy (advantage > 0)",
                    [("advantage/current_accuracy", "current"), ("advantage/historical_accuracy", "historical")],
                ),
            ],
            "Current and historical advantages",
        ),
    }
    objectives = {meta.get("objective") for _, meta in iterations.values()}
    if objectives == {"tspin"}:
        notes.append(
            "Objective `tspin` is reference-free: its rewards are `alpha * logp` (`loglikelihood.png` scaled) and the "
            "reward and log-likelihood orders never disagree, so there is no `rewards.png`."
        )
    else:  # with reference log-probs the rewards tell something the log-likelihoods do not
        figures["rewards.png"] = (
            [
                ("reward", [(f"rewards/{r}", r) for r in _ROLES]),
                ("share of examples", [("rewards/disagreement", "reward order != log-likelihood order")]),
            ],
            "Rewards of the three responses, and where their order disagrees with the log-likelihoods'",
        )
    for name, (panels, title) in figures.items():
        path = os.path.join(out_dir, name)
        if _line_figure(path, lines, boundaries, panels, title):
            written.append(path)
        else:
            notes.append(f"Skipped `{name}`: its metrics are not in the logs.")
    path = os.path.join(out_dir, "heldout.png")
    if _heldout_figure(path, heldout_records_by_label(folder.heldout())):
        written.append(path)
    else:
        notes.append("Skipped `heldout.png`: no held-out evidence (it needs an evaluation dataset).")
    if scores:
        _scores_figure(os.path.join(out_dir, "scores.png"), scores)
        written.append(os.path.join(out_dir, "scores.png"))
    else:
        notes.append("Skipped `scores.png`: no `self_play/scores.jsonl` (no scorer configured).")
    if iterations:
        path = os.path.join(out_dir, "generations.md")
        with open(path, "w") as f:
            f.write(_generations_markdown(iterations, num_examples))
        written.append(path)
    else:
        notes.append("Skipped `generations.md`: no `self_play/iteration_<t>/train.jsonl` files.")
    path = os.path.join(out_dir, "summary.md")
    with open(path, "w") as f:
        f.write(_summary_markdown(output_dir, notes))
    written.append(path)
    return written


def main(argv: Sequence[str] | None = None, prog: str = "tspin-plot") -> None:
    """
    Command line entry point (`tspin-trl plot`, `tspin-plot`, `python -m tspin_trl.plot`): run [`plot_run`] and print
    the written files.

    Args:
        argv (`Sequence[str]`, *optional*):
            Arguments, `OUTPUT_DIR [--out DIR] [--num_examples N]`; defaults to `sys.argv[1:]`. Exits with status 1
            and a message when the directory has no logs or matplotlib is missing.
        prog (`str`, *optional*, defaults to `"tspin-plot"`):
            The command's name in its usage line and messages.
    """
    parser = argparse.ArgumentParser(prog=prog, description="Plot the self-play diagnostics of a T-SPIN run.")
    parser.add_argument("output_dir", help="the output_dir of a TSPINTrainer run")
    parser.add_argument("--out", default=None, help="where to write (default: OUTPUT_DIR/plots)")
    parser.add_argument("--num_examples", type=int, default=5, help="prompts shown in generations.md (default: 5)")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")  # a command line tool needs no display
    except ImportError:
        pass  # plot_run raises the error with the install hint
    try:
        written = plot_run(args.output_dir, args.out, args.num_examples)
    except (FileNotFoundError, ImportError) as error:
        parser.exit(1, f"{prog}: error: {error}\n")
    print("\n".join(written))


if __name__ == "__main__":
    main()
