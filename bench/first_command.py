"""The README's first command and the candidates it was chosen from: does the task score rise over the iterations,
across seeds, within about a minute of CPU?

Each candidate is a `tspin-trl train` command line on the tiny preset and the built-in sorting task, run as a user runs
it (a subprocess, from an empty folder, the preset written on first use, a fresh proto cache), once per seed. For each
run it records the task score of greedy responses to the held-out prompts before training and after every iteration
(`self_play/scores.jsonl`), the exact-match rate, the held-out log-likelihood per token (`self_play/heldout.jsonl`),
the alarms (`self_play/iterations.jsonl`), the first held-out response, and the CPU seconds of the process (user +
system, from `getrusage` of the child: what the machine spent, whatever else shares it; `OMP_WAIT_POLICY` unset, as a
user runs it, so the seconds include the threads' waiting spins, which grow with the load).

    python bench/first_command.py --json bench/results/cpu_first_command.json
    python bench/first_command.py --candidates readme --seeds 42     # the README's command once
    python bench/first_command.py --table bench/results/cpu_first_command.json   # the page's table, from the data

`docs/cli.md` shows that table of `bench/results/cpu_first_command.json`.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

COMMON = ["--model_name_or_path", "preset:tiny", "--task", "sorting", "--num_train_prompts", "64"]
# name -> (what it tries, flags after COMMON); "readme" is the README's first command (tspin_trl.scripts.parser)
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "before": (
        "the first command before issue 30: 8-12 digits, 32 generated tokens, alpha 1",
        ["--num_iterations", "2", "--learning_rate", "1e-3", "--max_completion_length", "32"],
    ),
    "short_tspin": (
        "2-3 digits, 8 generated tokens, alpha 0.1, batch 4, 2 epochs per iteration: T-SPIN alone",
        [
            "--sorting_digits",
            "2-3",
            "--num_iterations",
            "2",
            "--epochs_per_iteration",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "1e-3",
            "--alpha",
            "0.1",
            "--max_completion_length",
            "8",
        ],
    ),
    "readme": ("the same with the real responses' NLL term (`--real_nll_weight 1`): the README's command", []),
}


def readme_flags() -> list[str]:
    """The flags of the README's first command after `--output_dir` is dropped (from `FIRST_COMMAND`)."""
    from tspin_trl.scripts.parser import FIRST_COMMAND

    words = FIRST_COMMAND.replace("\\\n", " ").split()[2:]  # after `tspin-trl train`
    index = words.index("--output_dir")
    return words[:index] + words[index + 2 :]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_once(flags: list[str], seed: int, workdir: Path) -> dict:
    """One `tspin-trl train` run; its scores, held-out evidence, alarms and CPU seconds."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TSPIN_TRL_MODELS=str(workdir / "models"))
    env.pop("OMP_WAIT_POLICY", None)  # as a user runs it: `import bench` sets it to PASSIVE, which halves the CPU time
    env["TSPIN_TRL_CACHE"] = str(workdir / "proto")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "tspin_trl", "train", *flags, "--seed", str(seed), "--output_dir", "out"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    completed = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    folder = workdir / "out" / "self_play"
    scores = {record["label"]: record for record in read_jsonl(folder / "scores.jsonl")}
    heldout = {record["label"]: record for record in read_jsonl(folder / "heldout.jsonl")}
    iterations: dict[int, dict] = {}  # the records of one iteration merge (a summary, then its held-out evidence)
    for record in read_jsonl(folder / "iterations.jsonl"):
        iterations.setdefault(record["iteration"], {}).update(record)
    labels = ["start", *(f"iteration_{t}" for t in sorted(iterations))]
    return {
        "seed": seed,
        "labels": labels,
        "score": [scores[label]["score"] for label in labels if label in scores],
        "exact_match": [scores[label].get("metrics", {}).get("sorting_exact_match") for label in labels],
        "heldout_logp_real_per_token": [
            heldout[label]["measures"]["heldout_logp_real_per_token"] for label in labels if label in heldout
        ],
        "saturated": [t for t, record in sorted(iterations.items()) if record.get("advantage_saturated")],
        "vanished": [t for t, record in sorted(iterations.items()) if record.get("advantage_vanished")],
        "first_response": [scores[label]["responses"][0] for label in labels if label in scores],
        "cpu_seconds": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
        "wall_seconds": round(wall, 1),
    }


def markdown_table(results: dict) -> str:
    """One row per run: the candidate, its seed, the score before training and after each iteration, the exact-match
    rate after the last iteration, the alarms, the first held-out answer after the last iteration, CPU and wall
    seconds."""
    lines = [
        "| candidate | seed | score: start, after each iteration | exact match at the end | alarms | first held-out "
        "answer at the end | CPU s | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, candidate in results["candidates"].items():
        for run in candidate["runs"]:
            alarms = ", ".join(f"{kind} in {run[kind]}" for kind in ("saturated", "vanished") if run[kind]) or "none"
            answer = run["first_response"][-1] if run["first_response"] else ""
            answer = f"`{answer}`".replace("|", "\\|") if answer.strip() else f"(blank, {len(answer)} characters)"
            lines.append(
                f"| `{name}` | {run['seed']} | {' -> '.join(f'{v:.3f}' for v in run['score'])} | "
                f"{run['exact_match'][-1]:.3f} | {alarms} | {answer} | {run['cpu_seconds']} | {run['wall_seconds']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help=f"comma-separated, of {list(CANDIDATES)}")
    parser.add_argument("--seeds", default="42,1,2", help="comma-separated training seeds (--seed)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--table", default=None, help="print the markdown table of a results file, and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return
    sys.path.insert(0, str(ROOT))
    from bench.machine import machine_info

    results = {"command": "tspin-trl train " + " ".join(COMMON), "machine": machine_info(), "candidates": {}}
    for name in args.candidates.split(","):
        what, flags = CANDIDATES[name]
        flags = readme_flags() if name == "readme" else COMMON + flags
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory(prefix="tspin_first_command_") as tmp:
                run = run_once(flags, seed, Path(tmp))
            runs.append(run)
            print(
                f"{name} seed {seed}: score {' -> '.join(f'{v:.3f}' for v in run['score'])}, "
                f"saturated {run['saturated']}, {run['cpu_seconds']} CPU s",
                flush=True,
            )
        results["candidates"][name] = {"what": what, "flags": flags, "runs": runs}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
