"""What TRL's `DPOTrainer` does with each call, argument and dataset format a user script uses, and what `TSPINTrainer`
does with the same, measured side by side on tiny CPU models (the character-level Llama of `tspin_trl.demo`, a tiny
Qwen2-MoE for the router loss).

    python bench/dpo_contract.py                      # every probe, writes bench/results/dpo_contract.json (~1 min)
    python bench/dpo_contract.py --only evaluate      # probes whose name contains "evaluate"
    python bench/dpo_contract.py --table bench/results/dpo_contract.json   # the page's sentence and table

Each probe runs the same user code against both trainers and records `ok: <what came out>` or
`error: <type>: <message>`. Nothing is asserted: the table is the measurement (docs/migration.md reads it). The harness
(registry, running, the JSON, the table) is `bench/contract.py`, shared with `sft_contract.py`.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python bench/<script>.py`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: F401  (first: it sets the environment that torch reads when it is imported)


# isort: split
import torch
from datasets import Dataset, DatasetDict
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from bench.contract import Contract, ScratchContext, assistant, metric_keys, summary, user
from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.demo import build_char_tokenizer, build_tiny_model


ROOT = Path(__file__).resolve().parent
CONTRACT = Contract(
    other="DPO", results=ROOT / "results" / "dpo_contract.json", renames={"TSPINTrainer": "DPOTrainer"}
)
PROBES = CONTRACT.probes
probe = CONTRACT.probe


# ---- data -----------------------------------------------------------------------------------------------------------


def preference_rows(n: int = 8) -> list[dict]:
    """DPO's conversational preference rows: sorting prompts, the sorted digits chosen, the reversed ones rejected."""
    rows = []
    for i in range(n):
        digits = [(i * 7 + k * 3) % 10 for k in range(4)]
        rows.append(
            {
                "prompt": [user("sort: " + " ".join(map(str, digits)))],
                "chosen": [assistant(" ".join(map(str, sorted(digits))))],
                "rejected": [assistant(" ".join(map(str, sorted(digits, reverse=True))))],
            }
        )
    return rows


def standard_rows(n: int = 8) -> list[dict]:
    return [
        {
            "prompt": row["prompt"][0]["content"] + "\n",
            "chosen": row["chosen"][0]["content"],
            "rejected": row["rejected"][0]["content"],
        }
        for row in preference_rows(n)
    ]


FORMATS: dict[str, Callable[[], list[dict]]] = {
    "conversational prompt/chosen/rejected": preference_rows,
    "standard prompt/chosen/rejected": standard_rows,
    "implicit prompt, conversational": lambda: [
        {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in preference_rows()
    ],
    "implicit prompt, standard": lambda: [
        {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in standard_rows()
    ],
    "messages (SFT)": lambda: [{"messages": r["prompt"] + r["chosen"]} for r in preference_rows()],
    "prompt/completion": lambda: [{"prompt": r["prompt"], "completion": r["chosen"]} for r in preference_rows()],
    "tool calls + tools column": lambda: [
        {
            "prompt": r["prompt"],
            "chosen": [
                {
                    "role": "assistant",
                    "tool_calls": [{"type": "function", "function": {"name": "sort", "arguments": {"n": 4}}}],
                }
            ],
            "rejected": r["rejected"],
            "tools": json.dumps([{"type": "function", "function": {"name": "sort", "parameters": {}}}]),
        }
        for r in preference_rows()
    ],
    "chat_template_kwargs column": lambda: [r | {"chat_template_kwargs": {"brief": True}} for r in preference_rows()],
    "ShareGPT conversations (from/value)": lambda: (
        [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}] * 8
    ),
    "images column": lambda: [r | {"images": []} for r in preference_rows()],
    "over-long prompts (2 of 8), truncation_mode=keep_start": lambda: [
        r | ({"prompt": [user("sort: " + "9 " * 40)]} if i in (2, 5) else {}) for i, r in enumerate(preference_rows())
    ],
}
# A template for the character-level tokenizer that renders tools, tool calls and a `brief` template argument.
TOOL_TEMPLATE = (
    "{%- if tools -%}<|system|>tools:{% for t in tools %}{{ t['function']['name'] }};{% endfor %}<|end|>{%- endif -%}"
    "{%- if brief -%}<|system|>Be brief.<|end|>{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}<|assistant|>{% generation %}"
    "{%- if m.tool_calls -%}{%- for c in m.tool_calls -%}call {{ c['function']['name'] }}{%- endfor -%}"
    "{%- else -%}{{ m['content'] }}{%- endif -%}<|end|>{% endgeneration %}"
    "{%- elif m['role'] == 'tool' -%}<|user|>result: {{ m['content'] }}<|end|>"
    "{%- else -%}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def tspin_rows(rows: list[dict]) -> list[dict]:
    """The same rows as T-SPIN reads them: DPO's rows are accepted as they are (`rejected` is ignored)."""
    return rows


# ---- trainers -----------------------------------------------------------------------------------------------------


class Context(ScratchContext):
    """The scratch folder and tiny preset, and builders of either trainer from the same user settings."""

    def tokenizer(self, tools: bool = False):
        tokenizer = build_char_tokenizer()
        if tools:
            tokenizer.chat_template = TOOL_TEMPLATE
        return tokenizer

    def dpo(self, rows=None, model=None, tokenizer=..., dataset=None, **kwargs) -> DPOTrainer:
        config = {k: kwargs.pop(k) for k in list(kwargs) if k in DPOConfig.__dataclass_fields__}
        args = kwargs.pop("args", None) or DPOConfig(
            output_dir=self.folder("dpo"), **self.common(max_steps=2, warmup_steps=0) | config
        )
        return DPOTrainer(
            model=self.model_dir if model is None else model,
            args=args,
            train_dataset=dataset if dataset is not None else Dataset.from_list(rows or preference_rows()),
            processing_class=self.tokenizer() if tokenizer is ... else tokenizer,
            **kwargs,
        )

    def tspin(self, rows=None, model=None, tokenizer=..., dataset=None, **kwargs) -> TSPINTrainer:
        config = {k: kwargs.pop(k) for k in list(kwargs) if k in TSPINConfig.__dataclass_fields__}
        args = kwargs.pop("args", None) or TSPINConfig(
            output_dir=self.folder("tspin"),
            **self.common(num_iterations=1, max_completion_length=8, warmup_steps=0, generation_batch_size=8) | config,
        )
        return TSPINTrainer(
            model=self.model_dir if model is None else model,
            args=args,
            train_dataset=dataset if dataset is not None else Dataset.from_list(tspin_rows(rows or preference_rows())),
            processing_class=self.tokenizer() if tokenizer is ... else tokenizer,
            **kwargs,
        )

    def build(self, which: str, **kwargs):
        return self.dpo(**kwargs) if which == "DPO" else self.tspin(**kwargs)


# ---- probes ---------------------------------------------------------------------------------------------------------


def first_item(trainer) -> str:
    dataset = trainer.train_dataset
    item = dataset[0]
    return f"{type(dataset).__name__} of {len(dataset)}; [0] keys {sorted(item)}"


@probe("ctor_model_path", "model given as a local path (str)")
def _(ctx, which):
    return "ok: " + first_item(ctx.build(which))


@probe("ctor_model_instance", "model given as an instance built from a config, no ref_model")
def _(ctx, which):
    tokenizer = ctx.tokenizer()
    return "ok: " + first_item(ctx.build(which, model=build_tiny_model(tokenizer), tokenizer=tokenizer))


@probe("ctor_ref_model", "ref_model=<a model instance>")
def _(ctx, which):
    tokenizer = ctx.tokenizer()
    ref = build_tiny_model(tokenizer)
    if which == "DPO":
        trainer = ctx.dpo(ref_model=ref, tokenizer=tokenizer)
    else:
        trainer = ctx.tspin(ref_model=ref, tokenizer=tokenizer)
    return "ok: ref_model kept: " + str(getattr(trainer, "ref_model", None) is not None)


@probe("ctor_args_none", "args=None (the default config, on a CPU-only machine)")
def _(ctx, which):
    cwd = os.getcwd()
    os.chdir(ctx.folder("args_none"))
    try:
        cls = DPOTrainer if which == "DPO" else TSPINTrainer
        trainer = cls(
            model=ctx.model_dir,
            train_dataset=Dataset.from_list(preference_rows()),
            processing_class=ctx.tokenizer(),
        )
        return f"ok: output_dir={Path(trainer.args.output_dir).name}, bf16={trainer.args.bf16}"
    finally:
        os.chdir(cwd)


@probe("ctor_processing_class_omitted", "processing_class omitted (loaded from the model folder)")
def _(ctx, which):
    trainer = ctx.build(which, tokenizer=None)
    return f"ok: {type(trainer.processing_class).__name__}, pad={trainer.processing_class.pad_token!r}"


@probe("ctor_peft_config", "peft_config=LoraConfig(r=4, target_modules=['q_proj', 'v_proj'])")
def _(ctx, which):
    from peft import LoraConfig

    trainer = ctx.build(which, peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return f"ok: {type(trainer.model).__name__}, {trainable} trainable parameters"


@probe("ctor_peft_model", "model=<a PeftModel>")
def _(ctx, which):
    from peft import LoraConfig, get_peft_model

    tokenizer = ctx.tokenizer()
    model = get_peft_model(build_tiny_model(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainer = ctx.build(which, model=model, tokenizer=tokenizer)
    return f"ok: {type(trainer.model).__name__}"


@probe("ctor_quantization_config", "quantization_config=BitsAndBytesConfig(...)")
def _(ctx, which):
    return "not measured: bitsandbytes quantization needs a CUDA GPU (none here)"


@probe("ctor_callbacks", "callbacks=[a TrainerCallback counting on_log]")
def _(ctx, which):
    class Count(TrainerCallback):
        logs = 0

        def on_log(self, args, state, control, **kwargs):
            Count.logs += 1

    trainer = ctx.build(which, callbacks=[Count()])
    trainer.train()
    return f"ok: on_log called {Count.logs} times"


@probe("ctor_optimizers", "optimizers=(torch AdamW, LambdaLR)")
def _(ctx, which):
    tokenizer = ctx.tokenizer()
    model = build_tiny_model(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    kwargs = {"ref_model": build_tiny_model(tokenizer)} if which == "DPO" else {}
    trainer = ctx.build(which, model=model, tokenizer=tokenizer, optimizers=(optimizer, scheduler), **kwargs)
    trainer.train()
    return f"ok: trained with {type(trainer.optimizer).__name__}"


@probe("ctor_data_collator", "data_collator=<the trainer's own collator class, built by the user>")
def _(ctx, which):
    if which == "DPO":
        from trl.trainer.dpo_trainer import DataCollatorForPreference as Collator
    else:
        from tspin_trl import DataCollatorForTriplet as Collator
    tokenizer = ctx.tokenizer()
    trainer = ctx.build(which, tokenizer=tokenizer, data_collator=Collator(pad_token_id=tokenizer.pad_token_id))
    trainer.train()
    return "ok: trained"


@probe("ctor_preprocess_logits_kwarg", "preprocess_logits_for_metrics=fn as a constructor argument")
def _(ctx, which):
    ctx.build(which, preprocess_logits_for_metrics=lambda logits, labels: logits)
    return "ok: accepted"


@probe("ctor_args_wrong_class", "args=<the other trainer's config class>")
def _(ctx, which):
    if which == "DPO":
        args = TSPINConfig(output_dir=ctx.folder("x"), **ctx.common())
    else:
        args = DPOConfig(output_dir=ctx.folder("x"), **ctx.common())
    ctx.build(which, args=args)
    return "ok: accepted"


@probe("config_dpo_fields", "TSPINConfig(**every DPOConfig field at DPO's default)")
def _(ctx, which):
    import dataclasses

    from trl.trainer.base_config import _BaseConfig

    base = {f.name for f in dataclasses.fields(_BaseConfig)}
    kwargs = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(DPOConfig)
        if f.name not in base
    }
    cls = DPOConfig if which == "DPO" else TSPINConfig
    cls(output_dir=ctx.folder("cfg"), **(ctx.common() | kwargs))
    return f"ok: {len(kwargs)} DPO fields accepted"


@probe("config_dpo_only_value", "a DPO-only setting at a non-default value (label_smoothing=0.1)")
def _(ctx, which):
    cls = DPOConfig if which == "DPO" else TSPINConfig
    cls(output_dir=ctx.folder("cfg"), **ctx.common(), label_smoothing=0.1)
    return "ok: accepted"


# ---- dataset formats ----------------------------------------------------------------------------------------------


def _format_probe(name: str, make_rows: Callable[[], list[dict]]):
    @probe(f"data_{name}", f"train_dataset: {name}")
    def _(ctx, which):
        tools = "tool" in name or "chat_template_kwargs" in name
        trainer = ctx.build(
            which, rows=make_rows(), tokenizer=ctx.tokenizer(tools=tools), truncation_mode="keep_start"
        )
        item = trainer.train_dataset[0]
        tokenizer = trainer.processing_class
        prompt = tokenizer.decode(item["prompt_ids"])
        response = tokenizer.decode(item["chosen_ids" if which == "DPO" else "real_ids"])
        return f"ok: {len(trainer.train_dataset)} examples; [0] = {prompt!r} -> {response!r}"


for _name, _make_rows in FORMATS.items():
    _format_probe(_name, _make_rows)


@probe("data_iterable_train", "train_dataset=IterableDataset (max_steps=2)")
def _(ctx, which):
    dataset = Dataset.from_list(preference_rows()).to_iterable_dataset()
    trainer = ctx.build(which, dataset=dataset, max_steps=2)
    trainer.train()
    return f"ok: trained {trainer.state.global_step} steps"


@probe("data_eval_at_init", "eval_dataset= Dataset / dict / DatasetDict / IterableDataset at construction")
def _(ctx, which):
    rows = preference_rows(4)
    outcomes = []
    for label, eval_dataset in {
        "Dataset": Dataset.from_list(rows),
        "dict": {"a": Dataset.from_list(rows), "b": Dataset.from_list(rows[:2])},
        "DatasetDict": DatasetDict({"a": Dataset.from_list(rows)}),
        "IterableDataset": Dataset.from_list(rows).to_iterable_dataset(),
    }.items():
        try:
            trainer = ctx.build(which, eval_dataset=eval_dataset)
            metrics = trainer.evaluate()
            outcomes.append(f"{label}: ok {sorted(k for k in metrics if k.endswith('_loss'))}")
        except Exception as error:  # each variant on its own
            outcomes.append(f"{label}: {type(error).__name__}: {summary(str(error), 90)}")
    return "; ".join(outcomes)


# ---- calls on a trained trainer -------------------------------------------------------------------------------------

_TRAINED: dict[str, Any] = {}


def trained(ctx: Context, which: str, compute_metrics: Callable | None = None):
    """One trained trainer per kind, with an eval set and compute_metrics that records what it receives."""
    if which not in _TRAINED:
        seen: list[dict] = []

        def compute_metrics(prediction):
            seen.append(
                {
                    "predictions": summary(
                        [getattr(p, "shape", type(p).__name__) for p in prediction.predictions]
                        if isinstance(prediction.predictions, tuple)
                        else getattr(prediction.predictions, "shape", type(prediction.predictions).__name__)
                    ),
                    "label_ids": summary(getattr(prediction.label_ids, "shape", type(prediction.label_ids).__name__)),
                }
            )
            return {"my_metric": 1.0}

        trainer = ctx.build(
            which,
            eval_dataset=Dataset.from_list(preference_rows(4)),
            compute_metrics=compute_metrics,
            eval_strategy="steps",
            eval_steps=1,
        )
        output = trainer.train()
        _TRAINED[which] = (trainer, output, seen)
    return _TRAINED[which]


@probe("train", "train() -> TrainOutput")
def _(ctx, which):
    trainer, output, _ = trained(ctx, which)
    return f"ok: global_step={output.global_step}, training_loss={output.training_loss:.4g}, metrics {sorted(output.metrics)}"


@probe("log_history_last", "trainer.state.log_history[-1] after train() (eval set, eval_strategy='steps')")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)
    return f"ok: keys {sorted(trainer.state.log_history[-1])}"


@probe("log_history_shape", "the entries of trainer.state.log_history after train(): kind@step, in order")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)

    def kind(entry: dict) -> str:
        if "train_runtime" in entry:
            return "summary"
        return "train" if "loss" in entry else "eval" if "eval_loss" in entry else "other"

    return "ok: " + ", ".join(f"{kind(h)}@{h.get('step')}" for h in trainer.state.log_history)


@probe("train_metric_names", "metric names of the training log lines")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)
    return "ok: " + ", ".join(metric_keys([h for h in trainer.state.log_history if "loss" in h]))


@probe("eval_metric_names", "metric names of evaluate()")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)
    return "ok: " + ", ".join(sorted(trainer.evaluate()))


@probe("compute_metrics", "compute_metrics=fn: what EvalPrediction it receives during evaluate()")
def _(ctx, which):
    trainer, _, seen = trained(ctx, which)
    seen.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = trainer.evaluate()
    future = [str(w.message)[:70] for w in caught if "return_outputs" in str(w.message)]
    called = f"called {len(seen)}x with {seen[0]}" if seen else "never called"
    return f"ok: {called}; eval_my_metric in metrics: {'eval_my_metric' in metrics}; FutureWarning: {future[:1]}"


@probe("preprocess_logits_attr", "trainer.preprocess_logits_for_metrics = fn, then evaluate()")
def _(ctx, which):
    trainer, _, seen = trained(ctx, which)
    calls = []
    trainer.preprocess_logits_for_metrics = lambda logits, labels: calls.append(1) or logits.argmax(-1)
    try:
        trainer.evaluate()
    finally:
        trainer.preprocess_logits_for_metrics = None
    return f"ok: called {len(calls)}x"


def _evaluate_probe(name: str, make):
    @probe(f"evaluate_{name}", f"evaluate(eval_dataset=<raw {name}>)")
    def _(ctx, which):
        trainer, _, _ = trained(ctx, which)
        metrics = trainer.evaluate(eval_dataset=make())
        return "ok: " + ", ".join(sorted(k for k in metrics if k.endswith("_loss") or k.endswith("rewards/margins")))


_evaluate_probe("Dataset", lambda: Dataset.from_list(preference_rows(4)))
_evaluate_probe("IterableDataset", lambda: Dataset.from_list(preference_rows(4)).to_iterable_dataset())
_evaluate_probe("DatasetDict", lambda: DatasetDict({"x": Dataset.from_list(preference_rows(4))}))
_evaluate_probe(
    "dict", lambda: {"x": Dataset.from_list(preference_rows(4)), "y": Dataset.from_list(preference_rows(2))}
)


@probe("evaluate_prefix", "evaluate(metric_key_prefix='test')")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)
    return "ok: " + ", ".join(sorted(trainer.evaluate(metric_key_prefix="test"))[:4]) + ", ..."


@probe("predict", "predict(<raw Dataset>)")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)
    output = trainer.predict(Dataset.from_list(preference_rows(4)))
    shape = getattr(output.predictions, "shape", None)
    return f"ok: predictions {shape}, metrics {sorted(output.metrics)[:3]}..."


@probe("predict_prepared", "predict(trainer.eval_dataset)")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)
    output = trainer.predict(trainer.eval_dataset)
    shape = getattr(output.predictions, "shape", None)
    return f"ok: predictions {shape}, label_ids {getattr(output.label_ids, 'shape', None)}"


@probe("save_model", "save_model(dir) then AutoModelForCausalLM.from_pretrained(dir)")
def _(ctx, which):
    from transformers import AutoModelForCausalLM

    trainer, _, _ = trained(ctx, which)
    folder = ctx.folder("saved")
    trainer.save_model(folder)
    AutoModelForCausalLM.from_pretrained(folder)
    return "ok: " + ", ".join(sorted(os.listdir(folder)))


@probe("create_model_card", "create_model_card() (README.md in output_dir)")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)
    trainer.create_model_card(model_name="m")
    text = (Path(trainer.args.output_dir) / "README.md").read_text()
    return f"ok: README.md of {len(text)} characters, cites {trainer._paper.get('id')}"


@probe("push_to_hub", "push_to_hub()")
def _(ctx, which):
    return "not measured: needs the Hugging Face Hub (this machine is offline)"


@probe("resume", "train(resume_from_checkpoint=True) after a run with checkpoints")
def _(ctx, which):
    trainer = ctx.build(which, save_strategy="steps", save_steps=1)
    trainer.train()
    again = ctx.build(which, args=trainer.args)
    output = again.train(resume_from_checkpoint=True)
    return f"ok: resumed to global_step={output.global_step}"


@probe("attributes", "trainer.aux_loss_enabled / .ref_model / .train_dataset.column_names")
def _(ctx, which):
    trainer, _, _ = trained(ctx, which)
    found = {}
    for name in ("aux_loss_enabled", "ref_model", "padding_free", "precompute_ref_logps"):
        found[name] = summary(getattr(trainer, name), 30) if hasattr(trainer, name) else "missing"
    found["train_dataset.column_names"] = summary(getattr(trainer.train_dataset, "column_names", "missing"), 60)
    return "ok: " + "; ".join(f"{k}={v}" for k, v in found.items())


def trained_moe(ctx: Context, which: str, **config):
    """A tiny Qwen2-MoE (4 experts, 2 per token, a shared expert; `config` over its settings) trained by `which` (DPO
    with a reference model of the same config)."""
    import transformers

    tokenizer = ctx.tokenizer()
    config = transformers.Qwen2MoeConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        **config,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Qwen2MoeForCausalLM(config)
    kwargs = {"ref_model": transformers.Qwen2MoeForCausalLM(config)} if which == "DPO" else {}
    trainer = ctx.build(which, model=model, tokenizer=tokenizer, **kwargs)
    trainer.train()
    return trainer


@probe("moe_router_aux_loss", "a tiny Qwen2-MoE model: trains? aux_loss logged?")
def _(ctx, which):
    trainer = trained_moe(ctx, which)
    logged = [h["aux_loss"] for h in trainer.state.log_history if "aux_loss" in h]
    return (
        f"ok: aux_loss_enabled={getattr(trainer, 'aux_loss_enabled', 'missing')}, "
        f"coef={getattr(trainer, 'router_aux_loss_coef', 'missing')}, aux_loss logged: {summary(logged, 50)}"
    )


@probe("moe_output_router_logits_config", "a Qwen2-MoE whose config sets output_router_logits=True")
def _(ctx, which):
    trainer = trained_moe(ctx, which, output_router_logits=True)
    return f"ok: trained {trainer.state.global_step} steps"


@probe("prepared_item_before_train", "trainer.train_dataset[0] before train()")
def _(ctx, which):
    return "ok: " + first_item(ctx.build(which))


# ---- running --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    CONTRACT.main(__doc__, Context, argv)


if __name__ == "__main__":
    sys.exit(main())
