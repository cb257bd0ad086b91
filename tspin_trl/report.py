"""The run's verdict, computed from its records: did self-play help, and what to try next.

A few sentences that open `results.md`, the model card and `plots/summary.md`: what changed on held-out data from the
start to each iteration (the log-likelihood of the real responses per token and the likelihood inversion, from
`self_play/heldout.jsonl`; the task score, from `self_play/scores.jsonl`), whether the current advantage vanished or
saturated and what that means (`self_play/iterations.jsonl`), and what to try next. Every number is computed here from
those records. A change is "up" or "down" only when its 95% interval (paired over the same held-out prompts, Student's
t) excludes zero; otherwise it is called inconclusive.

`write_results` writes `output_dir/results.md`: the verdict, the per-iteration table (which `tspin_trl.plot` builds)
and the run's files.
"""

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checked_io import atomic_write
from .run_folder import RunFolder


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96)
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(degrees_of_freedom: int) -> float:
    """The two-sided 95% quantile of Student's t."""
    return _T95[degrees_of_freedom - 1] if degrees_of_freedom <= len(_T95) else 1.96


def paired_change(before: Sequence[float], after: Sequence[float]) -> tuple[float, float, float] | None:
    """
    The mean change from `before` to `after` over the same items, with its 95% interval: `(mean, low, high)`. Pairs
    with a missing (NaN) value are left out; `None` with fewer than two pairs.

    Example:

    ```python
    >>> [round(value, 2) for value in paired_change([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])]
    [2.0, -0.48, 4.48]
    ```
    """
    changes = [a - b for b, a in zip(before, after, strict=True) if not (math.isnan(a) or math.isnan(b))]
    n = len(changes)
    if n < 2:
        return None
    mean = sum(changes) / n
    half = t_quantile(n - 1) * math.sqrt(sum((c - mean) ** 2 for c in changes) / (n - 1) / n)
    return mean, mean - half, mean + half


def ratio_change(
    before: Sequence[float], after: Sequence[float], weights: Sequence[float]
) -> tuple[float, float, float] | None:
    """
    The change of a ratio of sums (a log-likelihood per token: summed log-probs over scored tokens) from `before` to
    `after` over the same items, `sum(after - before) / sum(weights)`, with its 95% interval from the ratio
    estimator's standard error: `(change, low, high)`; `None` with fewer than two items.
    """
    n = len(weights)
    total = sum(weights)
    if n < 2 or total <= 0:
        return None
    changes = [a - b for b, a in zip(before, after, strict=True)]
    ratio = sum(changes) / total
    residuals = [c - ratio * w for c, w in zip(changes, weights, strict=True)]
    half = t_quantile(n - 1) * math.sqrt(sum(r * r for r in residuals) / (n - 1) / n) / (total / n)
    return ratio, ratio - half, ratio + half


def heldout_records_by_label(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """`{dataset: {label: record}}` from the lines of `heldout.jsonl` (a label measured again, after a resume, keeps
    its last line)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        if isinstance(record.get("label"), str) and isinstance(record.get("dataset"), str):
            found.setdefault(record["dataset"], {})[record["label"]] = record
    return found


def _number(value: float) -> str:
    return f"{value:.3g}"


def _signed(value: float) -> str:
    return f"{value:+.3g}"


def _interval(change: tuple[float, float, float]) -> str:
    return f"{_signed(change[0])} (95% interval {_signed(change[1])} to {_signed(change[2])})"


def direction(change: tuple[float, float, float] | None) -> str:
    """`"up"` or `"down"` when the 95% interval excludes zero, else `"inconclusive"` (also without an interval)."""
    if change is None:
        return "inconclusive"
    if change[1] > 0:
        return "up"
    if change[2] < 0:
        return "down"
    return "inconclusive"


def _labels(records: dict[str, dict[str, Any]]) -> list[str]:
    """`"start"`, then `"iteration_<t>"` in iteration order, of the labels present."""
    iterations = sorted(int(label.split("_")[1]) for label in records if label.startswith("iteration_"))
    return (["start"] if "start" in records else []) + [f"iteration_{t}" for t in iterations]


def _iterations_text(iterations: Sequence[int]) -> str:
    names = [str(t) for t in iterations]
    return f"iteration {names[0]}" if len(names) == 1 else f"iterations {', '.join(names[:-1])} and {names[-1]}"


def _heldout_sentences(heldout: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], dict[str, Any]]:
    """The sentences about the first evaluation set's held-out log-likelihood and inversion, and what they found."""
    name = "eval" if "eval" in heldout else sorted(heldout)[0]
    records = heldout[name]
    labels = _labels(records)
    found: dict[str, Any] = {}
    if "start" not in records or len(labels) < 2:
        return [], found
    start = records["start"]
    tokens = start["real_tokens"]
    shown = f"`{name}`" if name == "eval" else f"`{name.removeprefix('eval_')}`"
    per_step, overall = [], None
    previous = start
    for label in labels[1:]:
        record = records[label]
        if len(record["real_tokens"]) != len(tokens):
            continue
        step = ratio_change(previous["logps"]["real"], record["logps"]["real"], tokens)
        per_step.append((label, step))
        overall = ratio_change(start["logps"]["real"], record["logps"]["real"], tokens)
        previous = record
    if overall is None:
        return [], found
    last = labels[-1]
    before = start["measures"]["heldout_logp_real_per_token"]
    after = records[last]["measures"]["heldout_logp_real_per_token"]
    found["overall"], found["last_step"] = direction(overall), direction(per_step[-1][1]) if per_step else None
    found["last_iteration"] = int(last.split("_")[1])
    verbs = {"up": "rose", "down": "fell", "inconclusive": "changed"}
    verb = verbs[found["overall"]]
    sentence = (
        f"On {len(tokens)} held-out prompts ({shown}), the log-likelihood of the real responses {verb} from "
        f"{_number(before)} nats per token before training to {_number(after)} after iteration "
        f"{found['last_iteration']}: {_interval(overall)}"
        + (", within noise, so inconclusive" if found["overall"] == "inconclusive" else "")
        + "."
    )
    if len(per_step) > 1:
        steps = "; ".join(
            f"{'iteration ' + label.split('_')[1]} {_signed(change[0]) if change else '?'} ({direction(change)})"
            for label, change in per_step
        )
        sentence += f" Per iteration: {steps}."
    sentences = [sentence]
    inversion_before = start["measures"].get("likelihood_inversion")
    inversion_after = records[last]["measures"].get("likelihood_inversion")
    if inversion_before is not None and inversion_after is not None:
        sentences.append(
            f"The policy found its own sample likelier than the real response on {100 * inversion_after:.0f}% of "
            f"these prompts after iteration {found['last_iteration']} ({100 * inversion_before:.0f}% before training)"
            + (
                ": it has come to prefer its own outputs, SPIN's failure the paper describes."
                if inversion_after > 0.5 and inversion_after > inversion_before
                else "."
            )
        )
    return sentences, found


def _score_sentences(scores: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The sentence about the task score from before training to each iteration, and what it found."""
    latest = {record["label"]: record for record in scores if isinstance(record.get("label"), str)}
    labels = _labels(latest)
    found: dict[str, Any] = {}
    if "start" not in latest or len(labels) < 2:
        return [], found
    values = [latest[label].get("score", float("nan")) for label in labels]
    path = ", ".join(
        f"{_number(value)} after iteration {label.split('_')[1]}" for label, value in zip(labels[1:], values[1:])
    )
    size = len(latest["start"].get("responses", []))
    sentence = (
        f"The task score of greedy responses to {size} held-out prompts went from {_number(values[0])} before "
        f"training to {path}"
    )
    first, last = latest["start"], latest[labels[-1]]
    if "per_prompt" in first and "per_prompt" in last and len(first["per_prompt"]) == len(last["per_prompt"]):
        change = paired_change(first["per_prompt"], last["per_prompt"])
        found["overall"] = direction(change)
        if change is None:
            sentence += " (too few prompts for an interval)."
        elif change == (0.0, 0.0, 0.0):
            sentence += ": no prompt's reward changed."
        else:
            word = {"up": "up", "down": "down", "inconclusive": "inconclusive, within noise"}[found["overall"]]
            sentence += f": {_interval(change)} from the start, {word}."
        if len(labels) > 2:
            previous = latest[labels[-2]]
            if "per_prompt" in previous and len(previous["per_prompt"]) == len(last["per_prompt"]):
                found["last_step"] = direction(paired_change(previous["per_prompt"], last["per_prompt"]))
    else:
        found["overall"] = "unknown"
        sentence += (
            " (the scorer returns one number per evaluation, so there is no interval and no telling this change from "
            "noise; reward functions in TRL's `reward_funcs` shape give one)."
        )
    return [sentence], found


def _alarm_sentences(records: dict[int, dict[str, Any]], saturation_threshold: float | None) -> tuple[list[str], dict]:
    vanished = [t for t, record in records.items() if record.get("advantage_vanished")]
    saturated = [t for t, record in records.items() if record.get("advantage_saturated")]
    stopped = [t for t, record in records.items() if record.get("complete") is False]
    sentences = []
    if vanished:
        sentences.append(
            f"The current advantage vanished in {_iterations_text(vanished)}: the model found its own samples about as "
            "likely as the real responses, so there was little left to learn from them."
        )
    if saturated:
        threshold = f" ({_number(saturation_threshold)})" if saturation_threshold is not None else ""
        sentences.append(
            f"The loss saturated in {_iterations_text(saturated)}: most pairs already had a scaled advantage above "
            f"`saturation_threshold`{threshold}, where the loss teaches almost nothing, so a few pairs drove training."
        )
    if not vanished and not saturated and any("advantage_vanished" in record for record in records.values()):
        sentences.append("The current advantage neither vanished nor saturated in any iteration.")
    if stopped:
        sentences.append(f"Training stopped early in {_iterations_text(stopped)} (`max_steps`).")
    return sentences, {"vanished": vanished, "saturated": saturated}


def _next_step(heldout: dict[str, Any], score: dict[str, Any], alarms: dict[str, list[int]], has_eval: bool) -> str:
    """What to try next, from what the run found (held-out evidence first, then the score, then the alarms)."""
    advice = []
    overall = heldout.get("overall") or score.get("overall")
    last_step = heldout.get("last_step") or score.get("last_step")
    if "down" in (heldout.get("overall"), score.get("overall")):
        advice.append(
            "held-out evidence got worse, so try a lower `learning_rate` or fewer `epochs_per_iteration` (and check the "
            "per-iteration table for where it turned)"
        )
    elif overall == "up" and last_step in ("up", None):
        advice.append("the last iteration still improved, so more iterations (`num_iterations`) may help")
    elif overall == "up":
        advice.append(
            "the gains stopped before the last iteration, so more iterations are unlikely to help; more annotated data "
            "or a larger model would"
        )
    elif overall in ("inconclusive", "unknown"):
        advice.append(
            "nothing moved beyond noise, so try a higher `learning_rate`, more `epochs_per_iteration`, more data, or a "
            "larger evaluation set for tighter intervals"
        )
    if alarms["saturated"]:
        advice.append(
            "for the saturation, a lower `alpha`, shorter responses (`max_completion_length`) or a lower `temperature`"
        )
    if alarms["vanished"]:
        advice.append("for the vanished advantage, stop here or add annotated data")
    if not has_eval:
        advice.append(
            "give an evaluation set (`eval_dataset`, `--eval_dataset_name`) to measure held-out evidence after every "
            "iteration"
        )
    if not advice:
        return ""
    text = "; ".join(advice)
    return f"Next: {text[0].lower()}{text[1:]}."


def verdict(output_dir: str, saturation_threshold: float | None = None) -> str:
    """
    A few sentences on a run, computed from its records under `output_dir/self_play/`: what changed on held-out data
    from the start to each iteration, whether the advantage vanished or saturated, and what to try next.

    Args:
        output_dir (`str`):
            The run's `output_dir`.
        saturation_threshold (`float`, *optional*):
            The run's `saturation_threshold`, named in the saturation sentence.

    Returns:
        `str`: the sentences (a paragraph), or a line saying there is nothing to judge yet.
    """
    folder = RunFolder(output_dir)
    records = {t: r for t, r in folder.iteration_records().items() if _has_results(r)}
    heldout = heldout_records_by_label(folder.heldout())
    if not records:
        return "No self-play iteration has finished yet: nothing to judge."
    sentences, heldout_found = _heldout_sentences(heldout) if heldout else ([], {})
    score_sentences, score_found = _score_sentences(folder.scores())
    sentences += score_sentences
    if not heldout:
        sentences.insert(0, "There is no held-out evidence: the run had no evaluation set.")
    alarm_sentences, alarms = _alarm_sentences(records, saturation_threshold)
    sentences += alarm_sentences
    advice = _next_step(heldout_found, score_found, alarms, bool(heldout))
    return " ".join(sentences + ([advice] if advice else []))


def _has_results(record: dict[str, Any]) -> bool:
    """Whether an iteration's record holds results (not only the settings it started with)."""
    return "means" in record or any(key.startswith(("heldout_", "likelihood_inversion")) for key in record)


def result_links(output: Path, folder: RunFolder) -> str:
    """The list of a run's files that `results.md` points to: only those that exist (no scores without a scorer)."""
    entries = [(output / "README.md", f"- model and model card: {output} (README.md)")]
    entries.append((Path(folder.root), f"- per-iteration generations: {folder.root}/iteration_*/train.jsonl"))
    entries.append((Path(folder.iterations_path), f"- per-iteration records: {folder.iterations_path}"))
    entries.append((Path(folder.heldout_path), f"- held-out evidence per prompt: {folder.heldout_path}"))
    entries.append((Path(folder.scores_path), f"- held-out responses and scores: {folder.scores_path}"))
    entries.append((Path(folder.logs_path), f"- training logs: {folder.logs_path} (figures: tspin-trl plot {output})"))
    has_generations = bool(list(Path(folder.root).glob("iteration_*/train.jsonl")))
    return "".join(
        line + "\n"
        for path, line in entries
        if (path.is_dir() and has_generations) or (not path.is_dir() and path.is_file())
    )


def results_markdown(output_dir: str, table: str, saturation_threshold: float | None = None) -> str:
    """`results.md`: the verdict, the per-iteration `table` (`tspin_trl.plot.iteration_table`) and the run's files."""
    links = result_links(Path(output_dir), RunFolder(output_dir))
    return (
        f"# Results\n\n{verdict(output_dir, saturation_threshold)}\n\n## Per iteration\n\n{table}\n## Files\n\n{links}"
    )


def write_results(output_dir: str, table: str, saturation_threshold: float | None = None) -> str:
    """Write `output_dir/results.md` ([`results_markdown`]) and return its path."""
    path = os.path.join(output_dir, "results.md")
    atomic_write(path, results_markdown(output_dir, table, saturation_threshold))
    return path
