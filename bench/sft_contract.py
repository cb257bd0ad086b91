"""What TRL's `SFTTrainer` does with each call, argument, `SFTConfig` field and dataset format a user script uses, and
what `TSPINTrainer` does with the same, measured side by side on tiny CPU models (the character-level Llama of
`tspin_trl.demo`), as `dpo_contract.py` does for DPO.

    python bench/sft_contract.py                      # every probe, writes bench/results/sft_contract.json (~1 min)
    python bench/sft_contract.py --only field_        # probes whose name contains "field_"
    python bench/sft_contract.py --table bench/results/sft_contract.json   # the page's sentence and table

Each probe runs the same user code against both trainers (`SFTConfig`/`SFTTrainer` renamed to `TSPINConfig`/
`TSPINTrainer`, nothing else) and records `ok: <what came out>` or `error: <type>: <message>`. Nothing is asserted: the
tables are the measurement (docs/migration.md reads them). The harness is `bench/contract.py`, shared with
`dpo_contract.py`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
import torch
from datasets import Dataset
from transformers import TrainerCallback, TrainingArguments
from trl import SFTConfig, SFTTrainer

from bench.contract import Contract, ScratchContext, assistant, metric_keys, user
from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.demo import build_char_tokenizer, build_tiny_model


ROOT = Path(__file__).resolve().parent
CONTRACT = Contract(
    other="SFT",
    results=ROOT / "results" / "sft_contract.json",
    renames={"TSPINTrainer": "SFTTrainer", "TSPINConfig": "SFTConfig"},
    cell_limit=220,
)
PROBES = CONTRACT.probes
probe = CONTRACT.probe


# ---- data -----------------------------------------------------------------------------------------------------------


def sorting(i: int) -> tuple[str, str]:
    digits = [(i * 7 + k * 3) % 10 for k in range(4)]
    return "sort: " + " ".join(map(str, digits)), " ".join(map(str, sorted(digits)))


def text_rows(n: int = 8, column: str = "text", template: str = "{q} -> {a}") -> list[dict]:
    """SFT's language-modeling rows: one text per row."""
    return [{column: template.format(q=q, a=a)} for q, a in map(sorting, range(n))]


def messages_rows(n: int = 8) -> list[dict]:
    return [{"messages": [user(q), assistant(a)]} for q, a in map(sorting, range(n))]


FORMATS: dict[str, Callable[[], list[dict]]] = {
    "text (language modeling)": text_rows,
    "text in the paper's template (T-SPIN: response_template='paper')": lambda: text_rows(
        template="### Instruction: {q}\n\n### Response: {a}"
    ),
    "messages (conversational language modeling)": messages_rows,
    "prompt/completion, standard": lambda: [{"prompt": q + "\n", "completion": a} for q, a in map(sorting, range(8))],
    "prompt/completion, conversational": lambda: [
        {"prompt": [user(q)], "completion": [assistant(a)]} for q, a in map(sorting, range(8))
    ],
    "ShareGPT conversations (from/value)": lambda: [
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for q, a in map(sorting, range(8))
    ],
    "chat_template_kwargs column": lambda: [r | {"chat_template_kwargs": {"brief": True}} for r in messages_rows()],
}
# The character-level tokenizer's template, with a `brief` template argument.
BRIEF_TEMPLATE = (
    "{%- if brief -%}<|system|>Be brief.<|end|>{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{%- else -%}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


# ---- trainers -----------------------------------------------------------------------------------------------------


class Context(ScratchContext):
    """The scratch folder and tiny preset, and builders of either trainer from the same user settings."""

    def tokenizer(self, template: str | None = None):
        tokenizer = build_char_tokenizer()
        if template:
            tokenizer.chat_template = template
        return tokenizer

    def common(self, **overrides) -> dict:
        """The shared settings, two steps long."""
        return super().common() | {"max_steps": 2, "warmup_steps": 0} | overrides

    def config(self, which: str, **fields) -> SFTConfig | TSPINConfig:
        """The user's config: the same fields for both (T-SPIN's run kept short with its own settings)."""
        if which == "SFT":
            return SFTConfig(output_dir=self.folder("sft"), **self.common() | fields)
        tspin = {"num_iterations": 1, "max_completion_length": 8, "generation_batch_size": 8}
        return TSPINConfig(output_dir=self.folder("tspin"), **self.common() | tspin | fields)

    def build(self, which: str, rows=None, model=None, tokenizer=..., dataset=None, args=None, **kwargs):
        config_fields = SFTConfig.__dataclass_fields__.keys() | TSPINConfig.__dataclass_fields__.keys()
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in config_fields}
        cls = SFTTrainer if which == "SFT" else TSPINTrainer
        return cls(
            model=self.model_dir if model is None else model,
            args=args or self.config(which, **fields),
            train_dataset=dataset if dataset is not None else Dataset.from_list(rows or text_rows()),
            processing_class=self.tokenizer() if tokenizer is ... else tokenizer,
            **kwargs,
        )


# ---- probes ---------------------------------------------------------------------------------------------------------


def first_example(trainer) -> str:
    """The first prepared row as its user sees it: the decoded `input_ids`, `|` where the trained part starts."""
    dataset = trainer.train_dataset
    item = next(iter(dataset))
    tokenizer = trainer.processing_class
    ids = item["input_ids"]
    if "completion_mask" in item:
        mask = item["completion_mask"]
    elif "labels" in item:
        mask = [label != -100 for label in item["labels"]]
    else:
        mask = [1] * len(ids)
    start = next((i for i, bit in enumerate(mask) if bit), len(ids))
    shown = tokenizer.decode(ids[:start]) + "|" + tokenizer.decode(ids[start:])
    return f"{type(dataset).__name__}; [0] = {shown!r}"


def trained_ok(trainer) -> str:
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    moved = sum(not torch.equal(p, trainer.model.get_parameter(n)) for n, p in before.items())
    return f"trained {trainer.state.global_step} steps, {moved}/{len(before)} trainable tensors moved"


@probe("ctor_model_path", "model given as a local path (str), plain-text rows")
def _(ctx, which):
    return "ok: " + first_example(ctx.build(which))


@probe("ctor_model_instance", "model given as an instance built from a config")
def _(ctx, which):
    tokenizer = ctx.tokenizer()
    return "ok: " + first_example(ctx.build(which, model=build_tiny_model(tokenizer), tokenizer=tokenizer))


@probe("ctor_args_training_arguments", "args=transformers.TrainingArguments(...)")
def _(ctx, which):
    args = TrainingArguments(output_dir=ctx.folder("ta"), report_to=[], use_cpu=True, max_steps=1)
    trainer = ctx.build(which, args=args)
    return f"ok: args converted to {type(trainer.args).__name__}, learning_rate={trainer.args.learning_rate}"


@probe("ctor_args_sft_config", "args=SFTConfig(...) (the SFT config class itself)")
def _(ctx, which):
    args = SFTConfig(output_dir=ctx.folder("sc"), **ctx.common(max_steps=1))
    trainer = ctx.build(which, args=args)
    return f"ok: args is a {type(trainer.args).__name__}, loss_type={trainer.args.loss_type!r}"


@probe("ctor_processing_class_omitted", "processing_class omitted (loaded from the model folder)")
def _(ctx, which):
    trainer = ctx.build(which, tokenizer=None)
    return f"ok: {type(trainer.processing_class).__name__}, pad={trainer.processing_class.pad_token!r}"


@probe("ctor_peft_config", "peft_config=LoraConfig(r=4, target_modules=['q_proj', 'v_proj']), then train()")
def _(ctx, which):
    from peft import LoraConfig

    trainer = ctx.build(which, peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    return f"ok: {type(trainer.model).__name__}, " + trained_ok(trainer)


@probe("ctor_formatting_func", "formatting_func=fn returning a string (rows of question/answer/other columns)")
def _(ctx, which):
    rows = [{"question": q, "answer": a, "other": "x"} for q, a in map(sorting, range(8))]
    trainer = ctx.build(which, rows=rows, formatting_func=lambda row: f"{row['question']} -> {row['answer']}")
    return "ok: " + first_example(trainer)


@probe("ctor_formatting_func_messages", "formatting_func=fn returning a list of messages")
def _(ctx, which):
    rows = [{"question": q, "answer": a} for q, a in map(sorting, range(8))]
    trainer = ctx.build(
        which, rows=rows, formatting_func=lambda row: [user(row["question"]), assistant(row["answer"])]
    )
    return "ok: " + first_example(trainer)


@probe("ctor_compute_loss_func", "compute_loss_func=fn")
def _(ctx, which):
    ctx.build(which, compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.logits.mean())
    return "ok: accepted"


@probe("ctor_optimizer_cls_and_kwargs", "optimizer_cls_and_kwargs=(torch.optim.SGD, {'lr': 0.1}), then train()")
def _(ctx, which):
    trainer = ctx.build(which, optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1}))
    trained = trained_ok(trainer)
    return f"ok: {type(trainer.optimizer.optimizer).__name__}, {trained}"


@probe("ctor_preprocess_logits_for_metrics", "preprocess_logits_for_metrics=fn, then evaluate() with compute_metrics")
def _(ctx, which):
    calls = []
    trainer = ctx.build(
        which,
        eval_dataset=Dataset.from_list(text_rows(4)),
        preprocess_logits_for_metrics=lambda logits, labels: calls.append(tuple(logits.shape)) or logits,
        compute_metrics=lambda prediction: {"my_metric": 1.0},
    )
    metrics = trainer.evaluate()
    return f"ok: called {len(calls)}x (first input {calls[0] if calls else None}); eval_my_metric={'eval_my_metric' in metrics}"


@probe("ctor_callbacks", "callbacks=[a TrainerCallback counting on_log], then train()")
def _(ctx, which):
    class Count(TrainerCallback):
        logs = 0

        def on_log(self, args, state, control, **kwargs):
            Count.logs += 1

    ctx.build(which, callbacks=[Count()]).train()
    return f"ok: on_log called {Count.logs} times"


# ---- SFTConfig fields, one at a time ---------------------------------------------------------------------------------


def _field_probe(name: str, value: Any, rows: Callable[[], list[dict]] = text_rows, effect=None, train: bool = False):
    @probe(f"field_{name}={value}", f"SFTConfig field `{name}={value!r}`")
    def _(ctx, which):
        trainer = ctx.build(which, rows=rows(), **{name: value})
        shown = effect(trainer) if effect else f"{name}={getattr(trainer.args, name)!r}"
        return f"ok: {shown}" + (f"; {trained_ok(trainer)}" if train else "")


def _chat_template_file(ctx_root: Path) -> str:
    path = ctx_root / "template.jinja"
    path.write_text(BRIEF_TEMPLATE)
    return str(path)


def _sft_defaults() -> dict[str, Any]:
    from trl.trainer.base_config import _BaseConfig

    base = {f.name for f in dataclasses.fields(_BaseConfig)}
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(SFTConfig)
        if f.name not in base
    }


@probe("config_sft_fields", "TSPINConfig(**every SFTConfig field at SFT's default, but loss_type)")
def _(ctx, which):
    kwargs = {k: v for k, v in _sft_defaults().items() if k != "loss_type"}
    cls = SFTConfig if which == "SFT" else TSPINConfig
    cls(output_dir=ctx.folder("cfg"), **(ctx.common() | kwargs))
    return f"ok: {len(kwargs)} SFT fields accepted"


_field_probe("loss_type", "nll")
_field_probe("loss_type", "dft")
_field_probe("completion_only_loss", True)
_field_probe("completion_only_loss", False)
_field_probe("assistant_only_loss", True, messages_rows, train=True)
_field_probe("dataset_text_field", "content", lambda: text_rows(column="content"), effect=first_example)
_field_probe("dataset_kwargs", {"skip_prepare_dataset": True})
_field_probe("packing", True)
_field_probe("packing_strategy", "wrapped")
_field_probe("padding_free", True)
_field_probe("eval_packing", True)
_field_probe("shuffle_dataset", True)
_field_probe("activation_offloading", True)
_field_probe("pad_to_multiple_of", 8)
_field_probe("truncation_mode", "keep_end")
_field_probe("max_length", 16, effect=first_example)
_field_probe(
    "eos_token",
    "<|end|>",
    effect=lambda t: f"eos={t.processing_class.eos_token!r}, generation eos={t.model.generation_config.eos_token_id}",
)


@probe(
    "field_chat_template_path", "SFTConfig field `chat_template_path=<a .jinja file>` (messages with a template kwarg)"
)
def _(ctx, which):
    rows = [r | {"chat_template_kwargs": {"brief": True}} for r in messages_rows()]
    trainer = ctx.build(which, rows=rows, chat_template_path=_chat_template_file(ctx.root))
    return "ok: " + first_example(trainer)


# ---- dataset formats ----------------------------------------------------------------------------------------------


def _format_probe(name: str, make_rows: Callable[[], list[dict]]):
    @probe(f"data_{name}", f"train_dataset: {name}")
    def _(ctx, which):
        template = BRIEF_TEMPLATE if "chat_template_kwargs" in name else None
        extra = {"response_template": "paper"} if which == "T-SPIN" and "paper" in name else {}
        trainer = ctx.build(which, rows=make_rows(), tokenizer=ctx.tokenizer(template), **extra)
        return "ok: " + first_example(trainer)


for _name, _make_rows in FORMATS.items():
    _format_probe(_name, _make_rows)


@probe("data_pretokenized", "train_dataset: pre-tokenized `input_ids` only")
def _(ctx, which):
    tokenizer = ctx.tokenizer()
    rows = [tokenizer(row["text"]) for row in text_rows()]
    return "ok: " + first_example(ctx.build(which, rows=[dict(r) for r in rows], tokenizer=tokenizer))


@probe("data_pretokenized_with_completion_mask", "train_dataset: pre-tokenized `input_ids` + `completion_mask`")
def _(ctx, which):
    tokenizer = ctx.tokenizer()
    rows = []
    for q, a in map(sorting, range(8)):
        prompt, completion = tokenizer(q + " -> ")["input_ids"], tokenizer(a)["input_ids"]
        rows.append({"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)})
    return "ok: " + first_example(ctx.build(which, rows=rows, tokenizer=tokenizer, completion_only_loss=True))


@probe("data_iterable_train", "train_dataset=IterableDataset of text rows (max_steps=2), then train()")
def _(ctx, which):
    trainer = ctx.build(which, dataset=Dataset.from_list(text_rows()).to_iterable_dataset())
    return "ok: " + trained_ok(trainer)


# ---- training, evaluation, the prepared data -------------------------------------------------------------------------

_TRAINED: dict[str, Any] = {}


def trained(ctx: Context, which: str):
    """One trainer per kind trained on plain text with an evaluation set, `eval_strategy='steps'`."""
    if which not in _TRAINED:
        trainer = ctx.build(which, eval_dataset=Dataset.from_list(text_rows(4)), eval_strategy="steps", eval_steps=1)
        output = trainer.train()
        _TRAINED[which] = (trainer, output)
    return _TRAINED[which]


@probe("train", "train() on plain text -> TrainOutput")
def _(ctx, which):
    trainer, output = trained(ctx, which)
    return f"ok: global_step={output.global_step}, metrics {sorted(output.metrics)}"


@probe("train_sft_metrics", "SFT's metrics in the training log lines (mean_token_accuracy, num_tokens, entropy)")
def _(ctx, which):
    trainer, _ = trained(ctx, which)
    lines = [h for h in trainer.state.log_history if "loss" in h]
    found = {name: [round(h[name], 4) for h in lines if name in h] for name in ("mean_token_accuracy", "num_tokens")}
    missing = [name for name in ("mean_token_accuracy", "num_tokens", "entropy") if name not in metric_keys(lines)]
    return f"ok: {found}; missing {missing}"


@probe("eval_sft_metrics", "evaluate(): eval_loss, eval_mean_token_accuracy, eval_num_tokens")
def _(ctx, which):
    trainer, _ = trained(ctx, which)
    metrics = trainer.evaluate()
    wanted = ("eval_loss", "eval_mean_token_accuracy", "eval_num_tokens", "eval_entropy")
    return "ok: " + ", ".join(f"{k}: {'present' if k in metrics else 'missing'}" for k in wanted)


@probe("metric_for_best_model", "metric_for_best_model='eval_mean_token_accuracy' (eval and save every step)")
def _(ctx, which):
    trainer = ctx.build(
        which,
        eval_dataset=Dataset.from_list(text_rows(4)),
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        metric_for_best_model="eval_mean_token_accuracy",
        load_best_model_at_end=True,
    )
    trainer.train()
    return f"ok: best_metric={trainer.state.best_metric is not None}, best checkpoint {Path(trainer.state.best_model_checkpoint).name}"


@probe("evaluate_raw_text", "evaluate(eval_dataset=<raw text Dataset>)")
def _(ctx, which):
    trainer, _ = trained(ctx, which)
    metrics = trainer.evaluate(eval_dataset=Dataset.from_list(text_rows(4)))
    return "ok: " + ", ".join(sorted(k for k in metrics if k in ("eval_loss", "eval_mean_token_accuracy")))


@probe("prepared_column_names", "trainer.train_dataset.column_names and len()")
def _(ctx, which):
    dataset = ctx.build(which).train_dataset
    return f"ok: {type(dataset).__name__}, len {len(dataset)}, column_names {dataset.column_names}"


@probe("prepared_input_ids", "trainer.train_dataset[0]['input_ids'] decodes to the text (+ eos)")
def _(ctx, which):
    trainer = ctx.build(which)
    decoded = trainer.processing_class.decode(trainer.train_dataset[0]["input_ids"])
    return f"ok: {decoded!r}"


@probe("save_model", "save_model(dir) then AutoModelForCausalLM.from_pretrained(dir)")
def _(ctx, which):
    from transformers import AutoModelForCausalLM

    trainer, _ = trained(ctx, which)
    folder = ctx.folder("saved")
    trainer.save_model(folder)
    AutoModelForCausalLM.from_pretrained(folder)
    return "ok: " + ", ".join(sorted(os.listdir(folder)))


@probe("resume", "train(resume_from_checkpoint=True) after a run with checkpoints")
def _(ctx, which):
    trainer = ctx.build(which, save_strategy="steps", save_steps=1)
    trainer.train()
    again = ctx.build(which, args=trainer.args)
    return f"ok: resumed to global_step={again.train(resume_from_checkpoint=True).global_step}"


# ---- running --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    CONTRACT.main(__doc__, Context, argv)


if __name__ == "__main__":
    sys.exit(main())
