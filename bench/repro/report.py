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
    "historical_term": "5. The historical term destabilises T-SPIN at higher rates (equal rates, every seed)",
    "annealing": "6. NeMo annealing (rate 1 -> 0.2x, SPIN's beta 0.1 -> 5.0) helps",
    "selection": "7. Prompt selection before regeneration costs no quality",
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


def grid_table(summary: dict, setting: dict, plan_rows: dict) -> str:
    grid = summary["grid"]
    lrs = sorted({lr for v in grid.values() for lr in v})
    lines = ["| row | " + " | ".join(f"{lr:g}" for lr in lrs) + " | chosen | grid ends because |",
             "| --- |" + " --- |" * (len(lrs) + 2)]  # fmt: skip
    for m in setting["methods"]:
        if m not in grid and m not in plan_rows:
            continue
        cells = []
        for lr in lrs:
            v = grid.get(m, {}).get(lr)
            cells.append(f"{v['validation_kl']:.2f} / {v['held_out_kl']:.2f} / {v['held_out_worst']:.2f}" if v else "")
        chosen = summary["chosen"].get(m)
        status = plan_rows.get(m, {}).get("status", "")
        lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + (f" | {chosen:g}" if chosen else " |")
                     + f" | {status} |")  # fmt: skip
    return "\n".join(lines)


def grid_reading(summary: dict, setting: dict, warm_kl: float, jump: float = 0.5) -> str:
    """Descriptive (one seed): at each rate, which rows ever went `jump` nats above the warm start's held-out KL."""
    lines = []
    for kind in ("sft", "selfplay"):
        rows = [m for m in setting["methods"] if METHODS[m].kind == kind and m in summary["grid"]]
        for lr in sorted({lr for m in rows for lr in summary["grid"][m]}):
            at = [m for m in rows if lr in summary["grid"][m]]
            bad = [m for m in at if summary["grid"][m][lr]["held_out_worst"] > warm_kl + jump]
            names = ", ".join(METHODS[m].label for m in bad) if bad else "none"
            lines.append(f"- lr {lr:g} ({len(at)} {kind} rows): {len(bad)} went more than {jump} nats above the "
                         f"warm start at some iteration: {names}.")  # fmt: skip
    return "\n".join(lines)


def _ms(values: tuple) -> str:
    return _fmt(values[0], values[1]) if values else "n/a"


def equal_table(summary: dict) -> str:
    if not summary["equal"]:
        return "(no equal-rate runs)"
    lines = ["| lr | row | seeds | final | worst | strayed | final - T-SPIN | worst - T-SPIN |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for key, block in summary["equal"].items():
        for m, v in block["rows"].items():
            c = v.get("vs_tspin")
            diff = (f"{c['final']:+.3f} ({c['final_noise']:.3f}) | {c['worst']:+.3f} ({c['worst_noise']:.3f})"
                    if c and c.get("n") else " | ")  # fmt: skip
            lines.append(f"| {key} | {METHODS[m].label} | {v['n']} | {_ms(v['final'])} | {_ms(v['worst'])} | "
                         f"{v['jumped']}/{v['n']} | {diff} |")  # fmt: skip
    return "\n".join(lines)


def beyond_table(summary: dict) -> str:
    if not summary["beyond"]:
        return "(no annealed or prompt-selection rows ran; see above)"
    lines = []
    for m, e in summary["beyond"].items():
        if not e.get("row"):
            lines.append(f"- {METHODS[m].label}: no finished runs.")
            continue
        c = e["compare"]
        base = METHODS[e["compare_with"]].label

        def curve(points):
            return " -> ".join(f"{mu:.3f}" for mu, _, _ in points)

        lines.append(f"- **{METHODS[m].label}** (lr {e['lr']:g}, {c['n']} seeds): {curve(e['kl_curve'])}; "
                     f"{base}: {curve(e['base_kl_curve'])}. Row - {base}: final {c['final']:+.3f} (noise "
                     f"{c['final_noise']:.3f}), worst {c['worst']:+.3f} (noise {c['worst_noise']:.3f}); rises beyond "
                     f"noise: row {_at(e['trajectory']['worse_at']) or 'none'}, {base} "
                     f"{_at(e['base_trajectory']['worse_at']) or 'none'}.")  # fmt: skip
    return "\n".join(lines)


def _at(indices: list[int]) -> str:
    return ", ".join(f"after it{i - 1}" for i in indices)


def selection_table(summary: dict) -> str:
    e = summary["beyond"].get("tspin_select")
    if not e or not e.get("timing"):
        return ""
    t = e["timing"]
    lines = ["Prompt selection side by side with T-SPIN alpha 1 (same rate and seeds, mean over seeds; preparation is "
             "regeneration and reference log-probs, wall seconds on this machine):", "",
             "| iteration | pairs trained (selection / T-SPIN) | preparation s (selection / T-SPIN) | "
             "training s (selection / T-SPIN) |", "| --- | --- | --- | --- |"]  # fmt: skip
    for i in range(min(len(t["row"]["train_s"]), len(t["base"]["train_s"]))):
        lines.append(f"| {i} | {t['row']['trained_pairs'][i]:.0f} / {t['base']['trained_pairs'][i]:.0f} | "
                     f"{t['row']['prepare_s'][i]:.1f} / {t['base']['prepare_s'][i]:.1f} | "
                     f"{t['row']['train_s'][i]:.1f} / {t['base']['train_s'][i]:.1f} |")  # fmt: skip
    lines.append(f"\nWhole run (evaluation included): {t['row']['wall_s']:.0f} s / {t['base']['wall_s']:.0f} s.")
    return "\n".join(lines)


def improvement_text(summary: dict, warm_kl: float, gpu: bool) -> str:
    """Whether any self-play row ends closer to the target than the warm start; if none, what the setting would need."""
    imp = summary["improvements"]
    best = imp["best"]
    if best is None:
        return ""
    if imp["improved"]:
        cells = "; ".join(f"{METHODS[c['method']].label} at lr {c['lr']:g} ({c['final']:.3f}, {c['n']} seed(s))"
                          for c in imp["improved"])  # fmt: skip
        return f"**Self-play rows that end closer to the target than the warm start ({warm_kl:.3f} nats):** {cells}."
    sft = imp["sft_best"]
    sft_text = ", ".join(f"{METHODS[m].label} {v:.3f}" for m, v in sft.items())
    quarter = sft.get("sft_quarter")
    headroom = (
        f"here the best SFT 25% run ends at {quarter:.3f} against the warm start's {warm_kl:.3f}"
        if quarter is not None
        else "here SFT 25% did not run"
    )
    step = ("" if gpu else " The GPU recipe (below) is the step this workplace can take towards (2): a 40x larger "
            "model on 3.3x the data.")  # fmt: skip
    return (
        f"**No self-play row ends closer to the target than its warm start, at any rate tried** ({imp['cells']} "
        f"row-and-rate cells; the lowest mean final held-out KL, {best['final']:.3f} nats, is "
        f"{METHODS[best['method']].label} at lr {best['lr']:g}, against the warm start's {warm_kl:.3f}; the best "
        f"SFT runs end at {sft_text}). So this setting cannot test the paper's claims of improvement. What it would "
        "need: (1) headroom in the self-play data, i.e. a warm start that SFT on the self-play subset's real answers "
        f"still improves on held-out prompts (the paper's SFT on 50k improves zephyr-7b-sft-full; {headroom}: the "
        "warm start was trained on those answers in every epoch); (2) a model that generalises from one real answer "
        "per prompt instead of fitting it, i.e. more prompts per parameter than this pool gives, and whose own "
        "samples are mostly valid, so that synthetic and real responses differ in what the target cares about, as a "
        f"7B chat model's do.{step}"
    )


def not_run_text(results: dict) -> str:
    lines = []
    for m, why in results.get("not_run", {}).items():
        lines.append(f"- Row **{METHODS[m].label}** (`{m}`) could not run: {why}.")
    skipped = results.get("plan", {}).get("skipped", [])
    for s in skipped:
        lines.append(f"- {METHODS[s['method']].label} lr {s['lr']:g} seed {s['seed']}: {s['why']}.")
    for f in results.get("failures", []):
        last = f["error"].strip().splitlines()[-1] if f["error"].strip() else "?"
        lines.append(f"- {METHODS[f['method']].label} lr {f['lr']:g} seed {f['seed']} failed: `{last}`.")
    if not lines:
        return "Every planned run ran."
    return "**Runs not made** (their verdicts use what ran, or say not run):\n\n" + "\n".join(lines)


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


def chosen_text(summary: dict, plan_rows: dict) -> str:
    """The chosen rates, each with the reason its grid ended there (interior, a limit, the flat rule, the deadline)."""
    parts = []
    for m, lr in summary["chosen"].items():
        status = plan_rows.get(m, {}).get("status") or "grid from before the planner"
        rates = ", ".join(f"{r:g}" for r in summary["grid_rates"].get(m, []))
        parts.append(f"{METHODS[m].label} **{lr:g}** (of {rates}: {status})")
    return "; ".join(parts) + "."


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
    from .runs import Method, Setting, schedules

    figures.mkdir(parents=True, exist_ok=True)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    results["setting"] = Setting(**results["setting"]).to_dict()  # a page from an older run: today's defaults
    summary = summarize(results)
    results["summary"] = {k: summary[k] for k in ("chosen", "claims", "improvements")}
    json_path = figures / "reproduction_results.json"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    names = plot(summary, figures)
    rel = os.path.relpath(figures, doc_path.parent)
    setting, meta, warm = results["setting"], results["meta"], results["warm_start"]
    plan_rows = results.get("plan", {}).get("rows", {})
    claims = summary["claims"]
    for key, rows in (("annealing", ("spin_anneal", "tspin_anneal")), ("selection", ("tspin_select",))):
        missing = {m: why for m, why in results.get("not_run", {}).items() if m in rows}
        if key not in claims and missing:
            claims[key] = {"verdict": "not run", "why": "; ".join(f"{METHODS[m].label}: {why}"
                                                                 for m, why in missing.items()) + "."}  # fmt: skip
    notes = {}
    if "stabiliser" in claims and claims.get("stability", {}).get("verdict") != "shown":
        notes["stabiliser"] = (" T-SPIN alpha 1 is not shown to be more stable than SPIN here (claim 1), so there is no"
                               " stabilisation to attribute at the chosen rates; see question 5 for equal rates.")  # fmt: skip
    verdicts = "\n".join(
        f"| {CLAIM_NAMES[k]} | **{c['verdict']}** | {c['why']}{notes.get(k, '')} |" for k, c in claims.items()
    )
    load = meta.get("load_average")
    warm_rows, warm_gap = warm_table(warm, setting)
    full = Setting(**setting)
    nemo = schedules(Method("x", "x", "selfplay", "quarter", schedule="nemo"), full)
    jobs = meta.get("jobs", 1)
    jobs_note = "one run at a time" if jobs == 1 else f"{jobs} runs at once"
    if meta.get("deadline_min"):
        jobs_note += f", deadline {meta['deadline_min']:g} min for starting runs"
    shape = setting["tiny_shape"]
    equal = setting["equal_lrs"]
    values = {
        "command": meta["command"],
        "date": meta["date"],
        "machine": meta["machine"],
        "python": meta["python"],
        "versions": ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "wall_min": f"{meta['wall_s'] / 60:.0f}",
        "cpu_min": f"{meta.get('cpu_s', float('nan')) / 60:.0f}",
        "jobs_note": jobs_note,
        "rendered_note": (
            f" Page re-drawn from that run's JSON by `{meta['rendered_with']}` (prose and tables only; rules unchanged)."
            if meta.get("rendered_with")
            else ""
        ),
        "load_note": f"; load average {load[0]:.1f} / {load[1]:.1f} at start / end" if load else "",
        "json_name": json_path.name,
        "json_rel": f"{rel}/{json_path.name}",
        "verdicts": verdicts,
        "improvement_text": improvement_text(summary, warm["held_out"]["forward_kl"], meta["mode"].startswith("gpu")),
        "not_run_text": not_run_text(results),
        "grid_seed": setting["seeds"][0],
        "chosen_text": chosen_text(summary, plan_rows),
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
        "shape": f"hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
        f"{shape['num_attention_heads']} heads, MLP {shape['intermediate_size']}",
        "warm_epochs": setting["warm_epochs"],
        "warm_lr": f"{setting['warm_lr']:g}",
        "iterations": setting["iterations"],
        "batch_size": setting["batch_size"],
        "temperature": setting["temperature"],
        "rows_text": ", ".join(METHODS[m].label for m in setting["methods"]),
        "anneal_lr_schedule": str(nemo["learning_rate_schedule"]),
        "anneal_alpha_schedule": str(nemo["alpha_schedule"]),
        "anneal_lr_end": f"{setting['anneal_lr_end']:g}",
        "anneal_lr": f"{setting['anneal_lr']:g}",
        "selection_threshold": f"{setting['selection_threshold']:g}",
        "selection_min_share": f"{setting['selection_min_share']:g}",
        "sft_grid": ", ".join(f"{lr:g}" for lr in setting["sft_lrs"]),
        "selfplay_grid": ", ".join(f"{lr:g}" for lr in setting["selfplay_lrs"]),
        "extend_down": setting["extend_down"],
        "extend_up": setting["extend_up"],
        "seeds_text": ", ".join(str(s) for s in setting["seeds"]),
        "equal_rows_text": ", ".join(METHODS[m].label for m in setting["equal_rows"]),
        "equal_lrs_text": " and ".join(f"{lr:g}" for lr in equal),
        "equal_hi": f"{max(equal):g}",
        "equal_lo": f"{min(equal):g}" if len(equal) > 1 else "no other rate",
        "num_seeds": len(setting["seeds"]),
        "kl_floor": "0.02",
        "kl_table": curve_table(summary, "forward_kl"),
        "validity_table": curve_table(summary, "validity"),
        "inversion_table": curve_table(summary, "inversion", 2),
        "diagnostics_table": diagnostics_table(summary),
        "equal_table": equal_table(summary),
        "beyond_table": beyond_table(summary),
        "selection_table": selection_table(summary),
        "fig_kl": f"{rel}/{names['kl']}",
        "fig_margins": f"{rel}/{names['margins']}",
        "warm_table": warm_rows,
        "warm_gap": f"{warm_gap:.2f}",
        "mechanism": mechanism_text(summary),
        "warm_margins": " / ".join(f"{q:.2f}" for q in warm["quarter"]["margin_quantiles"]),
        "warm_validity": f"{warm['held_out']['validity']:.3f}",
        "warm_kl": f"{warm['held_out']['forward_kl']:.3f}",
        "warm_val_kl": f"{warm['validation']['forward_kl']:.3f}",
        "grid_table": grid_table(summary, setting, plan_rows),
        "grid_reading": grid_reading(summary, setting, warm["held_out"]["forward_kl"]),
        "cpu_run_note": (
            "about 30-35 min on 2 CPU cores"
            if meta["mode"].startswith("gpu")
            else f"{meta['wall_s'] / 60:.0f} min here"
        ),
        "gpu_note": (
            "**This page is the GPU recipe's.**"
            if meta["mode"].startswith("gpu")
            else "Its numbers are not on this page: it runs on the GPU machine, which this run did not use."
        ),
    }
    doc_path.write_text(Template(TEMPLATE.read_text()).substitute(values))
