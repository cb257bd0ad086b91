"""`tspin_trl/scripts/parser.py`: `train`'s flags, their grouped `--help` and its closing first command."""


def test_help_lists_tspin_options_first_and_ends_with_the_first_command(capsys):
    from tspin_trl.cli import main as cli_main
    from tspin_trl.scripts.parser import FIRST_COMMAND

    assert cli_main(["train", "--help"]) == 0  # printed from the recorded page (tests/unit/test_scripts_help.py)
    text = capsys.readouterr().out
    assert text.startswith("usage: tspin-trl train [--config FILE] [--model_name_or_path MODEL]")
    flags, epilog = text.split("\nFirst run (offline")
    groups = [line for line in flags.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert groups[:3] == [
        "options:",
        "T-SPIN: self-play, loss, generation (TSPINConfig's own options):",
        "training: TRL options whose default T-SPIN changes (TSPINConfig):",
    ]
    assert groups[-1] == "training: inherited from TRL and transformers (TrainingArguments):"
    first_group = text.split(groups[1])[1].split(groups[2])[0]
    for flag in ("--objective", "--alpha", "--beta", "--num_iterations", "--max_completion_length", "--use_vllm"):
        assert f"  {flag} " in first_group, flag
    for flag in ("--per_device_train_batch_size", "--learning_rate"):  # TRL's own flags: not in T-SPIN's group
        assert f"  {flag} " not in first_group, flag
    assert FIRST_COMMAND in epilog and "--debug" in epilog and "docs/cli.md" in epilog


def test_plain_text_flags_come_from_the_config_and_are_in_the_help(capsys):
    """`--response_template` (and SFT's `--dataset_text_field`) are TSPINConfig fields: `tspin-trl train` has them in
    T-SPIN's group, and TRL's scripts renamed to TSPINConfig have them too."""
    from tspin_trl.cli import main as cli_main
    from tspin_trl.scripts.train import make_parser

    parsed = make_parser().parse_args_and_config(
        ["--output_dir", "out", "--response_template", "paper", "--dataset_text_field", "content"]
    )
    config = next(value for value in parsed if type(value).__name__ == "TSPINConfig")
    assert (config.response_template, config.dataset_text_field) == ("paper", "content")
    assert cli_main(["train", "--help"]) == 0
    first_group = capsys.readouterr().out.split("T-SPIN: self-play, loss, generation")[1].split("training: TRL")[0]
    assert "  --response_template " in first_group and "  --dataset_text_field " in first_group
