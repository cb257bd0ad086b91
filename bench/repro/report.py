"""The page: tables and figures from `analysis.summarize`, poured into `template.md`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from string import Template
from typing import Any

from .analysis import summarize
from .runs import METHODS


TEMPLATE = Path(__file__).with_name("template.md")
CLAIM_NAMES = {
    "stability": "1. T-SPIN improves steadily, SPIN oscillates",
    "data_efficiency": "2. T-SPIN on 25% matches SFT on 100%",
    "likelihood_order": "3. T-SPIN keeps logp(real) > logp(synthetic), SPIN inverts it",
    "stabiliser": "4. Which component stabilises T-SPIN",
}


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if mean != mean:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def _point_names(n: int) -> list[str]:
    return ["start"] + [f"it{i}" for i in range(n - 1)]


def curve_table(summary: dict, key: str, digits: int = 3) -> str:
    per = summary["per_method"]
    if not per:
        return "(no runs)"
    n = max(len(v["curves"][key]) for v in per.values())
    lines = ["| row | lr | " + " | ".join(_point_names(n)) + " |", "| --- | --- |" + " --- |" * n]
    for m, v in per.items():
        cells = [_fmt(mu, sd, digits) for mu, sd, _ in v["curves"][key]]
        lines.append(f"| {METHODS[m].label} | {v['lr']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnostics_table(summary: dict) -> str:
    lines = ["| row | iteration | logp(real) | logp(synthetic) | disagreement | ties | saturated | margin median (10% / 90%) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for m, v in summary["per_method"].items():
        if METHODS[m].kind != "selfplay":
            continue
        t = v["train"]
        for i in range(len(t["logps/real"])):
            q = v["train_margins"][i] if i < len(v["train_margins"]) else [float("nan")] * 5
            lines.append(
                f"| {METHODS[m].label} | {i} | {t['logps/real'][i][0]:.2f} | {t['logps/synthetic'][i][0]:.2f} | "
                f"{t['rewards/disagreement'][i][0]:.3f} | {t['rewards/ties'][i][0]:.3f} | "
                f"{t['advantage/saturated'][i][0]:.3f} | {q[2]:.2f} ({q[0]:.2f} / {q[4]:.2f}) |"
            )
    return "\n".join(lines)


def grid_table(summary: dict, setting: dict) -> str:
    grid = summary["grid"]
    lrs = sorted({lr for v in grid.values() for lr in v})
    lines = ["| row | " + " | ".join(f"{lr:g}" for lr in lrs) + " | chosen |", "| --- |" + " --- |" * (len(lrs) + 1)]
    for m in setting["methods"]:
        cells = []
        for lr in lrs:
            v = grid.get(m, {}).get(lr)
            cells.append(f"{v['validation_kl']:.2f} / {v['held_out_kl']:.2f} / {v['held_out_worst']:.2f}" if v else "")
        chosen = summary["chosen"].get(m)
        lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + (f" | {chosen:g} |" if chosen else " | |"))
    return "\n".join(lines)


def grid_reading(summary: dict, setting: dict, warm_kl: float, jump: float = 0.5) -> str:
    """Descriptive (one seed): at each rate, which rows ever went `jump` nats above the warm start's held-out KL."""
    lines = []
    for kind, lrs in (("sft", setting["sft_lrs"]), ("selfplay", setting["selfplay_lrs"])):
        for lr in lrs:
            rows = [m for m in setting["methods"] if METHODS[m].kind == kind and lr in summary["grid"].get(m, {})]
            bad = [m for m in rows if summary["grid"][m][lr]["held_out_worst"] > warm_kl + jump]
            if rows:
                names = ", ".join(METHODS[m].label for m in bad) if bad else "none"
                lines.append(f"- lr {lr:g} ({len(rows)} {kind} rows): {len(bad)} went more than {jump} nats above the "
                             f"warm start at some iteration: {names}.")  # fmt: skip
    return "\n".join(lines)


def warm_table(warm: dict, setting: dict) -> tuple[str, float]:
    """Per epoch: NLL of the real answers on the self-play subset (trained on) and held-out, and the memorisation gap
    corrected for the two splits' different p_data entropies (their prompts have different digit counts)."""
    import statistics

    from .runs import Setting, make_data
    from .task import log_support, prompt_digits

    data = make_data(Setting(**setting))
    entropy = {
        k: statistics.fmean(log_support(len(prompt_digits(r)), setting["replacement"]) for r in data[k])
        for k in ("quarter", "held_out")
    }
    gap = float("nan")
    lines = ["| epoch | train NLL | held-out NLL | memorisation gap | train forward KL | held-out forward KL |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for e in warm["epochs"]:
        tr, ho = -e["train"]["logp_real"], -e["held_out"]["logp_real"]
        gap = (ho - entropy["held_out"]) - (tr - entropy["quarter"])
        lines.append(f"| {e['epoch']} | {tr:.3f} | {ho:.3f} | {gap:+.3f} | {e['train']['forward_kl']:.3f} | "
                     f"{e['held_out']['forward_kl']:.3f} |")  # fmt: skip
    return "\n".join(lines), gap


def mechanism_text(summary: dict) -> str:
    """Saturation and margins of the self-play rows at their chosen rates (numbers only)."""
    parts = []
    for m, v in summary["per_method"].items():
        if METHODS[m].kind != "selfplay":
            continue
        saturated = max(c[0] for c in v["train"]["advantage/saturated"])
        medians = [q[2] for q in v["train_margins"]]
        parts.append(f"{METHODS[m].label}: at most {saturated:.3f} of the pairs saturated in any iteration, median "
                     f"scaled margin {min(medians):+.2f} to {max(medians):+.2f}")  # fmt: skip
    return "; ".join(parts) + "."


def plot(summary: dict, figures: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"kl": "reproduction_kl.png", "margins": "reproduction_margins.png"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for m, v in summary["per_method"].items():
        style = "--" if METHODS[m].kind == "sft" else "-"
        for ax, key in zip(axes, ("forward_kl", "validity", "inversion")):
            means = [c[0] for c in v["curves"][key]]
            stds = [c[1] for c in v["curves"][key]]
            xs = range(len(means))
            ax.errorbar(xs, means, yerr=stds, linestyle=style, marker="o", markersize=3, capsize=2,
                        label=f"{METHODS[m].label} (lr {v['lr']:g})")  # fmt: skip
            ax.set_title({"forward_kl": "held-out forward KL (nats)", "validity": "validity",
                          "inversion": "held-out likelihood inversion"}[key])  # fmt: skip
            ax.set_xlabel("point (0 = warm start, k = after iteration k-1)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / names["kl"], dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m, v in summary["per_method"].items():
        if METHODS[m].kind != "selfplay":
            continue
        axes[0].plot([q[2] for q in v["train_margins"]], marker="o", label=METHODS[m].label)
        axes[1].plot([c[0] for c in v["train"]["advantage/saturated"]], marker="o", label=METHODS[m].label)
    axes[0].set_title("median scaled current advantage (training pairs)")
    axes[1].set_title("share of saturated pairs (scaled advantage > 10)")
    for ax in axes:
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / names["margins"], dpi=110)
    plt.close(fig)
    return names


def chosen_text(summary: dict, setting: dict) -> str:
    """The chosen rates, flagging a choice at an edge of its grid (a better rate may lie outside it)."""
    parts = []
    for m, lr in summary["chosen"].items():
        grid = setting["sft_lrs"] if METHODS[m].kind == "sft" else setting["selfplay_lrs"]
        edge = " (lowest of its grid)" if lr == min(grid) and len(grid) > 1 else ""
        edge = " (highest of its grid)" if lr == max(grid) and len(grid) > 1 else edge
        parts.append(f"{METHODS[m].label} {lr:g}{edge}")
    text = ", ".join(parts) + "."
    if any("lowest" in p for p in parts):
        text += (" A choice at the lowest rate of its grid means the smallest step tried was the best: lower rates were"
                 " not tried, and could only move that row less far from the warm start.")  # fmt: skip
    return text


def _reading(summary: dict) -> str:
    """One paragraph of numbers: where each row ends, its best point, its largest rise (no interpretation)."""
    lines = []
    for m, v in summary["per_method"].items():
        kl = [c[0] for c in v["curves"]["forward_kl"]]
        t = v["trajectory"]
        lines.append(f"- {METHODS[m].label} (lr {v['lr']:g}): KL {kl[0]:.3f} -> {kl[-1]:.3f} (best {min(kl[1:]):.3f}; "
                     f"largest rise between iterations {max(t['steps']):+.3f}; validity "
                     f"{v['curves']['validity'][0][0]:.3f} -> {v['curves']['validity'][-1][0]:.3f})")  # fmt: skip
    return "Where each row goes (held-out, mean over seeds):\n\n" + "\n".join(lines)


def render(results: dict[str, Any], doc_path: Path, figures: Path) -> None:
    """Write `reproduction_results.json`, the figures and the page."""
    figures.mkdir(parents=True, exist_ok=True)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    results["summary"] = {k: summary[k] for k in ("chosen", "claims")}
    json_path = figures / "reproduction_results.json"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    names = plot(summary, figures)
    rel = os.path.relpath(figures, doc_path.parent)
    setting, meta, warm = results["setting"], results["meta"], results["warm_start"]
    claims = summary["claims"]
    notes = {}
    if "stabiliser" in claims and claims.get("stability", {}).get("verdict") != "shown":
        notes["stabiliser"] = (" T-SPIN alpha 1 is not shown to be more stable than SPIN here (claim 1), so there is no"
                               " stabilisation to attribute at these rates; see the equal-rate lines under the grid"
                               " (one seed).")  # fmt: skip
    verdicts = "\n".join(
        f"| {CLAIM_NAMES[k]} | **{c['verdict']}** | {c['why']}{notes.get(k, '')} |" for k, c in claims.items()
    )
    load = meta.get("load_average")
    warm_rows, warm_gap = warm_table(warm, setting)
    values = {
        "command": meta["command"],
        "date": meta["date"],
        "machine": meta["machine"],
        "python": meta["python"],
        "versions": ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "wall_min": f"{meta['wall_s'] / 60:.0f}",
        "cpu_min": f"{meta.get('cpu_s', float('nan')) / 60:.0f}",
        "rendered_note": (
            f" Page re-drawn from that run's JSON by `{meta['rendered_with']}` (prose and tables only; rules unchanged)."
            if meta.get("rendered_with")
            else ""
        ),
        "load_note": f"; load average {load[0]:.1f} / {load[1]:.1f} at start / end on a shared machine"
        if load
        else "",
        "json_name": json_path.name,
        "json_rel": f"{rel}/{json_path.name}",
        "verdicts": verdicts,
        "grid_seed": setting["seeds"][0],
        "chosen_text": chosen_text(summary, setting),
        "reading": _reading(summary),
        "digits_text": f"{setting['min_digits']} to {setting['max_digits']}",
        "answer_text": (
            "n digits drawn uniformly, with replacement, from the n prompt digits"
            if setting["replacement"]
            else "a uniformly random permutation of them"
        ),
        "pdata_text": "n^-n on the n^n such answers" if setting["replacement"] else "1/n! on the n! permutations",
        "next_token_text": "uniform over the n prompt digits at every step"
        if setting["replacement"]
        else "uniform over the digits not used yet",
        "paths": setting["eval_paths"],
        "samples": setting["eval_samples"],
        "pool": setting["pool"],
        "quarter": setting["pool"] // 4,
        "held_out": setting["held_out"],
        "validation": setting["validation"],
        "params": f"{warm['params']:,}",
        "warm_epochs": setting["warm_epochs"],
        "warm_lr": f"{setting['warm_lr']:g}",
        "iterations": setting["iterations"],
        "batch_size": setting["batch_size"],
        "temperature": setting["temperature"],
        "rows_text": ", ".join(METHODS[m].label for m in setting["methods"]),
        "sft_grid": ", ".join(f"{lr:g}" for lr in setting["sft_lrs"]),
        "selfplay_grid": ", ".join(f"{lr:g}" for lr in setting["selfplay_lrs"]),
        "seeds_text": ", ".join(str(s) for s in setting["seeds"]),
        "num_seeds": len(setting["seeds"]),
        "kl_floor": "0.02",
        "kl_table": curve_table(summary, "forward_kl"),
        "validity_table": curve_table(summary, "validity"),
        "inversion_table": curve_table(summary, "inversion", 2),
        "diagnostics_table": diagnostics_table(summary),
        "fig_kl": f"{rel}/{names['kl']}",
        "fig_margins": f"{rel}/{names['margins']}",
        "warm_table": warm_rows,
        "warm_gap": f"{warm_gap:.2f}",
        "mechanism": mechanism_text(summary),
        "warm_margins": " / ".join(f"{q:.2f}" for q in warm["quarter"]["margin_quantiles"]),
        "warm_validity": f"{warm['held_out']['validity']:.3f}",
        "warm_kl": f"{warm['held_out']['forward_kl']:.3f}",
        "warm_val_kl": f"{warm['validation']['forward_kl']:.3f}",
        "grid_table": grid_table(summary, setting),
        "grid_reading": grid_reading(summary, setting, warm["held_out"]["forward_kl"]),
    }
    doc_path.write_text(Template(TEMPLATE.read_text()).substitute(values))
