"""Prompt selection before regeneration: time saved per iteration, side by side with the same run without it.

Two `TSPINTrainer.train()` runs from the same initial model, data and settings, one with
`prompt_selection_threshold` (default: 10, the saturation threshold) and one without. For every iteration after the
first (iteration 0 reuses the proto responses: nothing to select or generate), both runs report:

- generation: the seconds of the iteration's synthetic-response pass and the prompts it sampled;
- scoring: the seconds of the selection's forward pass over every prompt's last pair (with selection only);
- training: the seconds from the epoch's first step to its end (the same number of steps in both runs, by the length
  rule: skipped prompts' rows serve kept prompts);
- the prompts kept and skipped, and the iteration's mean loss and share of saturated pairs;

then the ratios (with / without) of generation, generation + scoring, training and their sum, and the held-out score
after the last iteration (the demo's checker). The proto pass is shared (one cache) and not counted.

    python bench/bench_selection.py            # the offline demo's setting: SmolLM2-135M, 50 prompts, 3 iterations
    python bench/bench_selection.py --quick    # the tiny preset on the sorting task (about a minute)
    python bench/bench_selection.py --smoke    # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import defaultdict


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
from transformers import TrainerCallback

from bench.cli import run_main
from bench.machine import machine_info
from bench.report import print_table
from bench.trainers import temporary_workdir


MODES = {
    # a low threshold, so that the tiny model skips some prompts
    "smoke": dict(model="tiny", task="sorting", num_train=12, num_eval=4, train_fraction=1.0, num_iterations=3,
                  batch_size=4, max_length=64, max_completion_length=12, learning_rate=1e-3, temperature=1.0,
                  generation_batch_size=8, threshold=1e-3),
    "quick": dict(model="tiny", task="sorting", num_train=64, num_eval=16, train_fraction=1.0, num_iterations=3,
                  batch_size=8, max_length=96, max_completion_length=32, learning_rate=1e-3, temperature=1.0,
                  generation_batch_size=32, threshold=10.0),
    # examples/configs/demo.yaml
    "demo": dict(model="smollm2", task="instructions", num_train=200, num_eval=32, train_fraction=0.25,
                 num_iterations=3, batch_size=4, max_length=192, max_completion_length=40, learning_rate=5e-6,
                 temperature=0.7, generation_batch_size=16, threshold=10.0),
}  # fmt: skip


class IterationTimer(TrainerCallback):
    """Training seconds of each iteration, from its first epoch's begin (after the self-play callback prepared it:
    this callback is added after it) to its last epoch's end."""

    def __init__(self, iteration_of):
        self.iteration_of = iteration_of
        self.seconds: dict[int, float] = defaultdict(float)
        self._start = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds[self.iteration_of()] += time.perf_counter() - self._start


def build(settings: dict):
    """The initial model, tokenizer, training rows and held-out rows of a mode."""
    if settings["model"] == "tiny":
        from tspin_trl.demo import build_char_tokenizer, build_tiny_model

        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tokenizer)
    else:
        from tspin_trl.demo import load_smollm2

        model, tokenizer = load_smollm2()
    from tspin_trl.demo import make_instruction_dataset, make_sorting_dataset

    make = make_sorting_dataset if settings["task"] == "sorting" else make_instruction_dataset
    splits = make(num_train=settings["num_train"], num_eval=settings["num_eval"], seed=0)
    train = splits["train"].select(range(max(1, int(len(splits["train"]) * settings["train_fraction"]))))
    return model, tokenizer, train, splits["test"]


def run_once(settings: dict, threshold: float | None, min_share: float, workdir: str, label: str) -> dict:
    from tspin_trl import TSPINConfig, TSPINTrainer
    from tspin_trl.demo import task_scorer

    model, tokenizer, train, held_out = build(settings)
    args = TSPINConfig(
        output_dir=os.path.join(workdir, label),
        num_iterations=settings["num_iterations"],
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        warmup_steps=0.1,
        max_length=settings["max_length"],
        max_completion_length=settings["max_completion_length"],
        temperature=settings["temperature"],
        generation_batch_size=settings["generation_batch_size"],
        prompt_selection_threshold=threshold,
        prompt_selection_min_share=min_share,
        proto_cache_dir=os.path.join(workdir, "proto_cache"),  # one proto pass for both runs
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        disable_tqdm=True,
        preflight=False,
        seed=0,
    )
    trainer = TSPINTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        scorer=task_scorer(settings["task"]),
        scorer_dataset=held_out,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    timer = IterationTimer(lambda: trainer.iteration)
    trainer.add_callback(timer)
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    records = trainer.run_folder.iteration_records()
    scores = {r.get("label"): r.get("score") for r in trainer.run_folder.scores()}
    iterations = []
    for t in range(settings["num_iterations"]):
        stats = trainer.self_play.generation_stats.get(f"iteration_{t}/train")
        record = records.get(t, {})
        iterations.append(
            {
                "iteration": t,
                "generation_seconds": stats.seconds if stats else 0.0,
                "generated_prompts": stats.num_prompts if stats else 0,
                "generated_tokens": stats.generated_tokens if stats else 0,
                "scoring_seconds": record.get("prompt_selection_seconds", 0.0),
                "training_seconds": timer.seconds.get(t, 0.0),
                "steps": (record.get("last_step") or 0) - (record.get("first_step") or 0) + 1,
                "prompts_kept": record.get("prompts_kept", len(train)),
                "prompts_skipped": record.get("prompts_skipped", 0),
                "mean_loss": record.get("means", {}).get("loss/per_example"),
                "saturated_share": record.get("means", {}).get("advantage/saturated"),
                "score_after": scores.get(f"iteration_{t}"),
            }
        )
    return {"total_seconds": total, "score_before": scores.get("start"), "iterations": iterations}


def ratios(without: dict, with_: dict) -> dict:
    """Per iteration >= 1 and summed: with / without, for generation, generation + scoring, training and all three."""

    def parts(entry: dict) -> dict:
        generation, scoring, training = (
            entry["generation_seconds"],
            entry["scoring_seconds"],
            entry["training_seconds"],
        )
        return {
            "generation": generation,
            "generation_and_scoring": generation + scoring,
            "training": training,
            "iteration": generation + scoring + training,
        }

    per_iteration, sums = [], {"without": defaultdict(float), "with": defaultdict(float)}
    for a, b in zip(without["iterations"][1:], with_["iterations"][1:], strict=True):
        pa, pb = parts(a), parts(b)
        per_iteration.append({key: pb[key] / pa[key] if pa[key] else float("nan") for key in pa})
        for key in pa:
            sums["without"][key] += pa[key]
            sums["with"][key] += pb[key]
    total = {key: sums["with"][key] / sums["without"][key] for key in sums["without"] if sums["without"][key]}
    return {"per_iteration": per_iteration, "total": total}


def merge_rounds(rounds: list[dict]) -> dict:
    """One run's rounds: the seconds summed over rounds, everything else from the first round (the runs are
    deterministic: the same decisions, steps and losses in every round)."""
    merged = dict(rounds[0], total_seconds=sum(r["total_seconds"] for r in rounds))
    merged["iterations"] = [
        dict(entries[0], **{key: sum(e[key] for e in entries) for key in entries[0] if key.endswith("_seconds")})
        for entries in zip(*(r["iterations"] for r in rounds), strict=True)
    ]
    return merged


def run(args) -> dict:
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "demo"
    settings = MODES[args.mode]
    threshold = settings["threshold"] if args.threshold is None else args.threshold
    keep = contextlib.nullcontext(args.workdir) if args.workdir else temporary_workdir("tspin_bench_selection_")
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    with keep as workdir:
        for r in range(args.rounds):  # alternate which run goes first (the first one pays the warm-up)
            for name in ("without", "with") if r % 2 == 0 else ("with", "without"):
                runs[name].append(
                    run_once(settings, threshold if name == "with" else None, args.min_share, workdir, f"{name}_{r}")
                )
    without, with_ = merge_rounds(runs["without"]), merge_rounds(runs["with"])
    return {
        "mode": args.mode,
        "settings": settings,
        "rounds": args.rounds,
        "threshold": threshold,
        "min_share": args.min_share,
        "runs": {"without": without, "with": with_},
        "ratios": ratios(without, with_),
        "machine": machine_info(),
    }


def report(results: dict) -> None:
    runs = results["runs"]
    rows = []
    for a, b in zip(runs["without"]["iterations"], runs["with"]["iterations"], strict=True):
        rows.append(
            [
                a["iteration"],
                f"{b['prompts_kept']}/{b['prompts_kept'] + b['prompts_skipped']}",
                f"{a['generation_seconds']:.1f} / {b['generation_seconds']:.1f}",
                f"{b['scoring_seconds']:.1f}",
                f"{a['training_seconds']:.1f} / {b['training_seconds']:.1f}",
                f"{a['steps']} / {b['steps']}",
                f"{a['saturated_share']:.2f} / {b['saturated_share']:.2f}" if b["saturated_share"] is not None else "",
                f"{a['mean_loss']:.3g} / {b['mean_loss']:.3g}" if b["mean_loss"] is not None else "",
            ]
        )
    print_table(
        f"Prompt selection (threshold {results['threshold']}, min_share {results['min_share']}), mode "
        f"{results['mode']}, {results['rounds']} round(s), seconds summed: without / with",
        ["iteration", "kept", "generation s", "scoring s", "training s", "steps", "saturated share", "mean loss"],
        rows,
    )
    ratio_rows = [
        [
            f"iteration {i + 1}",
            *(f"{r[k]:.2f}" for k in ("generation", "generation_and_scoring", "training", "iteration")),
        ]
        for i, r in enumerate(results["ratios"]["per_iteration"])
    ]
    total = results["ratios"]["total"]
    ratio_rows.append(
        ["iterations >= 1", *(f"{total.get(k, float('nan')):.2f}" for k in ("generation", "generation_and_scoring",
                                                                               "training", "iteration"))]
    )  # fmt: skip
    print_table(
        "Time with selection / without",
        ["", "generation", "generation + scoring", "training", "generation + scoring + training"],
        ratio_rows,
    )
    scores = [runs[k]["iterations"][-1]["score_after"] for k in ("without", "with")]
    print(
        f"\nHeld-out score before training {runs['without']['score_before']}; after the last iteration: without "
        f"{scores[0]}, with {scores[1]}. Whole train(): {runs['without']['total_seconds']:.0f} s without, "
        f"{runs['with']['total_seconds']:.0f} s with."
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="seconds (the test)")
    size.add_argument("--quick", action="store_true", help="the tiny preset on the sorting task")
    parser.add_argument(
        "--threshold", type=float, help="prompt_selection_threshold of the run with it (default: the mode's)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, alternating which goes first")
    parser.add_argument("--min_share", type=float, default=0.25, help="prompt_selection_min_share")
    parser.add_argument("--workdir", help="keep the runs' output folders here (default: a temporary folder)")
    parser.add_argument("--json", help="write the results to this file")
    return run_main(parser, argv, run, report)


if __name__ == "__main__":
    main()
