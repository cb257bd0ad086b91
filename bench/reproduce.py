"""Reproduce the T-SPIN paper's comparison at small scale, offline, on CPU; write docs/reproduction.md.

Rows (all continue from the same warm start, per seed): SFT on 100% of the annotated data, SFT on 25%, SPIN on 25%
(`objective="spin"`, alpha 0.1 = SPIN's lambda), T-SPIN on 25% (the paper's defaults), T-SPIN without the historical
advantage (beta 0 throughout) on 25%, and "T-SPIN + real-NLL" (`real_nll_weight=1`, NOT in the paper, reported as its
own row). Each row trains for the same number of iterations (self-play) / epochs (SFT) over its own data and is
scored on held-out prompts before training and after every iteration.

Two models: the tiny preset (a ~0.7M-parameter Llama with a character tokenizer) on digit sorting (3 seeds, 3
learning rates) and SmolLM2-135M-Instruct on the verifiable-instruction task (1 seed, the demo's small lr).

```bash
make reproduce                                # = python bench/reproduce.py: the full run (< 1 h on 2 CPU cores)
python bench/reproduce.py --quick             # tiny model, 1 seed (< 10 min); writes outputs/reproduce-quick/
python bench/reproduce.py --smoke --out DIR   # a few dozen examples, 1 iteration (the test)
python bench/reproduce.py --resume            # skip the runs already in the work folder's runs.jsonl
```
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path


if __package__ in (None, ""):  # `python bench/reproduce.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import reproduce_lib as L


ROOT = Path(__file__).resolve().parents[1]
TINY_SHAPE = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)
ALL_METHODS = list(L.METHODS)


def settings_for(mode: str) -> list[L.Setting]:
    tiny = L.Setting(
        name="tiny",
        model="tiny",
        task="sorting",
        num_train_full=800,
        num_eval=200,
        iterations=5,
        lrs=[1e-5, 3e-5, 1e-4],
        seeds=[0, 1, 2],
        methods=ALL_METHODS,
        batch_size=16,
        max_length=96,
        max_completion_length=32,
        temperature=1.0,
        generation_batch_size=256,
        eval_batch_size=200,
        optim="adamw_torch",
        tiny_shape=TINY_SHAPE,
        warm_epochs=20,
        warm_lr=1e-3,
        warm_batch_size=16,
    )
    smollm2 = L.Setting(
        name="smollm2",
        model="smollm2",
        task="instructions",
        num_train_full=120,
        num_eval=40,
        iterations=2,
        lrs=[5e-6],
        seeds=[0],
        methods=ALL_METHODS,
        batch_size=4,
        max_length=192,
        max_completion_length=48,
        temperature=0.7,
        generation_batch_size=32,
        eval_batch_size=40,
        optim="rmsprop",
    )
    # A second, larger lr on SmolLM2 for the likelihood question only (T-SPIN and its SFT-25% reference).
    smollm2_high = L.Setting(**{**smollm2.to_dict(), "name": "smollm2-lr2e-5", "lrs": [2e-5],
                                "methods": ["sft_quarter", "tspin"]})  # fmt: skip
    if mode == "full":
        return [tiny, smollm2, smollm2_high]
    if mode == "quick":
        tiny.seeds, tiny.iterations = [0], 3
        return [tiny]
    if mode == "smoke":
        tiny.num_train_full, tiny.num_eval, tiny.iterations = 32, 8, 1
        tiny.lrs, tiny.seeds = [1e-4], [0]
        tiny.tiny_shape = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        tiny.warm_epochs, tiny.batch_size, tiny.warm_batch_size = 1, 8, 8
        tiny.generation_batch_size, tiny.eval_batch_size, tiny.max_completion_length = 32, 8, 24
        return [tiny]
    raise ValueError(mode)


def run_key(setting: L.Setting, method: str, lr: float, seed: int) -> str:
    blob = json.dumps([setting.to_dict(), method, lr, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="tiny model only, 1 seed, 3 iterations (< 10 min)")
    group.add_argument("--smoke", action="store_true", help="a few dozen examples, 1 iteration (the test)")
    parser.add_argument("--out", help="folder for reproduction.md and figures/ (default: docs/ for the full run, "
                        "outputs/reproduce-<mode>/ otherwise)")  # fmt: skip
    parser.add_argument(
        "--work-dir", help="warm starts, proto cache and runs.jsonl (default: outputs/reproduce-work-<mode>)"
    )
    parser.add_argument("--resume", action="store_true", help="skip runs already recorded in the work folder")
    parser.add_argument("--only", help="run one setting only (tiny, smollm2, smollm2-lr2e-5)")
    parser.add_argument("--render-only", metavar="JSON", help="re-draw the page and figures from a results JSON")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    if args.out:
        doc_path = Path(args.out) / "reproduction.md"
        figures = Path(args.out) / "figures"
    elif mode == "full":
        doc_path, figures = ROOT / "docs" / "reproduction.md", ROOT / "docs" / "figures"
    else:
        doc_path = ROOT / "outputs" / f"reproduce-{mode}" / "reproduction.md"
        figures = doc_path.parent / "figures"
    if args.render_only:
        figures.mkdir(parents=True, exist_ok=True)
        results = json.loads(Path(args.render_only).read_text())
        results["meta"]["rendered_with"] = "python bench/reproduce.py" + "".join(
            f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])
        )
        write_outputs(results, doc_path, figures)
        print(f"wrote {doc_path} and {figures}", flush=True)
        return 0
    work = Path(args.work_dir or ROOT / "outputs" / f"reproduce-work-{mode}")
    work.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    settings = [s for s in settings_for(mode) if args.only in (None, s.name)]
    command = "python bench/reproduce.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])
    )

    runs_path = work / "runs.jsonl"
    done: dict[str, dict] = {}
    if args.resume and runs_path.is_file():
        for line in runs_path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["key"]] = record
    elif runs_path.exists():
        runs_path.unlink()

    started = time.perf_counter()
    runs, warm_starts, setting_walls = [], {}, {}
    for setting in settings:
        setting_start = time.perf_counter()
        full, quarter, held_out = data = L.make_data(setting)
        for seed in setting.seeds:
            if setting.model == "tiny":
                folder = str(work / setting.name / f"warm_start_seed{seed}_{run_key(setting, 'warm', 0, seed)}")
                record = L.build_warm_start(setting, quarter, held_out, seed, folder)
                warm_starts[f"{setting.name}/seed{seed}"] = record
                print(f"[{time.perf_counter() - started:7.0f}s] {setting.name} seed {seed}: warm start "
                      f"{record['points'][-1]['score']:.3f} ({record['wall_s']:.0f}s)", flush=True)  # fmt: skip
            else:
                folder = L.smollm2_path()
            for lr in setting.lrs:
                for method in setting.methods:
                    key = run_key(setting, method, lr, seed)
                    if key in done:
                        runs.append(done[key])
                        continue
                    record = L.run_one(setting, L.METHODS[method], lr, seed, folder, data,
                                       str(work / "run"), str(work / "proto_cache"))  # fmt: skip
                    record["key"] = key
                    runs.append(record)
                    with open(runs_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    scores = " ".join(f"{s:.3f}" for s in record["scores"])
                    print(f"[{time.perf_counter() - started:7.0f}s] {setting.name} seed {seed} lr {lr:g} {method:15s} "
                          f"scores {scores}  ({record['wall_s']:.0f}s)", flush=True)  # fmt: skip
        setting_walls[setting.name] = time.perf_counter() - setting_start
    wall = time.perf_counter() - started

    meta = {
        "mode": mode,
        "command": command,
        "wall_s": wall,
        "setting_wall_s": setting_walls,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results = {"meta": meta, "settings": [s.to_dict() for s in settings], "warm_starts": warm_starts, "runs": runs}
    write_outputs(results, doc_path, figures)
    print(f"wrote {doc_path} and {figures} (wall {wall / 60:.1f} min)", flush=True)
    return 0


def write_outputs(results: dict, doc_path: Path, figures: Path) -> None:
    """Claims, figures, the raw JSON and the page, from the runs (also used by --render-only)."""
    settings = [L.Setting(**s) for s in results["settings"]]
    groups = L.group_runs(results["runs"])
    all_claims = {s.name: {lr: L.evaluate_claims(groups, s, lr) for lr in s.lrs} for s in settings}
    figure_files = {}
    for setting in settings:
        files = figure_files[setting.name] = {
            "scores": f"reproduction_scores_{setting.name}.png",
            "logps": f"reproduction_logps_{setting.name}.png",
            "heldout": f"reproduction_heldout_logp_{setting.name}.png",
            "change": f"reproduction_score_change_{setting.name}.png",
        }
        L.plot_scores(groups, setting, str(figures / files["scores"]))
        L.plot_scores(groups, setting, str(figures / files["change"]), ylabel="change of the score from the warm start",
                      relative=True)  # fmt: skip
        if any(L.METHODS[m].kind == "selfplay" for m in setting.methods):
            L.plot_logps(groups, setting, str(figures / files["logps"]))
        L.plot_scores(groups, setting, str(figures / files["heldout"]), "heldout_logp_real",
                      "held-out mean logp(real response)")  # fmt: skip
    results["claims"] = {name: {str(lr): c for lr, c in by_lr.items()} for name, by_lr in all_claims.items()}
    json_path = figures / "reproduction_results.json"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    rel_figures = os.path.relpath(figures, doc_path.parent)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(L.render_markdown(results, settings, groups, all_claims, figure_files, rel_figures, json_path,
                                          doc_path))  # fmt: skip


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
