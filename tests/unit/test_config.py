"""`tspin_trl/config.py`: `TSPINConfig`'s defaults (the paper's), validation (every bad value names its field: non-finite,
absurd, mistyped, schedules, vLLM fields), parsing from the command line and YAML, and DPOConfig's and SFTConfig's
fields (and a TrainingArguments or SFTConfig converted)."""

import re

import pytest

from tspin_trl import TSPINConfig


def test_defaults_follow_the_paper(tmp_path):
    args = TSPINConfig(output_dir=str(tmp_path), report_to=[])
    assert (args.alpha, args.beta, args.beta_first_iteration) == (1.0, 0.1, 0.0)
    assert (args.loss_type, args.objective) == ("sigmoid", "tspin")
    assert args.learning_rate == 5e-7 and args.warmup_steps == 0.1
    assert args.get_warmup_steps(100) == 10  # a share of all steps, as in the paper
    assert args.real_nll_weight == 0.0
    assert args.bf16 is False  # no bf16-capable accelerator on the test machine


def test_epochs_follow_the_iterations(tmp_path):
    args = TSPINConfig(output_dir=str(tmp_path), num_iterations=4, epochs_per_iteration=2, report_to=[])
    assert args.num_train_epochs == 8
    with pytest.warns(UserWarning, match="num_train_epochs=7"):
        TSPINConfig(output_dir=str(tmp_path), num_train_epochs=7, report_to=[])


@pytest.mark.parametrize(
    "field, value",
    [
        ("objective", "dpo"),
        ("loss_type", "hinge"),
        ("truncation_mode", "middle"),
        ("multi_turn_completions", "all"),
        ("alpha", 0.0),
        ("beta", -0.1),
        ("beta_first_iteration", -1.0),
        ("real_nll_weight", -1.0),
        ("max_length", 1),
        ("max_prompt_length", 0),
        ("max_completion_length", 0),
        ("num_iterations", 0),
        ("epochs_per_iteration", 0),
        ("temperature", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("generation_batch_size", 0),
        ("logps_batch_size", 0),
        ("pad_to_multiple_of", 0),
        ("dataloader_persistent_workers", True),
    ],
)
def test_invalid_values_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"TSPINConfig.{field}="):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], **{field: value})


def test_prompt_length_must_leave_room(tmp_path):
    with pytest.raises(ValueError, match="max_prompt_length=512 is invalid: it must be smaller than max_length=512"):
        TSPINConfig(output_dir=str(tmp_path), max_length=512, max_prompt_length=512, report_to=[])


def test_parses_from_the_command_line(tmp_path):
    from trl import TrlParser

    (args,) = TrlParser((TSPINConfig,)).parse_args_and_config(
        [
            "--output_dir",
            str(tmp_path),
            "--beta",
            "0.3",
            "--objective",
            "spin",
            "--generation_kwargs",
            '{"repetition_penalty": 1.1}',
            "--report_to",
            "none",
        ]
    )
    assert args.beta == 0.3 and args.objective == "spin"
    assert args.generation_kwargs == {"repetition_penalty": 1.1}


# ---- fields of TRL's DPOConfig, carried over by a migrating user -------------------------------------------------


def dpo_defaults() -> dict:
    """Every field DPOConfig adds to TRL's base config, at DPO's default (the learning rate aside)."""
    import dataclasses

    from trl import DPOConfig
    from trl.trainer.base_config import _BaseConfig

    base = {spec.name for spec in dataclasses.fields(_BaseConfig)} | {"learning_rate"}
    return {
        spec.name: spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        for spec in dataclasses.fields(DPOConfig)
        if spec.name not in base
    }


def test_a_dpo_config_at_its_defaults_is_accepted(tmp_path):
    kwargs = dpo_defaults()
    assert {"precompute_ref_log_probs", "padding_free", "loss_type", "pad_to_multiple_of"} <= set(kwargs)
    args = TSPINConfig(output_dir=str(tmp_path), report_to=[], **kwargs)
    assert args.loss_type == "sigmoid" and args.pad_to_multiple_of is None
    assert (args.max_length, args.truncation_mode) == (1024, "keep_start")  # DPO's values, both meaningful here


@pytest.mark.parametrize("value", [True, False])
def test_precompute_ref_log_probs_is_what_tspin_always_does(tmp_path, value):
    args = TSPINConfig(
        output_dir=str(tmp_path), report_to=[], objective="spin", precompute_ref_log_probs=value,
        precompute_ref_batch_size=16,
    )  # fmt: skip
    assert args.logps_batch_size == 16
    with pytest.raises(ValueError, match="precompute_ref_batch_size=16 is invalid: it is DPO's name for"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], precompute_ref_batch_size=16, logps_batch_size=8)


def test_padding_free_is_the_packed_layout(tmp_path):
    assert TSPINConfig(output_dir=str(tmp_path), report_to=[], padding_free=True).share_prompt is True
    with pytest.raises(ValueError, match="padding_free=True is invalid: it maps to `share_prompt=True`"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], padding_free=True, share_prompt=False)


@pytest.mark.parametrize(
    "loss_type, message",
    [
        ("ipo", r"loss_type='ipo' is invalid: it is a DPO loss T-SPIN does not have. .*\['sigmoid', 'exponential'\]"),
        (["sigmoid", "sft"], r"DPO's loss mixtures have no counterpart"),
    ],
)
def test_dpo_loss_types(tmp_path, loss_type, message):
    assert TSPINConfig(output_dir=str(tmp_path), report_to=[], loss_type=["exponential"]).loss_type == "exponential"
    with pytest.raises(ValueError, match=message):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], loss_type=loss_type)


@pytest.mark.parametrize(
    "field, value, counterpart",
    [
        ("loss_weights", [0.8, 0.2], "weighted by `beta`"),
        ("ld_alpha", 0.5, "summed log-probs"),
        ("f_divergence_type", "js_divergence", "reverse-KL"),
        ("f_alpha_divergence_coef", 0.3, "f-divergence"),
        ("label_smoothing", 0.1, "label smoothing"),
        ("use_weighting", True, "WPO"),
        ("discopop_tau", 0.1, "DiscoPOP"),
        ("activation_offloading", True, "gradient_checkpointing"),
        ("sync_ref_model", True, "refreshed every iteration"),
        ("ref_model_mixup_alpha", 0.9, "sync_ref_model"),
        ("ref_model_sync_steps", 64, "once per iteration"),
        ("pad_token", "<pad>", "tokenizer.pad_token"),
    ],
)
def test_dpo_fields_without_counterpart_name_the_field_and_the_alternative(tmp_path, field, value, counterpart):
    with pytest.raises(ValueError, match=rf"TSPINConfig\.{field}=.* is invalid: .*{re.escape(counterpart)}"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], **{field: value})


def test_a_dpo_yaml_config_parses(tmp_path):
    from trl import TrlParser

    config = tmp_path / "dpo.yaml"
    config.write_text(
        f"output_dir: {tmp_path}\nreport_to: none\nloss_type: [sigmoid]\nprecompute_ref_log_probs: true\n"
        "padding_free: true\npad_to_multiple_of: auto\ntruncation_mode: keep_start\nmax_length: 512\n"
    )
    (args,) = TrlParser((TSPINConfig,)).parse_args_and_config(["--config", str(config)])
    assert (args.loss_type, args.share_prompt, args.pad_to_multiple_of, args.max_length) == (
        "sigmoid",
        True,
        None,
        512,
    )


# ---- values and types: every refused one names its field -----------------------------------------------------


@pytest.mark.parametrize(
    "field", ["alpha", "beta", "beta_first_iteration", "real_nll_weight", "learning_rate", "max_grad_norm", "top_p"]
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_settings_are_refused_with_the_field_named(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"TSPINConfig.{field}=.*finite"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **{field: value})


@pytest.mark.parametrize("field", ["alpha", "beta", "real_nll_weight", "temperature"])
def test_absurd_magnitudes_are_refused(tmp_path, field):
    with pytest.raises(ValueError, match=f"TSPINConfig.{field}=1e\\+30 is invalid: it must be <= 100"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **{field: 1e30})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_iterations", "3", "must be an integer"),
        ("per_device_train_batch_size", 0, ">= 1"),
        ("gradient_accumulation_steps", 0, ">= 1"),
        ("weight_decay", -0.1, r"in \[0, 1\]"),
        ("weight_decay", 1e30, r"in \[0, 1\]"),
        ("warmup_steps", 1e30, "number of steps up to"),
    ],
)
def test_settings_the_campaign_found_accepted_are_refused(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=f"TSPINConfig.{field}=.*{message}"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **{field: value})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", "0.7", "TSPINConfig.temperature='0.7' is invalid: it must be a number, got str"),
        ("learning_rate", "1e-4", "TSPINConfig.learning_rate='1e-4' is invalid: it must be a number"),
        ("alpha", None, "TSPINConfig.alpha=None is invalid: it must be a number, got NoneType"),
        ("beta", "0.1", "TSPINConfig.beta='0.1' is invalid"),
        ("top_p", None, "TSPINConfig.top_p=None is invalid"),
        ("max_grad_norm", -1.0, "TSPINConfig.max_grad_norm=-1.0 is invalid: it must be >= 0"),
    ],
)
def test_float_fields_are_typed_like_integer_ones(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **{field: value})


def test_numpy_numbers_are_numbers(tmp_path):
    import numpy as np

    config = TSPINConfig(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, alpha=np.float32(0.5), num_iterations=np.int64(2)
    )
    assert (config.alpha, config.num_iterations) == (0.5, 2)
    assert type(config.alpha) is float and type(config.num_iterations) is int


# ---- the paper's recipe, schedules, vLLM fields ------------------------------------------------------------------


def test_the_run_defaults_follow_the_paper(tmp_path):
    from tspin_trl import TSPINConfig

    args = TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    assert (args.learning_rate, args.warmup_steps, args.optim.value, args.weight_decay) == (5e-7, 0.1, "rmsprop", 0.0)
    assert (args.alpha, args.beta, args.beta_first_iteration, args.loss_type) == (1.0, 0.1, 0.0, "sigmoid")
    assert (args.num_iterations, args.max_length, args.max_completion_length) == (5, 2048, 256)
    assert (args.temperature, args.top_p, args.restart_each_iteration, args.mix_previous_iteration) == (
        1.0,
        1.0,
        True,
        False,
    )


def config(tmp_path, **kwargs) -> TSPINConfig:
    return TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, num_iterations=3, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"alpha_schedule": [1.0, 1.0]},
            r"alpha_schedule=\[1.0, 1.0\] is invalid: it has 2 values for num_iterations=3",
        ),
        ({"beta_schedule": [0.1, 0.1, 0.1, 0.1]}, "it has 4 values for num_iterations=3"),
        ({"learning_rate_schedule": [1.0, float("nan"), 1.0]}, r"value 1 \(nan\) must be a finite number"),
        ({"alpha_schedule": [1.0, float("inf"), 1.0]}, "must be a finite number"),
        ({"learning_rate_schedule": [1.0, 0.0, 1.0]}, r"value 1 \(0.0\) must be > 0"),
        ({"alpha_schedule": [1.0, 1.0, 0.0]}, r"value 2 \(0.0\) must be > 0 and <= 100"),
        ({"alpha_schedule": [1.0, 1.0, 1e3]}, "must be > 0 and <= 100"),
        ({"beta_schedule": [0.0, -0.1, 0.1]}, r"value 1 \(-0.1\) must be >= 0 and <= 100"),
        ({"beta_schedule": [0.0, True, 0.1]}, r"value 1 \(True\) is not a number"),
        ({"beta_schedule": [0.0, "0.1", 0.1]}, r"value 1 \('0.1'\) is not a number"),
        ({"beta_schedule": "0.1 0.1 0.1"}, "it must be a list of 3 numbers"),
        ({"learning_rate_schedule": [1.0, 1.0, 5.0], "learning_rate": 0.5}, "an iteration would train at 2.5"),
        ({"alpha_schedule": [1.0, 1.0, 1.0], "alpha": 0.5}, "TSPINConfig.alpha=0.5 is invalid: alpha_schedule sets"),
        ({"beta_schedule": [0.0, 0.1, 0.1], "beta_first_iteration": 0.1}, "beta_first_iteration=0.1 is invalid"),
        ({"beta_schedule": [0.0, 0.1, 0.1], "objective": "spin"}, "SPIN's own `beta` is its reward scale"),
        ({"prompt_selection_threshold": 0.0}, "prompt_selection_threshold=0.0 is invalid: it must be > 0"),
        (
            {"prompt_selection_threshold": float("inf")},
            "prompt_selection_threshold=inf is invalid: it must be a finite",
        ),
        ({"prompt_selection_threshold": 10.0, "objective": "spin"}, "prompt selection needs objective='tspin'"),
        ({"prompt_selection_threshold": 10.0, "objective": "tspin_ref"}, "prompt selection needs objective='tspin'"),
        ({"prompt_selection_min_share": 0.0}, r"prompt_selection_min_share=0.0 is invalid: it must be in \(0, 1\]"),
        ({"prompt_selection_min_share": 1.5}, r"it must be in \(0, 1\]"),
    ],
)
def test_invalid_schedules_and_selection_settings_name_the_field(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **kwargs)


def test_integer_values_become_floats_and_spin_accepts_a_zero_beta_schedule(tmp_path):
    args = config(tmp_path, learning_rate_schedule=[1, 1, 2], objective="spin", beta_schedule=[0, 0, 0])
    assert args.learning_rate_schedule == [1.0, 1.0, 2.0] and all(isinstance(v, float) for v in args.beta_schedule)


def test_schedules_parse_from_the_command_line_and_from_yaml(tmp_path):
    from trl import TrlParser

    (args,) = TrlParser((TSPINConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--num_iterations", "3", "--beta_schedule", "0.1", "0.1", "5.0"]
        + ["--learning_rate_schedule", "1", "1", "0.2", "--prompt_selection_threshold", "10", "--report_to", "none"]
    )
    assert args.beta_schedule == [0.1, 0.1, 5.0] and args.learning_rate_schedule == [1.0, 1.0, 0.2]
    assert args.prompt_selection_threshold == 10.0 and args.alpha_schedule is None
    path = tmp_path / "config.yaml"
    path.write_text("num_iterations: 3\nalpha_schedule: [0.1, 0.1, 5]\nlearning_rate_schedule: [1, 1, 0.2]\n")
    (args,) = TrlParser((TSPINConfig,)).parse_args_and_config(
        ["--config", str(path), "--output_dir", str(tmp_path), "--report_to", "none"]
    )
    assert args.alpha_schedule == [0.1, 0.1, 5.0] and args.learning_rate_schedule == [1.0, 1.0, 0.2]


def test_vllm_config_fields_are_validated(tmp_path):
    for field, value in [
        ("vllm_mode", "remote"),
        ("vllm_dtype", "int8"),
        ("vllm_gpu_memory_utilization", 0.0),
        ("vllm_gpu_memory_utilization", float("nan")),
        ("vllm_tensor_parallel_size", 0),
        ("vllm_server_timeout", float("inf")),
        ("vllm_server_port", 70000),
        ("vllm_max_model_length", 0),
    ]:
        with pytest.raises(ValueError, match=field):
            TSPINConfig(output_dir=str(tmp_path), use_cpu=True, use_vllm=True, **{field: value})
    with pytest.raises(ValueError, match="vllm_enable_sleep_mode"):
        TSPINConfig(
            output_dir=str(tmp_path), use_cpu=True, use_vllm=True, vllm_mode="server", vllm_enable_sleep_mode=True
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_beams": -1}, "'num_beams' must be >= 1, got -1"),
        ({"max_new_tokens": "x"}, r"'max_new_tokens' must be an integer, got str \('x'\)"),
        ({"repetition_penalty": 0.0}, "'repetition_penalty' must be > 0.0"),
        ({"top_p": float("nan")}, "'top_p' must be a finite number"),
        ({"do_sample": "yes"}, "'do_sample' must be True or False"),
        ({"pad_token_id": 3}, "'pad_token_id' is set by the trainer"),
        (
            {"num_return_sequences": 2, "do_sample": True},
            "'num_return_sequences': 2 makes `generate` return that many",
        ),
        ({"num_return_sequences": 2, "num_beams": 2}, "self-play pairs each prompt with one response"),
        ({"return_dict_in_generate": True}, "return a dict, not the token ids"),
    ],
)
def test_generation_kwargs_are_validated_like_every_other_field(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=rf"TSPINConfig.generation_kwargs=.* is invalid: .*{message}"):
        TSPINConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], generation_kwargs=kwargs)
    args = TSPINConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    args.generation_kwargs = kwargs  # set after construction: `train()` validates again
    with pytest.raises(ValueError, match="generation_kwargs"):
        args.validate()


def test_legal_generation_kwargs_are_kept_and_a_json_string_is_checked_too(tmp_path):
    import numpy as np

    args = TSPINConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], generation_kwargs={"num_beams": np.int64(2)}
    )
    assert args.generation_kwargs == {"num_beams": 2} and type(args.generation_kwargs["num_beams"]) is int
    unknown = {
        "forced_eos_token_id": 2
    }  # keys it does not know go to `generate` (the preflight runs it before step 0)
    assert (
        TSPINConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], generation_kwargs=unknown).generation_kwargs
        == unknown
    )
    with pytest.raises(ValueError, match="'num_beams' must be >= 1"):
        TSPINConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], generation_kwargs='{"num_beams": 0}')


def test_settings_without_effect_in_the_configured_run_are_warned(tmp_path):
    with pytest.warns(UserWarning, match=r"`prompt_selection_threshold=10.0` has no effect with num_iterations=1"):
        TSPINConfig(
            output_dir=str(tmp_path), use_cpu=True, report_to=[], num_iterations=1, prompt_selection_threshold=10.0
        )
    with pytest.warns(UserWarning, match=r"`mix_previous_iteration=True` has no effect with num_iterations=1"):
        TSPINConfig(
            output_dir=str(tmp_path), use_cpu=True, report_to=[], num_iterations=1, mix_previous_iteration=True
        )
    with pytest.warns(UserWarning, match=r"`prompt_selection_min_share=0.5` has no effect without"):
        TSPINConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], prompt_selection_min_share=0.5)
    args = TSPINConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], num_iterations=2, prompt_selection_threshold=10.0
    )
    assert args.settings_without_effect() == []


# ---- fields of TRL's SFTConfig, and a TrainingArguments or SFTConfig given as `args` ---------------------------


def sft_defaults() -> dict:
    """Every field SFTConfig adds to TRL's base config, at SFT's default (the learning rate aside)."""
    import dataclasses

    from trl import SFTConfig
    from trl.trainer.base_config import _BaseConfig

    base = {spec.name for spec in dataclasses.fields(_BaseConfig)} | {"learning_rate"}
    return {
        spec.name: spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        for spec in dataclasses.fields(SFTConfig)
        if spec.name not in base
    }


def test_an_sft_config_at_its_defaults_is_accepted_but_its_loss(tmp_path):
    kwargs = sft_defaults()
    assert {"packing", "completion_only_loss", "dataset_text_field", "chat_template_path"} <= set(kwargs)
    with pytest.raises(ValueError, match=r"loss_type='nll' is invalid: it is an SFTConfig loss .*real_nll_weight"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], **kwargs)
    args = TSPINConfig(output_dir=str(tmp_path), report_to=[], **{k: v for k, v in kwargs.items() if k != "loss_type"})
    assert (args.max_length, args.dataset_text_field, args.loss_type) == (1024, "text", "sigmoid")


@pytest.mark.parametrize(
    "kwargs", [{"completion_only_loss": True}, {"assistant_only_loss": True}, {"eval_packing": False}]
)
def test_sft_fields_that_say_what_tspin_does_are_accepted(tmp_path, kwargs):
    TSPINConfig(output_dir=str(tmp_path), report_to=[], **kwargs)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("packing", True, "share_prompt"),
        ("packing_strategy", "wrapped", "applies to `packing`"),
        ("shuffle_dataset", True, "new random order every epoch"),
        ("eval_packing", True, "packs no evaluation set"),
        ("completion_only_loss", False, "response tokens only"),
        ("dataset_kwargs", {"skip_prepare_dataset": True}, "completion_mask"),
        ("dataset_kwargs", {"add_special_tokens": False}, "only key is 'skip_prepare_dataset'"),
        ("loss_type", "dft", "per-term loss of its self-play objective"),
        ("response_template", "", "non-empty string"),
        ("dataset_text_field", None, "non-empty string"),
    ],
)
def test_sft_fields_without_counterpart_name_the_field_and_why(tmp_path, field, value, reason):
    with pytest.raises(ValueError, match=rf"TSPINConfig\.{field}=.* is invalid: .*{re.escape(reason)}"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], **{field: value})


def test_training_arguments_and_sft_configs_convert_other_configs_do_not(tmp_path):
    from transformers import TrainingArguments
    from trl import DPOConfig, SFTConfig

    args = TSPINConfig.from_training_arguments(
        TrainingArguments(output_dir=str(tmp_path), report_to=[], learning_rate=3e-4, hub_token="secret")
    )
    assert type(args) is TSPINConfig and (args.learning_rate, args.hub_token) == (3e-4, "secret")  # the given values
    sft = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, eos_token="<|end|>", max_length=256)
    args = TSPINConfig.from_training_arguments(sft)
    assert (args.loss_type, args.eos_token, args.max_length) == ("sigmoid", "<|end|>", 256)  # SFT's nll dropped
    assert (args.learning_rate, args.optim) == (sft.learning_rate, sft.optim)
    with pytest.raises(ValueError, match="loss_type='dft' is invalid"):
        TSPINConfig.from_training_arguments(
            SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, loss_type="dft")
        )
    with pytest.raises(TypeError, match="got DPOConfig. Build a TSPINConfig"):
        TSPINConfig.from_training_arguments(DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True))


def test_an_sft_yaml_config_with_a_response_template_parses(tmp_path):
    from trl import TrlParser

    config = tmp_path / "sft.yaml"
    config.write_text(
        f"output_dir: {tmp_path}\nreport_to: none\ndataset_text_field: content\nresponse_template: paper\n"
        "completion_only_loss: true\ndataset_kwargs: '{\"skip_prepare_dataset\": false}'\n"
    )
    (args,) = TrlParser((TSPINConfig,)).parse_args_and_config(["--config", str(config)])
    assert (args.dataset_text_field, args.response_template, args.dataset_kwargs) == (
        "content",
        "paper",
        {"skip_prepare_dataset": False},
    )
