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
