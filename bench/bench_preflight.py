"""What the preflight costs: the same self-play run with `preflight=True` and `preflight=False`, side by side.

Both contenders build the same tiny model and data, run the same iterations (sampling through `model.generate`,
checkpoints saved every iteration so the checkpoint check runs) and alternate which goes first. The
table gives each preflight check's seconds, the run's wall time either way, and the preflight's share of one
self-play iteration (generation plus training), which is what it must stay small against.

    python bench/bench_preflight.py            # 8 and 64 prompts, 3 rounds (about 2 minutes on 2 CPU cores)
    python bench/bench_preflight.py --smoke    # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
from datasets import Dataset
from transformers import ProgressCallback

from bench.report import print_table
from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.demo import build_char_tokenizer, build_tiny_model
from tspin_trl.preflight import PreflightCallback


MODES = {"smoke": dict(sizes=(8,), rounds=1), "full": dict(sizes=(8, 64), rounds=3)}


def sorting_rows(n: int) -> list[dict]:
    """`n` deterministic digit-sorting conversations of 4 digits (those of the tests' builders)."""
    rows = []
    for i in range(n):
        digits = [(i * 7 + k * 3) % 10 for k in range(4)]
        rows.append(
            {
                "prompt": [{"role": "user", "content": "sort: " + " ".join(map(str, digits))}],
                "completion": [{"role": "assistant", "content": " ".join(map(str, sorted(digits)))}],
            }
        )
    return rows


def one_run(num_prompts: int, preflight: bool) -> dict[str, float]:
    """Train the tiny preset for 2 iterations on `num_prompts` sorting prompts; the wall time and preflight checks."""
    tokenizer = build_char_tokenizer()
    with tempfile.TemporaryDirectory() as folder:
        args = TSPINConfig(
            output_dir=folder,
            num_iterations=2,
            per_device_train_batch_size=4,
            per_device_eval_batch_size=4,
            generation_batch_size=16,
            max_completion_length=10,
            max_length=64,
            learning_rate=1e-3,
            warmup_steps=0,
            logging_steps=100,
            report_to=[],
            gradient_checkpointing=False,
            save_strategy="epoch",
            use_cpu=True,
            dataloader_pin_memory=False,
            use_proto_cache=False,
            preflight=preflight,
        )
        trainer = TSPINTrainer(
            model=build_tiny_model(tokenizer, seed=0),
            args=args,
            train_dataset=Dataset.from_list(sorting_rows(num_prompts)),
            processing_class=tokenizer,
        )
        trainer.remove_callback(ProgressCallback)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        callback = next((c for c in trainer.callback_handler.callbacks if isinstance(c, PreflightCallback)), None)
        checks = callback.seconds if callback is not None else {}
    return {"run": seconds, **{f"check: {name}": value for name, value in checks.items()}}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Run the comparison; return one result per size (seconds; `share` is preflight / iteration)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one size, one round (seconds)")
    options = parser.parse_args(argv)
    mode = MODES["smoke" if options.smoke else "full"]
    rows, results = [], []
    for size in mode["sizes"]:
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for round_index in range(mode["rounds"] + 1):  # round 0 warms up (imports, kernels) and is not kept
            order = (True, False) if round_index % 2 == 0 else (False, True)
            for preflight in order:
                result = one_run(size, preflight)
                if round_index > 0 or mode["rounds"] == 0:
                    runs[preflight].append(result)
        median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
        with_preflight = median([r["run"] for r in runs[True]])
        without = median([r["run"] for r in runs[False]])
        checks = {k: median([r[k] for r in runs[True]]) for k in runs[True][0] if k.startswith("check: ")}
        preflight_total = sum(checks.values())
        per_iteration = without / 2
        results.append(
            {"prompts": size, "with": with_preflight, "without": without, "preflight": preflight_total, **checks}
            | {"iteration": per_iteration, "share": preflight_total / per_iteration}
        )
        rows.append(
            [
                f"{size} prompts",
                f"{with_preflight:.2f}",
                f"{without:.2f}",
                f"{with_preflight / without:.3f}",
                f"{preflight_total:.3f}",
                ", ".join(f"{k[7:]} {v:.3f}" for k, v in checks.items()),
                f"{per_iteration:.2f}",
                f"{100 * preflight_total / per_iteration:.1f}%",
            ]
        )
    print_table(
        "The preflight's cost (median of the rounds)",
        [
            "run",
            "train() with preflight (s)",
            "without (s)",
            "ratio",
            "preflight (s)",
            "per check (s)",
            "one iteration (s)",
            "preflight / iteration",
        ],
        rows,
    )
    return results


if __name__ == "__main__":
    main()
