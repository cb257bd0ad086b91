"""The page: tables and figures from `analysis.summarize`, poured into `template.md`; the results JSON beside them."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from string import Template
from typing import Any

from .analysis import PRECONDITION_NAMES, RULES, summarize
from .plan import rate
from .runs import METHODS, Method, Setting, schedules


TEMPLATE = Path(__file__).with_name("template.md")
FIGURES = {"kl": "reproduction_kl.png", "stray": "reproduction_stray.png"}


def _num(value: float, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _ci(ci, digits: int = 3) -> str:
    if ci is None or any(v is None or v != v for v in ci):
        return "n/a"
    return f"[{_num(ci[0], digits, True)}, {_num(ci[1], digits, True)}]"


def _pm(stat: dict, digits: int = 3) -> str:
    """mean ± half-width of the 95% interval."""
    if stat["n"] == 0:
        return ""
    lo, hi = stat["ci95"]
    if lo != lo:
        return _num(stat["mean"], digits)
    return f"{_num(stat['mean'], digits)} ± {(hi - lo) / 2:.{digits}f}"


def _lr(k) -> str:
    return "n/a" if k is None else f"{rate(k):g}"


def preconditions_table(pre: dict) -> str:
    lines = []
    for name, p in pre.items():
        lines.append(f"| {PRECONDITION_NAMES[name]} (`{name}`) | {'**yes**' if p['holds'] else '**no**'} | "
                     f"{_num(p['estimate'], 3, True)} | {_ci(p['ci95'])} | {p['n_seeds']} | {p['rule']} |")  # fmt: skip
    return "\n".join(lines)


def verdicts_table(verdicts: list[dict]) -> str:
    group = {"paper": "", "fidelity": " *(fidelity arm)*", "beyond": " *(beyond the paper)*"}
    lines = []
    for v in verdicts:
        estimate = _num(v["estimate"], 3, True)
        if v["key"] == "stray" and v.get("counts"):
            t, s = v["counts"]["tspin"], v["counts"]["spin"]
            estimate += f" (T-SPIN {t[0]}/{t[1]}, SPIN {s[0]}/{s[1]} strayed; Fisher p = {_num(v['fisher_p'], 3)})"
        lines.append(f"| {v['claim']}{group[v['group']]} | **{v['verdict']}** | {estimate} | {_ci(v['ci95'])} | "
                     f"{v['n_seeds']} | {v['rule']} |")  # fmt: skip
    return "\n".join(lines)


def curve_table(summary: dict, key: str, digits: int = 3) -> str:
    per = summary["per_row"]
    if not per:
        return "(no runs)"
    n = max(len(v["curves"][key]) for v in per.values())
    lines = ["| row | lr | seeds | " + " | ".join(["start"] + [f"it{i}" for i in range(n - 1)]) + " |",
             "| --- | --- | --- |" + " --- |" * n]  # fmt: skip
    for m, v in per.items():
        cells = [_pm(c, digits) for c in v["curves"][key]]
        lines.append(f"| {METHODS[m].label} | {v['lr']:g} | {len(v['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gap_table(summary: dict) -> str:
    from .analysis import interval, mean

    lines = []
    for m, v in summary["per_row"].items():
        gaps = v.get("train_gap") or []
        if not gaps:
            continue
        n = min(len(g) for g in gaps)
        cells = []
        for t in range(n):
            column = [g[t] for g in gaps]
            lo, hi = interval(column) if len(column) > 1 else (float("nan"), float("nan"))
            cells.append(f"{mean(column):+.2f} [{_num(lo, 2, True)}, {_num(hi, 2, True)}]")
        if not lines:
            lines = ["| row | " + " | ".join(f"it{t}" for t in range(n)) + " |", "| --- |" + " --- |" * n]
        lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) or "(no self-play runs)"


def rise_text(summary: dict) -> str:
    parts = []
    for m, v in summary["per_row"].items():
        stat = v["curves"]["largest_rise"][0]
        parts.append(f"{METHODS[m].label} {_pm(stat)}")
    return "; ".join(parts) + "." if parts else "no runs."


def stray_table(summary: dict) -> str:
    stray = summary["stray"]
    if not stray:
        return "(no runs at the stray rate)"
    lines = [
        "| row | lr | seeds strayed | largest rise per seed | final KL (mean ± 95%) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m, v in stray.items():
        rises = ", ".join(f"{s}: {_num(r, 2)}" for s, r in sorted(v["rises"].items(), key=lambda kv: int(kv[0])))
        lines.append(f"| {METHODS[m].label} | {v['lr']:g} | {v['strayed']}/{v['n']} | {rises} | {_pm(v['final'])} |")
    return "\n".join(lines)


def optimizer_text(summary: dict, verdicts: list[dict]) -> str:
    per = summary["per_row"]
    lines = ["| optimizer | row | lr | seeds | final KL | largest rise |", "| --- | --- | --- | --- | --- | --- |"]
    any_row = False
    for adam, rms in (("spin", "spin_rms"), ("tspin", "tspin_rms")):
        for m, name in ((adam, "AdamW"), (rms, "RMSProp, reset each iteration")):
            if m not in per:
                continue
            any_row = True
            v = per[m]
            lines.append(f"| {name} | {METHODS[m].label} | {v['lr']:g} | {len(v['seeds'])} | "
                         f"{_pm(v['curves']['forward_kl'][-1])} | {_pm(v['curves']['largest_rise'][0])} |")  # fmt: skip
    if not any_row:
        return "(no runs)"
    rms = next((v for v in verdicts if v["key"] == "stable_chosen_rmsprop"), None)
    adam = next((v for v in verdicts if v["key"] == "stable_chosen"), None)
    text = "\n".join(lines)
    if rms and adam:
        text += (f"\n\nThe stability claim under each optimizer (T-SPIN's largest rise minus SPIN's, paired by seed): "
                 f"AdamW {_num(adam['estimate'], 3, True)} {_ci(adam['ci95'])} ({adam['verdict']}, "
                 f"{adam['n_seeds']} seeds); RMSProp {_num(rms['estimate'], 3, True)} {_ci(rms['ci95'])} "
                 f"({rms['verdict']}, {rms['n_seeds']} seeds).")  # fmt: skip
    return text


def selection_text(summary: dict, verdicts: list[dict]) -> str:
    sel = summary["selection"]
    if not sel["n_seeds"]:
        return "Prompt selection did not run (see below)."
    q = next(v for v in verdicts if v["key"] == "selection_quality")
    t = next(v for v in verdicts if v["key"] == "selection_time")
    saved = t["estimate"]
    word = "saved" if saved == saved and saved >= 0 else "cost"
    shares = " / ".join(_num(s, 2) for s in sel["share_trained_per_iteration"])
    return (f"At T-SPIN's chosen rate (lr {sel['lr']:g}), {sel['n_seeds']} seeds. Share of the {sel['prompts']} "
            f"self-play prompts trained on (kept / {sel['prompts']}), mean over seeds per iteration: {shares}; "
            f"{sel['seeds_with_share_below_1']} of {sel['n_seeds']} seeds trained on fewer than all prompts in some "
            f"iteration. Quality: final KL of selection minus T-SPIN, less the margin, "
            f"{_num(q['estimate'], 3, True)} {_ci(q['ci95'])} ({q['verdict']}). Regeneration time, iterations 1 and "
            f"later, CPU seconds of preparation per run: {abs(saved):.2f} s {word} on average "
            f"(T-SPIN minus selection: {_num(saved, 2, True)} {_ci(t['ci95'], 2)}; {t['verdict']}). The trainer "
            "keeps the training set's length, so training time is not saved by design.")  # fmt: skip


def selection_table_md(summary: dict) -> str:
    sel = summary["selection"]
    if not sel["n_seeds"]:
        return ""
    lines = ["| iteration | prompts kept (mean) | skipped (mean) | kept per seed | preparation CPU s (selection / "
             "T-SPIN) |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for t in range(len(sel["mean_kept"])):
        per_seed = ", ".join(f"{s}: {it[t]['kept']}" for s, it in sorted(sel["per_seed"].items(), key=lambda kv: int(kv[0]))
                             if t < len(it))  # fmt: skip
        prep = sel["prepare_cpu_s"]
        lines.append(f"| {t} | {_num(sel['mean_kept'][t], 1)} | {_num(sel['mean_skipped'][t], 1)} | {per_seed} | "
                     f"{_num(prep['selection'][t], 2)} / {_num(prep['tspin'][t], 2)} |")  # fmt: skip
    return "\n".join(lines)


def anneal_table(summary: dict) -> str:
    rows = [v for k, v in summary["beyond"].items() if v["row"] != "tspin_select"]
    if not rows:
        return "(no annealed runs)"
    n = max(len(v["curves"]["forward_kl"]) for v in rows)
    lines = ["| row | lr | " + " | ".join(["start"] + [f"it{i}" for i in range(n - 1)]) + " | largest rise |",
             "| --- | --- |" + " --- |" * (n + 1)]  # fmt: skip
    for v in rows:
        for m, c in ((v["row"], v["curves"]), (v["base"], v["base_curves"])):
            cells = [_pm(x) for x in c["forward_kl"]]
            lines.append(
                f"| {METHODS[m].label} | {v['lr']:g} | " + " | ".join(cells) + f" | {_pm(c['largest_rise'][0])} |"
            )
    return "\n".join(lines)


def anneal_text(verdicts: list[dict]) -> str:
    parts = []
    for v in verdicts:
        if v["key"].startswith(("spin_anneal", "tspin_anneal")):
            parts.append(f"{v['claim']}: {_num(v['estimate'], 3, True)} {_ci(v['ci95'])}, {v['n_seeds']} seeds "
                         f"(**{v['verdict']}**)")  # fmt: skip
    return ("Final held-out KL, annealed row minus its base row at the same rate, paired by seed: " + "; ".join(parts)
            + "." if parts else "(no annealed runs)")  # fmt: skip


def grid_table_md(summary: dict) -> str:
    grid = summary["grid"]
    ks = sorted({k for v in grid.values() for k in v["cells"]}, key=int)
    if not ks:
        return "(no grid)"
    lines = ["| row | " + " | ".join(f"{rate(int(k)):g}" for k in ks) + " | chosen | grid ends because |",
             "| --- |" + " --- |" * (len(ks) + 2)]  # fmt: skip
    for m, v in grid.items():
        cells = []
        for k in ks:
            c = v["cells"].get(k) or v["cells"].get(str(k))
            cells.append(f"{_num(c['validation_kl'], 2)} / {_num(c['held_out_final'], 2)}" if c else "")
        lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + f" | {_lr(v['chosen_k'])} | {v['status']} |")
    return "\n".join(lines)


def warm_table(summary: dict) -> str:
    lines = ["| seed | held-out KL, new rule | held-out KL, old rule | sampled validity, new / old rule | greedy "
             "validity, new rule | current advantage | validation KL | CPU s |", "| --- | --- | --- | --- | --- | --- "
             "| --- | --- |"]  # fmt: skip
    for s, w in summary["warm"].items():
        h = w["held_out"]
        lines.append(f"| {s} | {h['forward_kl']:.3f} | {w['old_rule_kl']:.3f} | {h['validity_sampled']:.3f} / "
                     f"{h['validity_old_rule']:.3f} | {h['validity_greedy']:.3f} | {h['advantage_current']:+.2f} | "
                     f"{w['validation_kl']:.3f} | {w['cpu_s']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def cost_text(summary: dict, meta: dict) -> str:
    cost = summary["cost"]
    parts = [f"{kind}: {c['runs']} runs, {c['cpu_s'] / 60:.1f} CPU min" for kind, c in cost.items()]
    total = sum(c["cpu_s"] for c in cost.values())
    jobs = meta.get("jobs", 1)
    return (f"Process CPU time of the runs (each in one process, {meta.get('threads_per_job') or 'all'} thread(s)): "
            + "; ".join(parts) + f"; {total / 60:.1f} CPU min in all. With {jobs} run(s) at once on idle cores the "
            f"wall time would be about {total / 60 / max(1, jobs):.0f} min plus start-up (runs are CPU-bound and "
            "independent).")  # fmt: skip


def time_text(meta: dict, summary: dict) -> str:
    if meta.get("mode", "").startswith("gpu"):
        return f"Wall time {meta['wall_s'] / 60:.1f} min, {meta.get('jobs')} runs at once."
    load = meta.get("load_average") or [float("nan"), float("nan")]
    total = sum(c["cpu_s"] for c in summary["cost"].values())
    jobs = meta.get("jobs", 1)
    return (f"Wall time {meta['wall_s'] / 60:.0f} min, process CPU time {meta['cpu_s'] / 60:.0f} min (workers "
            f"included), {jobs} runs at once; load average {load[0]:.1f} / {load[1]:.1f} at start / end (other work "
            f"shared the cores). On idle cores the runs' {total / 60:.0f} CPU min would take about "
            f"{total / 60 / max(1, jobs):.0f} min of wall time.")  # fmt: skip


def gpu_sizes() -> str:
    from .settings import setting_for

    g = setting_for("gpu")
    return (
        f"{g.pool} pool prompts ({round(g.pool * g.subset_share)} for self-play), {g.warm_pool} warm-start "
        f"prompts, {g.held_out} held-out and {g.validation} validation prompts, {g.eval_paths} p_data paths and "
        f"{g.eval_samples} samples per held-out prompt, batch {g.batch_size}"
    )


def summary_table(summary: dict) -> str:
    """Per row at its chosen rate: where it starts and ends (mean over its seeds, 95% interval of the end point)."""
    lines = ["| row | lr | seeds | forward KL: start -> end | greedy validity | sampled validity | largest rise |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for m, v in summary["per_row"].items():
        c = v["curves"]
        cells = []
        for key in ("forward_kl", "validity_greedy", "validity_sampled"):
            cells.append(f"{_num(c[key][0]['mean'])} -> {_pm(c[key][-1])}")
        lines.append(f"| {METHODS[m].label} | {v['lr']:g} | {len(v['seeds'])} | " + " | ".join(cells)
                     + f" | {_pm(c['largest_rise'][0])} |")  # fmt: skip
    return "\n".join(lines)


def not_run_text(results: dict) -> str:
    lines = []
    for m, why in results.get("not_run", {}).items():
        lines.append(f"- Row **{METHODS[m].label}** (`{m}`) could not run: {why}.")
    gate = results.get("plan", {}).get("gate")
    if gate is not None and not gate["holds"] and not gate.get("past_failed_gate"):
        lines.append("- Every run after the preconditions' rows: a precondition fails, so the claims are untestable.")
    elif gate is not None and not gate["holds"]:
        lines.append("- (Every planned run was made although a precondition fails: `--ignore-preconditions`.)")
    for s in results.get("plan", {}).get("skipped", []):
        label = "warm start" if s["method"] == "warm" else METHODS[s["method"]].label
        lines.append(f"- {label} lr {_lr(s['k'])} seed {s['seed']}: {s['why']}.")
    for f in results.get("failures", []):
        last = f["error"].strip().splitlines()[-1] if f["error"].strip() else "?"
        label = "warm start" if f["method"] == "warm" else METHODS[f["method"]].label
        lines.append(f"- {label} lr {f['lr']} seed {f['seed']} failed: `{last}`.")
    if not lines:
        return ("Every planned run ran. Not attempted: a pretrained model (SmolLM2-135M is a 94 MB GGUF file; the GPU "
                "machine reaches no network and receives at most 64 MiB), and a verifiable-instruction task, whose "
                "pass rates could not resolve the differences this budget needs.")  # fmt: skip
    return "**Runs not made** (their verdicts use what ran):\n\n" + "\n".join(lines)


def plot(summary: dict, figures: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for m, v in summary["per_row"].items():
        style = "--" if METHODS[m].kind == "sft" else ":" if METHODS[m].optim == "rmsprop" else "-"
        for ax, key, title in zip(axes, ("forward_kl", "validity_greedy", "validity_sampled"),
                                  ("held-out forward KL (nats)", "greedy validity", "sampled validity")):  # fmt: skip
            stats = v["curves"][key]
            means = [c["mean"] for c in stats]
            err = [((c["ci95"][1] - c["ci95"][0]) / 2 if c["ci95"][0] == c["ci95"][0] else 0.0) for c in stats]
            ax.errorbar(range(len(means)), means, yerr=err, linestyle=style, marker="o", markersize=3, capsize=2,
                        label=f"{METHODS[m].label} (lr {v['lr']:g})")  # fmt: skip
            ax.set_title(title)
            ax.set_xlabel("point (0 = warm start, k = after iteration k-1)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / FIGURES["kl"], dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, max(1, len(summary["stray"])), figsize=(5 * max(1, len(summary["stray"])), 4),
                             squeeze=False)  # fmt: skip
    for ax, (m, v) in zip(axes[0], summary["stray"].items()):
        for seed, curve in v["curves"].items():
            ax.plot(range(len(curve)), curve, marker="o", markersize=3, label=f"seed {seed}")
        ax.set_title(f"{METHODS[m].label} at lr {v['lr']:g} ({v['strayed']}/{v['n']} strayed)")
        ax.set_xlabel("point (0 = warm start)")
        ax.set_ylabel("held-out forward KL (nats)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / FIGURES["stray"], dpi=100)
    plt.close(fig)


def _jsonable(value: Any) -> Any:
    """NaN and infinities as null (strict JSON), dict keys as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def render(results: dict[str, Any], doc_path: Path, figures: Path) -> dict[str, Any]:
    """Write `reproduction_results.json` (with `preconditions`, `verdicts` and `selection` at top level), the figures
    and the page; return the summary."""
    figures.mkdir(parents=True, exist_ok=True)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    results["rules"] = RULES
    summary = summarize(results)
    results["preconditions"] = summary["preconditions"]
    results["verdicts"] = summary["verdicts"]
    results["selection"] = summary["selection"]
    results["summary"] = {k: summary[k] for k in ("per_row", "grid", "stray", "beyond", "warm", "cost")}
    json_path = figures / "reproduction_results.json"
    json_path.write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False))
    plot(summary, figures)
    doc_path.write_text(page(results, summary, figures, doc_path, json_path))
    return summary


def page(results: dict, summary: dict, figures: Path, doc_path: Path, json_path: Path) -> str:
    rel = os.path.relpath(figures, doc_path.parent)
    setting, meta = results["setting"], results["meta"]
    full = Setting(**setting)
    verdicts = summary["verdicts"]
    pre = summary["preconditions"]
    holds = all(p["holds"] for p in pre.values())
    nemo = {m: schedules(Method(m, m, "selfplay", "subset", alpha=a, schedule="nemo"), full)
            for m, a in (("spin", 0.1), ("tspin", 1.0))}  # fmt: skip
    warm_params = next(iter(results["warm_starts"].values()), {}).get("params", 0)
    subset = round(setting["pool"] * setting["subset_share"])
    steps_per_epoch = math.ceil(subset / setting["batch_size"])
    long_epochs = full.epochs_of(METHODS["sft_sub_long"])
    shape = setting["shape"]
    untestable = [v for v in verdicts if v["untestable"]]
    inconclusive_rows = [f"{METHODS[m].label} ({g['status']})" for m, g in summary["grid"].items()
                         if not g["conclusive"]]  # fmt: skip
    notes = []
    if inconclusive_rows:
        notes.append("Rows whose learning rate is inconclusive (their claims are inconclusive whatever the interval "
                     "says): " + "; ".join(inconclusive_rows) + ".")  # fmt: skip
    mode = meta.get("mode", "full")
    values = {
        "command": meta["command"],
        "date": meta["date"],
        "machine": meta["machine"],
        "python": meta["python"],
        "versions": ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "time_text": time_text(meta, summary),
        "rendered_note": (
            f" Page re-drawn from that run's JSON by `{meta['rendered_with']}`." if meta.get("rendered_with") else ""
        ),  # fmt: skip
        "json_name": json_path.name,
        "json_rel": f"{rel}/{json_path.name}",
        "preconditions_text": (
            "All preconditions hold: the claims below are testable in this setting."
            if holds
            else "**A precondition fails: the claims are untestable in this setting** (every verdict below is inconclusive "
            "and marked so). "
            + "; ".join(f"{PRECONDITION_NAMES[n]}: {'holds' if p['holds'] else 'fails'}" for n, p in pre.items())
            + "."
        ),  # fmt: skip
        "preconditions_table": preconditions_table(pre),
        "untestable_text": "" if not untestable else "**Untestable here: a precondition fails (see above).**",
        "verdicts_table": verdicts_table(verdicts),
        "verdict_notes": "\n\n".join(notes),
        "summary_table": summary_table(summary),
        "digits_text": f"{setting['min_digits']} to {setting['max_digits']}",
        "old_shift": setting["old_shift"],
        "new_shift": setting["new_shift"],
        "paths": setting["eval_paths"],
        "samples": setting["eval_samples"],
        "warm_pool": setting["warm_pool"],
        "pool": setting["pool"],
        "subset_share_pct": f"{setting['subset_share']:.0%}",
        "subset": subset,
        "held_out": setting["held_out"],
        "validation": setting["validation"],
        "params": f"{warm_params:,}",
        "shape": f"hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
        f"{shape['num_attention_heads']} heads, MLP {shape['intermediate_size']}",
        "warm_epochs": setting["warm_epochs"],
        "warm_lr": f"{setting['warm_lr']:g}",
        "warm_batch": setting["warm_batch_size"],
        "iterations": setting["iterations"],
        "batch_size": setting["batch_size"],
        "temperature": setting["temperature"],
        "rows_text": ", ".join(f"{METHODS[m].label}" for m in METHODS),
        "steps_sub": steps_per_epoch * setting["iterations"],
        "steps_full": math.ceil(setting["pool"] / setting["batch_size"]) * setting["iterations"],
        "long_epochs": long_epochs,
        "steps_long": steps_per_epoch * long_epochs * setting["iterations"],
        "anneal_lr_schedule": str(nemo["spin"]["learning_rate_schedule"]),
        "anneal_alpha_factors": f"1 -> {setting['anneal_alpha_factor']:g}",
        "anneal_spin_alpha": str(nemo["spin"]["alpha_schedule"]),
        "anneal_tspin_alpha": str(nemo["tspin"]["alpha_schedule"]),
        "anneal_mean_multiplier": f"{statistics.fmean(nemo['spin']['learning_rate_schedule']):.2f}",
        "selection_threshold": f"{setting['selection_threshold']:g}",
        "selection_min_share": f"{setting['selection_min_share']:g}",
        "seeds_text": ", ".join(str(s) for s in setting["seeds"]),
        "sft_grid": ", ".join(f"{rate(k):g}" for k in setting["sft_grid"]),
        "selfplay_grid": ", ".join(f"{rate(k):g}" for k in setting["selfplay_grid"]),
        "rms_grid": ", ".join(f"{rate(k):g}" for k in setting["rms_grid"]),
        "grid_seeds": setting["grid_seeds"],
        "grid_seeds_text": ", ".join(str(s) for s in setting["seeds"][: setting["grid_seeds"]]),
        "extend_limit": setting["extend_limit"],
        "flat_kl": f"{RULES['flat_kl_nats']:g}",
        "many_seeds": len(setting["seeds"]),
        "few_seeds": setting["few_seeds"],
        "rules_text": f"{RULES['verdict']}. Intervals: {RULES['interval']} (pairing {RULES['pairing']}). Largest "
        f"rise: {RULES['largest_rise']}. Each claim's own rule is in the table above and in the JSON's `verdicts`.",
        "kl_table": curve_table(summary, "forward_kl"),
        "greedy_table": curve_table(summary, "validity_greedy"),
        "sampled_table": curve_table(summary, "validity_sampled"),
        "current_table": curve_table(summary, "advantage_current", 2),
        "historical_table": curve_table(summary, "advantage_historical", 2),
        "gap_table": gap_table(summary),
        "fig_kl": f"{rel}/{FIGURES['kl']}",
        "fig_stray": f"{rel}/{FIGURES['stray']}",
        "rise_text": rise_text(summary),
        "stray_nats": f"{RULES['stray_rise_nats']:g}",
        "stray_table": stray_table(summary),
        "optimizer_text": optimizer_text(summary, verdicts),
        "selection_text": selection_text(summary, verdicts),
        "selection_table": selection_table_md(summary),
        "anneal_text": anneal_text(verdicts),
        "anneal_table": anneal_table(summary),
        "grid_table": grid_table_md(summary),
        "warm_val_kl": _num(
            statistics.fmean(
                w["validation_kl"]
                for s, w in summary["warm"].items()
                if int(s) in setting["seeds"][: setting["grid_seeds"]]
            )
            if summary["warm"]
            else float("nan")
        ),  # fmt: skip
        "warm_table": warm_table(summary),
        "cost_text": cost_text(summary, meta),
        "gpu_sizes": gpu_sizes(),
        "gpu_note": (
            "**This page is the GPU recipe's.**"
            if mode.startswith("gpu")
            else "Its numbers are not on this page: no GPU ran it for this page."
        ),  # fmt: skip
        "not_run_text": not_run_text(results),
        "cpu_run_note": f"{meta['wall_s'] / 60:.0f} min here" if mode == "full" else "see the CPU page",
    }
    return Template(TEMPLATE.read_text()).substitute(values)
