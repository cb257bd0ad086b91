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
