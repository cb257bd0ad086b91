"""Reproduce the T-SPIN paper's comparison at small scale on a task whose target distribution is known exactly;
write docs/reproduction.md.

The task (`bench/repro/task.py`): prompt = 4-7 distinct digits, real answer = as many digits drawn uniformly with
replacement from them (the GPU recipe: 6-9 digits, a uniformly random permutation).
Rows (`bench/repro/runs.py`): SFT on 100% (continued) and on 25%, SPIN with and without its data mixing, T-SPIN alpha
1, T-SPIN w/o historical advantage, T-SPIN alpha 0.1, T-SPIN_ref; all from one warm start (SFT on the whole pool),
every iteration its own run. The learning rate of each row is chosen on a validation split with one seed, then run
with every seed. The verdicts (`bench/repro/analysis.py`) follow rules stated in the page (`bench/repro/template.md`).

```bash
make reproduce                                # = python bench/reproduce.py: the full run, writes docs/
python bench/reproduce.py --quick             # 2 rates, 1 seed, 4 iterations; writes outputs/reproduce-quick/
python bench/reproduce.py --smoke --out DIR   # a few dozen prompts, 1 iteration (the test)
python bench/reproduce.py --gpu               # the GPU recipe: SmolLM2-135M, larger data, more seeds (one H100)
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
from repro import report, runs  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
TINY_SHAPE = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)


def setting_for(mode: str) -> runs.Setting:
    setting = runs.Setting(
        name="draws",
        model="tiny",
        pool=1200,
        held_out=300,
        validation=200,
        iterations=6,
        sft_lrs=[1e-4, 3e-4, 1e-3],
        selfplay_lrs=[3e-5, 1e-4, 3e-4],
        seeds=[0, 1, 2],
        methods=list(runs.METHODS),
        tiny_shape=TINY_SHAPE,
        min_digits=4,
        max_digits=7,
        replacement=True,
        warm_epochs=12,
        warm_lr=3e-3,
    )
    if mode == "quick":
        setting.sft_lrs, setting.selfplay_lrs = [3e-4], [1e-4]
        setting.seeds, setting.iterations = [0], 4
    elif mode == "smoke":
        setting.pool, setting.held_out, setting.validation, setting.iterations = 48, 16, 16, 1
        setting.sft_lrs, setting.selfplay_lrs, setting.seeds = [1e-3], [1e-4], [0]
        setting.tiny_shape = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        setting.warm_epochs, setting.batch_size, setting.warm_batch_size = 1, 8, 8
        setting.eval_paths, setting.eval_samples = 2, 2
    elif mode == "gpu":
        # One H100, about 10 minutes: a real pretrained model, 4x the data, 5 seeds (not run on this page's machine).
        setting.name, setting.model, setting.dtype = "permutations-smollm2", "smollm2", "bfloat16"
        setting.min_digits, setting.max_digits, setting.replacement = (
            6,
            9,
            False,
        )  # a pretrained model: the harder task
        setting.pool, setting.held_out, setting.validation = 2000, 1000, 500
        setting.sft_lrs, setting.selfplay_lrs = [1e-5, 3e-5], [1e-6, 5e-6]
        setting.seeds = [0, 1, 2, 3, 4]
        setting.batch_size, setting.warm_batch_size, setting.warm_epochs, setting.warm_lr = 32, 64, 2, 3e-5
        setting.max_length, setting.max_completion_length = 128, 16
        setting.eval_paths, setting.eval_samples, setting.eval_batch_size = 8, 8, 1024
        setting.generation_batch_size = 1024
    return setting


def run_key(setting: runs.Setting, method: str, lr: float, seed: int) -> str:
    blob = json.dumps([setting.to_dict(), method, lr, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(setting: runs.Setting) -> list[tuple[str, float, int]]:
    """The grid (every rate, first seed) in method order; the other seeds are added once the rates are chosen."""
    return [(m, lr, setting.seeds[0]) for m in setting.methods for lr in setting.lrs_for(m)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="one rate per kind, 1 seed, 4 iterations")
    group.add_argument("--smoke", action="store_true", help="a few dozen prompts, 1 iteration (the test)")
    group.add_argument("--gpu", action="store_true", help="the GPU recipe (SmolLM2-135M, one H100)")
    parser.add_argument("--out", help="folder for reproduction.md and figures/ (default: docs/ for the full run, "
                        "outputs/reproduce-<mode>/ otherwise)")  # fmt: skip
    parser.add_argument(
        "--work-dir", help="warm start, proto cache and runs.jsonl (default: outputs/reproduce-work-<mode>)"
    )
    parser.add_argument("--resume", action="store_true", help="skip runs already recorded in the work folder")
    parser.add_argument("--render-only", metavar="JSON", help="re-draw the page and figures from a results JSON")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "gpu" if args.gpu else "full"
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

    setting = setting_for(mode)
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

    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    data = runs.make_data(setting)
    warm_folder = str(work / f"warm_start_{run_key(setting, 'warm', 0, 0)}")
    warm = runs.build_warm_start(setting, data, setting.seeds[0], warm_folder)
    print(f"[{time.perf_counter() - started:6.0f}s] warm start: held-out KL {warm['held_out']['forward_kl']:.3f}, "
          f"validity {warm['held_out']['validity']:.3f} ({warm['wall_s']:.0f}s)", flush=True)  # fmt: skip

    records: list[dict] = []

    def execute(method: str, lr: float, seed: int) -> None:
        key = run_key(setting, method, lr, seed)
        if key in done:
            records.append(done[key])
            return
        record = runs.run_one(setting, runs.METHODS[method], lr, seed, warm_folder, data, str(work / "run"),
                              str(work / "proto_cache"))  # fmt: skip
        record["key"] = key
        records.append(record)
        with open(runs_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        kls = " ".join(f"{p['forward_kl']:.3f}" for p in record["points"])
        print(f"[{time.perf_counter() - started:6.0f}s] {method:12s} lr {lr:<7g} seed {seed}: held-out KL {kls}; "
              f"validation {record['validation_kl']:.3f} ({record['wall_s']:.0f}s)", flush=True)  # fmt: skip

    for method, lr, seed in plan(setting):
        execute(method, lr, seed)
    from repro.analysis import choose_lrs

    chosen, _ = choose_lrs(records, setting.methods, setting.seeds[0])
    print("chosen rates: " + ", ".join(f"{m} {lr:g}" for m, lr in chosen.items()), flush=True)
    for seed in setting.seeds[1:]:
        for method in setting.methods:
            execute(method, chosen[method], seed)

    usage = resource.getrusage(resource.RUSAGE_SELF)
    meta = {
        "mode": mode,
        "command": command,
        "wall_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "load_average": [load_start, os.getloadavg()[0]],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results = {"meta": meta, "setting": setting.to_dict(), "warm_start": warm, "runs": records}
    report.render(results, doc_path, figures)
    print(f"wrote {doc_path} and {figures} (wall {meta['wall_s'] / 60:.1f} min, CPU {meta['cpu_s'] / 60:.1f} min)",
          flush=True)  # fmt: skip
    return 0


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
