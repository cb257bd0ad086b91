"""Cases: configuration values, enums and integers (refused with the field named, or trained on to a finite, changed
model where legal), their types, and settings changed on `trainer.args` after the trainer was built."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tspin_trl.run_folder import RunFolder

from .harness import (
    CLEAR,
    DEFECT,
    SURVIVED,
    WARNED,
    Ctx,
    Verdict,
    add,
    baseline,
    case,
    classify_error,
    config,
    expect_error,
    judge_run,
    make_trainer,
    max_diff,
    params_of,
    run_and_judge,
)


CFG = "configuration values"
TYPES = "configuration types"
AFTER = "settings changed after construction"


def probe_config(
    field_name: str, value: Any, expect: str = "error", keywords: tuple[str, ...] | None = None
) -> Callable[[Ctx], Verdict]:
    """Build the config; if accepted, train one iteration and check the result is finite and something was learned.

    `expect="error"`: the value is invalid (refused, or DEFECT). `expect="accept"`: the value is legal (a known
    meaning, e.g. `max_grad_norm=0` turns clipping off): it must train to a finite, changed model.
    `expect="warn"`: legal, but a warning must say so. `keywords`: what a clear error names (default: the field).
    """
    keywords = keywords or (field_name,)

    def run(ctx: Ctx) -> Verdict:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                config(ctx.out, **{field_name: value})
            except Exception as error:  # noqa: BLE001
                verdict = classify_error(error, keywords)
                if expect != "error" and verdict.outcome == CLEAR:
                    return Verdict(DEFECT, f"a legal value refused: {verdict.message}")
                return verdict
            user_warnings = [str(w.message) for w in caught if field_name in str(w.message)]
        try:
            trainer = make_trainer(ctx.out, **{field_name: value, "num_iterations": 1})
            initial = params_of(trainer)
            trainer.train()
        except Exception as error:  # noqa: BLE001
            verdict = classify_error(error, keywords)
            verdict.detail = "accepted by TSPINConfig, failed in the trainer"
            return verdict
        verdict = judge_run(ctx, trainer, None)
        if verdict.outcome == DEFECT:
            return Verdict(DEFECT, f"accepted {field_name}={value!r}, then {verdict.message}")
        text = "; ".join(user_warnings) or ctx.warnings_text()
        if expect == "warn":
            return Verdict(WARNED, text) if text else Verdict(DEFECT, "accepted without the expected warning")
        if max_diff(params_of(trainer), initial) == 0:
            return Verdict(DEFECT, f"accepted {field_name}={value!r}, and training silently changed nothing")
        if expect == "accept":
            return Verdict(SURVIVED, f"legal value, trained to a finite model ({text or 'no warning'})"[:300])
        return Verdict(DEFECT, f"accepted {field_name}={value!r} silently and trained on it")

    return run


# ---- values ------------------------------------------------------------------------------------------------------------

TSPIN_FLOATS = [
    "learning_rate",
    "warmup_steps",
    "alpha",
    "beta",
    "beta_first_iteration",
    "real_nll_weight",
    "temperature",
    "top_p",
    "vanishing_advantage_threshold",
    "saturation_threshold",
    "vllm_server_timeout",
    "vllm_gpu_memory_utilization",
]
HF_FLOATS = ["weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm"]
QUICK_CONFIG = {"beta", "alpha", "real_nll_weight", "temperature", "weight_decay"}

for _name in TSPIN_FLOATS + HF_FLOATS:
    add(f"nan_{_name}", CFG, f"{_name}=nan", probe_config(_name, math.nan), quick=_name in QUICK_CONFIG, finding="2")
for _name in TSPIN_FLOATS + ["max_grad_norm", "weight_decay"]:
    add(f"inf_{_name}", CFG, f"{_name}=inf", probe_config(_name, math.inf), quick=_name == "beta", finding="2")
for _name in ["alpha", "learning_rate", "temperature"]:
    add(f"neginf_{_name}", CFG, f"{_name}=-inf", probe_config(_name, -math.inf), finding="2")
for _name, _value, _expect in [
    ("learning_rate", -1e-3, "error"),
    ("warmup_steps", -1.0, "error"),
    ("alpha", -1.0, "error"),
    ("alpha", 0.0, "error"),
    ("beta", -0.1, "error"),
    ("beta_first_iteration", -0.1, "error"),
    ("real_nll_weight", -1.0, "error"),
    ("temperature", 0.0, "error"),
    ("temperature", -1.0, "error"),
    ("top_p", 0.0, "error"),
    ("top_p", 1.5, "error"),
    ("vanishing_advantage_threshold", -1.0, "error"),
    ("saturation_threshold", -1.0, "error"),
    ("weight_decay", -0.1, "error"),
    ("adam_epsilon", -1e-8, "accept"),  # unused by the default RMSProp
    ("max_grad_norm", -1.0, "error"),  # issue 20: refused (transformers would turn clipping off silently)
    ("max_grad_norm", 0.0, "accept"),  # 0 turns clipping off
    ("vllm_gpu_memory_utilization", 1.5, "error"),
]:
    add(
        f"value_{_name}_{_value}",
        CFG,
        f"{_name}={_value}",
        probe_config(_name, _value, _expect),
        finding="20" if _name == "max_grad_norm" else None,
    )
for _name, _value in [
    ("alpha", 1e30),
    ("beta", 1e30),
    ("beta_first_iteration", 1e30),
    ("real_nll_weight", 1e30),
    ("temperature", 1e30),
    ("learning_rate", 1e30),
    ("weight_decay", 1e30),
    ("warmup_steps", 1e30),
]:
    add(f"absurd_{_name}", CFG, f"{_name}={_value}", probe_config(_name, _value), quick=_name == "beta", finding="2")


# ---- types -------------------------------------------------------------------------------------------------------------

for _name, _value, _expect in [
    ("temperature", "0.7", "error"),
    ("learning_rate", "1e-4", "error"),
    ("alpha", None, "error"),
    ("beta", "0.1", "error"),
    ("top_p", None, "error"),
    ("temperature", None, "error"),
    ("weight_decay", "0", "error"),
    ("max_grad_norm", "1.0", "error"),
    ("vllm_server_timeout", "30", "error"),
    ("real_nll_weight", [0.1], "error"),
    ("beta", True, "error"),  # a bool is an int to Python, not a weight
    ("alpha", np.float32(1.0), "accept"),  # a numpy scalar is a number
    ("learning_rate", 1, "accept"),  # an int where a float is expected
    ("per_device_train_batch_size", np.int64(2), "accept"),  # a numpy integer is an integer
]:
    _label = type(_value).__name__
    add(
        f"type_{_name}_{_label}",
        TYPES,
        f"{_name}={_value!r} ({_label})",
        probe_config(_name, _value, _expect),
        quick=(_name, _label) == ("temperature", "str"),
        finding="20",
    )


# ---- enums and integers --------------------------------------------------------------------------------------------------

for _name, _value in [
    ("objective", "dpo"),
    ("loss_type", "hinge"),
    ("truncation_mode", "middle"),
    ("packed_attention", "sparse"),
    ("vllm_mode", "remote"),
    ("vllm_dtype", "int3"),
    ("optim", "nonsense_optimizer"),
    ("lr_scheduler_type", "nonsense_schedule"),
]:
    # transformers' own message for a bad schedule names the value and the choices, not the field
    _keys = ("nonsense_schedule", "select one of") if _name == "lr_scheduler_type" else None
    add(
        f"enum_{_name}",
        "configuration enums",
        f"{_name}={_value!r}",
        probe_config(_name, _value, keywords=_keys),
        quick=_name == "objective",
    )
add(
    "enum_plateau_with_restarts",
    "configuration enums",
    "lr_scheduler_type='reduce_lr_on_plateau' with restart_each_iteration",
    probe_config("lr_scheduler_type", "reduce_lr_on_plateau"),
)
for _name, _value in [
    ("num_iterations", 0),
    ("num_iterations", -1),
    ("num_iterations", "3"),
    ("epochs_per_iteration", 0),
    ("max_completion_length", 0),
    ("max_length", 1),
    ("max_prompt_length", 0),
    ("max_prompt_length", 64),
    ("top_k", -1),
    ("generation_batch_size", 0),
    ("logps_batch_size", 0),
    ("pad_to_multiple_of", 0),
    ("per_device_train_batch_size", 0),
    ("gradient_accumulation_steps", 0),
    ("vllm_server_port", 0),
    ("vllm_tensor_parallel_size", 0),
    ("dataloader_persistent_workers", True),
]:
    add(
        f"int_{_name}_{_value}",
        "configuration integers",
        f"{_name}={_value!r}",
        probe_config(_name, _value),
        quick=_name in ("num_iterations", "per_device_train_batch_size"),
    )
add(
    "int_max_completion_length_huge",
    "configuration integers",
    "max_completion_length=200 with max_length=64 (97% of generated tokens cut)",
    probe_config("max_completion_length", 200, expect="warn"),
    finding="7",
)


@case("configuration integers", "generation_kwargs={'nonsense_kw': 1} (a typo in a generate() argument)")
def generation_kwargs_typo(ctx):
    return expect_error(lambda: make_trainer(ctx.out, generation_kwargs={"nonsense_kw": 1}).train(), "nonsense_kw")


@case("configuration integers", "objective='tspin_ref' with mix_previous_iteration=True (a legal combination)")
def tspin_ref_with_mixing(ctx):
    return run_and_judge(ctx, None, objective="tspin_ref", mix_previous_iteration=True)


@case(
    "configuration integers",
    "reuse_proto_as_first_synthetic=False (iteration 0 samples its own synthetic responses), a fresh run, empty cache",
)
def reuse_proto_false_trains(ctx):
    return run_and_judge(ctx, None, reuse_proto_as_first_synthetic=False)


@case("configuration integers", "max_steps=3 with num_iterations=2 (training ends inside iteration 0)")
def max_steps_short(ctx):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verdict = run_and_judge(ctx, None, max_steps=3)
    text = [str(w.message) for w in caught if "max_steps" in str(w.message)]
    if verdict.outcome in (SURVIVED, WARNED) and text:
        return Verdict(WARNED, text[0], verdict.detail)
    return verdict if verdict.outcome == DEFECT else Verdict(DEFECT, "no warning that iterations are skipped")


# ---- settings changed on trainer.args after construction ---------------------------------------------------------------
#
# `train()` reads the settings as it starts: a change takes effect (the result equals a trainer built with it) or is
# refused naming the field. Either is right; a change half applied, silently ignored, or not validated is a defect.


def changed_after(
    change: dict[str, Any], built_with: dict[str, Any] | None = None, refused: tuple[str, ...] = ()
) -> Callable[[Ctx], Verdict]:
    """A trainer built with `built_with`, then `trainer.args` changed by `change`, then `train()`. `refused`: the
    change must be refused with these words; otherwise the result must equal a trainer built with the change (or the
    change refused naming its field)."""
    built_with = built_with or {}
    field = next(iter(change))

    def run(ctx):
        trainer = make_trainer(ctx.out, **built_with)
        for name, value in change.items():
            setattr(trainer.args, name, value)
        try:
            trainer.train()
        except Exception as error:  # noqa: BLE001
            return classify_error(error, refused or (field,))
        if refused:
            return Verdict(DEFECT, f"trainer.args.{field}={change[field]!r} set after construction was trained on")
        return judge_run(ctx, trainer, baseline(**(built_with | change)), note="the change took effect")

    return run


for _label, _change, _built, _refused in [
    ("num_iterations_3_to_2", {"num_iterations": 2}, {"num_iterations": 3}, ()),
    ("num_iterations_1_to_2", {"num_iterations": 2}, {"num_iterations": 1}, ()),
    ("num_iterations_2_to_1", {"num_iterations": 1}, {}, ()),
    ("num_iterations_0", {"num_iterations": 0}, {}, ("num_iterations",)),
    ("alpha_negative", {"alpha": -1.0}, {}, ("alpha",)),
    ("alpha_half", {"alpha": 0.5}, {}, ()),
    ("beta_string", {"beta": "0.2"}, {}, ("beta",)),
    ("temperature_nan", {"temperature": math.nan}, {}, ("temperature",)),
    ("temperature_half", {"temperature": 0.5}, {}, ()),
    ("objective_spin", {"objective": "spin"}, {}, ()),
    ("objective_tspin_ref", {"objective": "tspin_ref"}, {}, ()),
    ("objective_typo", {"objective": "tspn"}, {}, ("objective",)),
    ("learning_rate", {"learning_rate": 5e-4}, {}, ()),
    ("max_length", {"max_length": 48}, {}, ("max_length", "new TSPINTrainer")),
    ("mix_previous_iteration", {"mix_previous_iteration": True}, {}, ("mix_previous_iteration",)),
    ("generation_batch_size", {"generation_batch_size": 8}, {}, ()),
    ("max_completion_length", {"max_completion_length": 8}, {}, ()),
    ("reuse_proto", {"reuse_proto_as_first_synthetic": False}, {}, ()),
    ("seed", {"seed": 7}, {}, ()),
    ("per_device_train_batch_size", {"per_device_train_batch_size": 4}, {}, ()),
    ("gradient_accumulation_steps", {"gradient_accumulation_steps": 2}, {}, ()),
    ("epochs_per_iteration", {"epochs_per_iteration": 2}, {}, ()),
]:
    add(
        f"after_{_label}",
        AFTER,
        f"built with {_built or 'the defaults'}, then trainer.args: {_change}",
        changed_after(_change, _built, _refused),
        quick=_label in ("num_iterations_3_to_2", "alpha_negative"),
        finding="20",
    )


@case(AFTER, "trainer.args.output_dir changed after construction (checkpoints and self_play/ must stay together)")
def after_output_dir(ctx):
    trainer = make_trainer(ctx.out, **{"save_strategy": "steps", "save_steps": 4})
    moved = ctx.tmp / "moved"
    trainer.args.output_dir = str(moved)
    try:
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("output_dir",))
    new, old = RunFolder(str(moved)), RunFolder(str(ctx.out))
    where = {
        "checkpoints": sorted(p.parent.name for p in Path(moved).glob("checkpoint-*/trainer_state.json")),
        "self_play in the new output_dir": Path(new.identity_path).is_file(),
        "self_play in the old output_dir": Path(old.identity_path).is_file(),
    }
    if where["self_play in the old output_dir"] or not where["self_play in the new output_dir"]:
        return Verdict(
            DEFECT,
            "split run: the checkpoints went to the new output_dir, self_play/ (identity, iteration files, lock) to "
            f"the one the trainer was built with ({where}); a resume in either folder lacks half of the run",
        )
    return judge_run(ctx, trainer, baseline(), note=str(where))


@case(AFTER, "trainer.args replaced by a new TSPINConfig (num_iterations=1) after construction", quick=True)
def after_args_object_replaced(ctx):
    trainer = make_trainer(ctx.out)
    trainer.args = config(ctx.out, num_iterations=1)
    try:
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("args",))
    steps = trainer.state.global_step
    verdict = judge_run(ctx, trainer, baseline(num_iterations=1), note=f"{steps} steps")
    if verdict.outcome == DEFECT:
        identity = RunFolder(str(ctx.out)).identity_path
        recorded = Path(identity).read_text() if Path(identity).is_file() else ""
        iterations = '"num_iterations": 1' if '"num_iterations": 1' in recorded else "not 1"
        verdict.message += f" ({steps} steps; run.json records num_iterations {iterations})"
    return verdict


@case(AFTER, "trainer.args.max_steps=3 set after construction (training ends inside iteration 0)")
def after_max_steps_short(ctx):
    trainer = make_trainer(ctx.out)
    trainer.args.max_steps = 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.train()
        except Exception as error:  # noqa: BLE001
            return classify_error(error, ("max_steps",))
    text = [str(w.message) for w in caught if "max_steps" in str(w.message)]
    text += [line for line in ctx.warnings_text().splitlines() if "max_steps" in line]
    if text:
        return Verdict(WARNED, text[0], f"{trainer.state.global_step} steps")
    return Verdict(
        DEFECT,
        f"stopped after {trainer.state.global_step} of 8 steps, inside iteration 0, without the warning a trainer "
        "built with max_steps=3 gives",
    )


# ---- issue 32: generation_kwargs checked like every other field; settings the run ignores; a plain TrainingArguments


for _label, _kwargs, _keywords in [
    ("num_beams_negative", {"num_beams": -1}, ("generation_kwargs", "num_beams")),
    ("max_new_tokens_str", {"max_new_tokens": "x"}, ("generation_kwargs", "max_new_tokens")),
    ("repetition_penalty_negative", {"repetition_penalty": -1.0}, ("generation_kwargs", "repetition_penalty")),
    ("pad_token_id", {"pad_token_id": 0}, ("generation_kwargs", "pad_token_id", "set by the trainer")),
    ("two_sequences_sampling", {"num_return_sequences": 2, "do_sample": True}, ("num_return_sequences", "one")),
    ("two_sequences_beams", {"num_return_sequences": 2, "num_beams": 2}, ("num_return_sequences", "one")),
]:
    add(
        f"generation_kwargs_{_label}",
        "configuration integers",
        f"generation_kwargs={_kwargs}",
        probe_config("generation_kwargs", _kwargs, keywords=_keywords),
        quick=_label == "two_sequences_sampling",
        finding="32",
    )


@case(
    "configuration integers",
    "prompt_selection_threshold=10 with num_iterations=1 (selection has no effect)",
    finding="32",
)
def selection_with_one_iteration(ctx):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verdict = run_and_judge(ctx, None, num_iterations=1, prompt_selection_threshold=10.0)
    text = [str(w.message) for w in caught if "prompt_selection_threshold" in str(w.message)]
    if verdict.outcome in (SURVIVED, WARNED) and text:
        return Verdict(WARNED, text[0], verdict.detail)
    return verdict if verdict.outcome == DEFECT else Verdict(DEFECT, "accepted without a word that it has no effect")


@case(AFTER, "trainer.args replaced by a plain TrainingArguments after construction", finding="32")
def after_args_plain_training_arguments(ctx):
    from transformers import TrainingArguments

    trainer = make_trainer(ctx.out)
    trainer.args = TrainingArguments(output_dir=str(ctx.out), use_cpu=True, report_to=[])
    return expect_error(trainer.train, "TrainingArguments", "TSPINConfig")
