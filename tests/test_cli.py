"""The `tspin-trl` command: train (TRL `dpo.py` parity: eval split, mixtures, local files), plot, env; the drop-in
test that runs the installed TRL's `dpo.py` with only the class names swapped; a `pip install` into a fresh venv."""

import gzip
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import venv
import warnings
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, IterableDatasetDict

from tspin_trl import TSPINConfig
from tspin_trl.scripts.train import load_named_dataset, make_parser


ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = [
    "--model_name_or_path",
    "preset:tiny",
    "--num_iterations",
    "1",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "4",
    "--max_completion_length",
    "8",
    "--max_length",
    "48",
    "--use_cpu",
    "true",
    "--report_to",
    "none",
    "--logging_steps",
    "1",
]


def rows(n: int, offset: int = 0) -> list[dict]:
    return [
        {"prompt": f"sort: {i} 3 1\n", "completion": " ".join(sorted(f"{i}31"))} for i in range(offset, offset + n)
    ]


def run(command, tmp_path, env=None, timeout=600):
    full_env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "proto"), TSPIN_TRL_MODELS=str(tmp_path / "models"))
    full_env.update(env or {})
    completed = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return completed


def logged(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "self_play" / "logs.jsonl").open()]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".jsonl.gz", ".parquet", ".csv"])
def test_a_local_file_in_any_format_loads_as_the_train_split(tmp_path, suffix):
    dataset = Dataset.from_list(rows(3))
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl.gz":
        dataset.to_json(tmp_path / "plain.jsonl")
        path.write_bytes(gzip.compress((tmp_path / "plain.jsonl").read_bytes()))
    elif suffix == ".json":
        dataset.to_json(path, lines=False)
    else:
        getattr(dataset, {".jsonl": "to_json", ".parquet": "to_parquet", ".csv": "to_csv"}[suffix])(path)
    (tmp_path / "other.csv").write_text("unrelated,columns\n1,2\n")  # a neighbour file must not be picked up
    loaded = load_named_dataset(str(path), split="train_sft")
    assert list(loaded) == ["train_sft"]
    assert loaded["train_sft"].to_list() == dataset.to_list()
    streamed = load_named_dataset(str(path), streaming=True)
    assert isinstance(streamed, IterableDatasetDict) and next(iter(streamed["train"])) == rows(1)[0]


def test_train_with_a_test_split_logs_eval_metrics_and_a_card_without_broken_links(tmp_path):
    data = tmp_path / "pc"
    data.mkdir()
    Dataset.from_list(rows(8)).to_json(data / "train.jsonl")
    Dataset.from_list(rows(4, offset=8)).to_json(data / "test.jsonl")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tspin_trl", "train", *TINY_RUN, "--dataset_name", str(data)]
    completed = run([*command, "--output_dir", str(out), "--eval_strategy", "steps", "--eval_steps", "1"], tmp_path)
    assert "`gradient_checkpointing` is deprecated" not in completed.stderr  # TRL's default, under its new name
    evals = [entry for entry in logged(out) if "eval_loss" in entry]
    assert len(evals) == 2 and all("eval_logps/real" in entry for entry in evals)
    card = (out / "README.md").read_text()
    assert "huggingface.co/None" not in card and "huggingface.co/datasets" not in card
    assert "`tiny` (a local model) on `pc` (local)" in card and 'model="None"' not in card
    assert "2601.08198" in card and "results.md" in os.listdir(out)
    assert "scores.jsonl" not in (out / "results.md").read_text()  # no scorer: no link to scores
    assert "The full table: " in completed.stdout and "### T-SPIN settings" in card

    # `tspin-trl plot` on that run
    run([sys.executable, "-m", "tspin_trl", "plot", str(out), "--out", str(tmp_path / "plots")], tmp_path)
    assert (tmp_path / "plots" / "summary.md").is_file()


def test_train_with_a_dataset_mixture_from_the_yaml(tmp_path):
    Dataset.from_list(rows(6)).to_parquet(tmp_path / "a.parquet")
    Dataset.from_list(rows(6, offset=6)).to_json(tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress((tmp_path / "b.jsonl").read_bytes()))
    config = {
        "datasets": [
            {"path": "parquet", "data_files": str(tmp_path / "a.parquet")},
            {"path": "json", "data_files": str(tmp_path / "b.jsonl.gz"), "columns": ["prompt", "completion"]},
        ],
        "test_split_size": 4,
        "eval_strategy": "epoch",
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(config))
    run([sys.executable, "-m", "tspin_trl", "train", "--config", str(tmp_path / "mix.yaml"), *TINY_RUN], tmp_path)
    entries = logged(tmp_path / "out")
    assert sum(entry.get("self_play/iteration") == 0 and "loss" in entry for entry in entries) == 2  # 8 rows / 4
    assert any("eval_loss" in entry for entry in entries)
    assert "on `a.parquet` (local), `b.jsonl.gz` (local)." in (tmp_path / "out" / "README.md").read_text()


def test_env_prints_the_versions_of_a_bug_report(tmp_path):
    from importlib.metadata import version

    from tspin_trl.cli import TESTED_ON, TESTED_VERSIONS

    completed = run([sys.executable, "-m", "tspin_trl", "env"], tmp_path)
    for line in (
        "- tspin-trl version: 0.1.0",
        f"- TRL version: {version('trl')}",
        f"- Transformers version: {version('transformers')}",
        f"- Accelerate version: {version('accelerate')}",
        f"- Tested on: {TESTED_ON}\n  - oldest: trl {TESTED_VERSIONS['oldest']['trl']}, transformers ",
        "- Outside the tested versions: none",  # every environment the tests run in is a tested one
    ):
        assert line in completed.stdout, completed.stdout
    assert "- accelerator(s): " in completed.stdout and "- PEFT version: " in completed.stdout


def test_unknown_command_fails_with_the_usage(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "tspin_trl", "tran"], capture_output=True, text=True)
    assert completed.returncode == 2 and "usage: tspin-trl [--version] {train,plot,env}" in completed.stderr
    assert completed.stderr.startswith("tspin-trl: unknown command 'tran' (did you mean 'train'?)")


def test_defaults_and_shipped_configs_raise_no_deprecation_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = TSPINConfig(output_dir=str(tmp_path))
        for name in ("tiny", "demo", "paper_zephyr", "spin_scripts", "nemo_annealing"):
            args = ["--config", str(ROOT / "examples" / "configs" / f"{name}.yaml"), "--bf16", "false"]
            make_parser().parse_args_and_config(args=args)
    messages = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert messages == []
    assert config.activation_checkpointing is True and config.gradient_checkpointing is True  # TRL's default
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):  # the old name, set by the user, still warns
        assert TSPINConfig(output_dir=str(tmp_path), gradient_checkpointing=False).activation_checkpointing is False


def converted_trl_dpo_script() -> str:
    """The installed TRL's `trl/scripts/dpo.py`, with DPOTrainer/DPOConfig swapped for TSPINTrainer/TSPINConfig."""
    source = Path(importlib.util.find_spec("trl.scripts.dpo").origin).read_text()
    assert source.count("DPOTrainer") == 2 and source.count("DPOConfig") == 2, "TRL's dpo.py changed shape"
    source = source.replace("DPOTrainer", "TSPINTrainer").replace("DPOConfig", "TSPINConfig")

    def move_import(match: re.Match) -> str:  # `from trl import A, TSPINX, B` -> two imports
        indent, names = match.group(1), [name.strip() for name in match.group(2).split(",")]
        ours = [name for name in names if name.startswith("TSPIN")]
        rest = [name for name in names if not name.startswith("TSPIN")]
        return f"{indent}from tspin_trl import {', '.join(ours)}\n{indent}from trl import {', '.join(rest)}"

    source, count = re.subn(r"^( *)from trl import (.*TSPIN.*)$", move_import, source, flags=re.MULTILINE)
    assert count == 2
    return source


def test_installed_trl_dpo_script_runs_with_the_classes_swapped(tmp_path):
    from tspin_trl.demo import save_tiny_preset

    model = save_tiny_preset(tmp_path / "tiny")
    data = tmp_path / "data"
    data.mkdir()
    Dataset.from_list(
        [{"prompt": f"sort: {i} 2 1\n", "chosen": f"1 2 {i}", "rejected": "x"} for i in range(4)]
    ).to_json(data / "train.jsonl")
    script = tmp_path / "dpo_tspin.py"
    script.write_text(converted_trl_dpo_script())
    args = ["--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(tmp_path / "out")]
    args += ["--per_device_train_batch_size", "2", "--num_iterations", "1", "--max_completion_length", "8"]
    args += ["--max_length", "48", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no"]
    completed = run([sys.executable, str(script), *args, "--activation_checkpointing", "false"], tmp_path)
    assert "Training completed" in completed.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_then_train_outside_the_checkout(tmp_path):
    """
    A real `pip install` of this checkout (pip builds a wheel from a copy of it, setuptools fetched in its isolated
    build environment) into a new venv, then `tspin-trl` from a folder that is not the repository.

    To stay fast and offline for the heavy dependencies, the new venv reads this test environment's site-packages
    through a `.pth` file and tspin-trl is installed with `--no-deps`. Only that folder is added, not its `.pth` files,
    so the checkout's editable install is invisible: the test asserts `tspin_trl` is imported from the new venv.
    """
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    # The checkout's editable install must not shadow the wheel: only the dependencies' folder is shared.
    ours = subprocess.check_output([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site.decode().strip(), "deps.pth").write_text(ours.decode().strip() + "\n")
    checkout = tmp_path / "checkout"  # a copy without build artefacts, as pip would see a clean clone
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(".venv", ".cache", "outputs", "*.egg-info", ".git"))
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(checkout)], tmp_path)
    shutil.rmtree(checkout)

    work = tmp_path / "elsewhere"
    work.mkdir()
    origin = run([str(python), "-c", "import tspin_trl; print(tspin_trl.__file__)"], work).stdout.strip()
    assert origin.startswith(str(env_dir)), origin
    # the license travels with the wheel
    installed_license = Path(site.decode().strip(), "tspin_trl-0.1.0.dist-info", "licenses", "LICENSE")
    assert installed_license.read_text() == (ROOT / "LICENSE").read_text()
    assert (ROOT / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    tspin_trl = env_dir / "bin" / "tspin-trl"
    config = {"model_name_or_path": "preset:tiny", "task": "sorting", "num_train_prompts": 8, "num_eval_prompts": 4}
    config |= {"output_dir": "out", "max_completion_length": 8, "max_length": 64, "per_device_train_batch_size": 4}
    config |= {"num_iterations": 1, "use_cpu": True, "report_to": "tensorboard", "activation_checkpointing": False}
    (work / "tiny.yaml").write_text(yaml.safe_dump(config))
    completed = run([str(tspin_trl), "train", "--config", "tiny.yaml"], work)
    assert re.search(r"^\s+0\s+1-\d", completed.stdout, re.M)  # the closing table (results.md has the full one)
    assert "| 0 | 1-" in (work / "out" / "results.md").read_text()
    assert (work / "out" / "model.safetensors").is_file() and list((work / "out" / "runs").glob("*/events.out.*"))
    env = run([str(tspin_trl), "env"], work).stdout
    assert "- tspin-trl version: 0.1.0" in env and "- PyTorch version: 2." in env
    run([str(env_dir / "bin" / "tspin-plot"), "out"], work)


def test_model_card_links_only_what_is_on_the_hub(tmp_path, model, tokenizer, sorting_dataset):
    from helpers import make_config

    from tspin_trl import TSPINTrainer

    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=sorting_dataset, processing_class=tokenizer
    )
    local = tmp_path / "pc.jsonl"
    local.write_text("")
    card = tmp_path / "README.md"
    trainer.create_model_card(model_name="tiny", dataset_name="trl-lib/Capybara")
    text = card.read_text()
    assert (
        "fine-tuned version of a local model on the [trl-lib/Capybara](https://huggingface.co/datasets/trl-lib/Capybara)"
        in text
    )
    assert "datasets: trl-lib/Capybara\n" in text and "huggingface.co/None" not in text  # metadata keeps a Hub dataset
    trainer.create_model_card(model_name="tiny", dataset_name=str(local))
    text = card.read_text()
    assert "a local model on `pc.jsonl` (local).\n" in text and "huggingface.co/datasets" not in text
    assert str(local) not in text  # neither in the text nor in the metadata
    trainer.create_model_card(model_name="tiny", dataset_name=["trl-lib/Capybara", str(local)])
    assert (
        "on [trl-lib/Capybara](https://huggingface.co/datasets/trl-lib/Capybara), `pc.jsonl` (local).\n"
        in card.read_text()
    )


def test_a_preset_folder_appears_complete_or_not_at_all(tmp_path):
    from tspin_trl.scripts.train import _write_once

    folder = tmp_path / "models" / "tiny"
    seen = []

    def slow_writer(path):  # rank 0, interrupted half-way by rank 1 doing the same
        (Path(path) / "config.json").write_text("{}")
        seen.append(folder.exists())
        _write_once(str(folder), lambda other: (Path(other) / "config.json").write_text('{"winner": 1}'))
        (Path(path) / "model.safetensors").write_text("")

    assert _write_once(str(folder), slow_writer) == str(folder)
    assert seen == [False]  # nobody saw the half-written folder
    assert json.loads((folder / "config.json").read_text()) == {"winner": 1}
    assert os.listdir(folder.parent) == ["tiny"]  # no staging folder left behind


def test_the_paper_config_says_what_the_paper_says_and_starts_until_it_needs_the_hub(tmp_path, monkeypatch):
    from tspin_trl.scripts.train import main, make_parser

    config = ROOT / "examples" / "configs" / "paper_zephyr.yaml"
    script, args, model, _, self_play = make_parser().parse_args_and_config(
        args=["--config", str(config), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]  # no GPU here
    )
    assert (model.model_name_or_path, model.model_revision) == (
        "alignment-handbook/zephyr-7b-sft-full",
        "ac6e600eefcce74f5e8bae1035d4f66019e93190",
    )
    assert (script.dataset_name, script.dataset_train_split) == ("HuggingFaceH4/ultrachat_200k", "train_sft")
    assert (self_play.first_turn_only, self_play.num_train_samples) == (True, 50000)
    assert (args.objective, args.alpha, args.beta, args.beta_first_iteration, args.loss_type) == (
        "tspin",
        1.0,
        0.1,
        0.0,
        "sigmoid",
    )
    assert (args.num_iterations, args.restart_each_iteration, args.mix_previous_iteration) == (5, True, False)
    assert (args.optim.value, args.weight_decay, args.learning_rate, args.warmup_steps) == ("rmsprop", 0.0, 5e-7, 0.1)
    assert (args.lr_scheduler_type.value, args.per_device_train_batch_size * 8, args.max_length) == (
        "linear",
        64,
        2048,
    )
    assert (args.max_completion_length, args.temperature, args.top_p, args.top_k) == (256, 1.0, 1.0, 0)
    # it starts, and stops only where it needs the Hub (no network here)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="(?i)offline|hub|connect|couldn't find"):
        main(script, args, model, _, self_play)
    assert not (tmp_path / "out" / "self_play").exists(), "nothing was trained or generated"


# ---- the first hour at the command line: help, version, the README's first command, eval data, the card ----------


def test_help_lists_tspin_options_first_and_ends_with_the_first_command(capsys):
    from tspin_trl.cli import main as cli_main
    from tspin_trl.scripts.parser import FIRST_COMMAND

    with pytest.raises(SystemExit) as done:
        cli_main(["train", "--help"])
    assert done.value.code == 0
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


def test_version_and_plot_help_name_themselves(capsys):
    from tspin_trl.cli import main as cli_main

    assert cli_main(["--version"]) == 0 and capsys.readouterr().out == "tspin-trl 0.1.0\n"
    with pytest.raises(SystemExit):
        cli_main(["plot", "--help"])
    assert capsys.readouterr().out.startswith("usage: tspin-trl plot [-h]")
    assert cli_main([]) == 0 and "tspin-trl [--version]" in capsys.readouterr().out


def readme_first_command_block() -> dict:
    from test_docs import code_blocks

    from tspin_trl.scripts.parser import FIRST_COMMAND

    blocks = [block for block in code_blocks(ROOT / "README.md") if FIRST_COMMAND in block["code"]]
    assert len(blocks) == 1, "the README shows the first command of `tspin-trl train --help` once, as written there"
    return blocks[0]


@pytest.mark.slow
def test_the_readmes_first_command_runs_as_written(tmp_path):
    """The README's first block with a command, run as a user pastes it (from an empty folder, offline, no preset
    written yet), and what it prints: the per-iteration table within 100 columns, then the run's files."""
    import time

    block = readme_first_command_block()
    readme = (ROOT / "README.md").read_text()
    assert readme.index(block["code"]) < readme.index("--model_name_or_path Qwen/"), "first, before the Hub example"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    env |= {
        "HF_HUB_OFFLINE": "1",
        "TSPIN_TRL_MODELS": str(tmp_path / "models"),
        "TSPIN_TRL_CACHE": str(tmp_path / "p"),
    }
    start = time.monotonic()
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block["code"]], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    seconds = time.monotonic() - start
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    out = tmp_path / "tiny-tspin"
    closing = completed.stdout[completed.stdout.index("Score before training") :]
    assert max(len(line) for line in closing.splitlines()) <= 100, closing
    table = closing.splitlines()
    assert table[1].split()[:5] == ["iter", "steps", "loss", "logp(y)", "logp(y')"]
    assert [line.split()[0] for line in table[2:4]] == ["0", "1"]
    assert f"The full table: {out.name}/results.md" in closing
    results = (out / "results.md").read_text()
    # the full table: the settings that change between iterations (beta here: 0, then 0.1), then the means
    assert "| iteration | steps | beta | loss | logps/real |" in results
    for path in re.findall(r"^- [^:]+: (\S+)", results, flags=re.MULTILINE):
        assert list(tmp_path.glob(path)), f"results.md links {path}, which does not exist"
    assert (out / "model.safetensors").is_file() and "### T-SPIN settings" in (out / "README.md").read_text()
    print(f"the README's first command: {seconds:.0f} s")


def test_results_md_links_only_files_that_exist(tmp_path):
    from tspin_trl.run_folder import RunFolder
    from tspin_trl.scripts.train import result_links

    folder = RunFolder(str(tmp_path))
    os.makedirs(os.path.join(folder.root, "iteration_0"))
    for path in (os.path.join(folder.root, "iteration_0", "train.jsonl"), folder.logs_path, tmp_path / "README.md"):
        Path(path).write_text("{}\n")
    links = result_links(tmp_path, folder)
    assert "scores.jsonl" not in links and "iterations.jsonl" not in links
    assert "iteration_*/train.jsonl" in links and "logs.jsonl" in links and "README.md" in links
    Path(folder.scores_path).write_text("{}\n")
    assert "- held-out responses and scores: " in result_links(tmp_path, folder)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_eval_data_from_its_own_file_folder_or_list(tmp_path, suffix):
    from trl import DatasetMixtureConfig, ScriptArguments

    from tspin_trl.scripts.train import SelfPlayScriptArguments, load_data

    Dataset.from_list(rows(6)).to_json(tmp_path / "train.jsonl")
    evaluation = Dataset.from_list(rows(3, offset=6))
    getattr(evaluation, {".jsonl": "to_json", ".csv": "to_csv", ".parquet": "to_parquet"}[suffix])(
        tmp_path / f"dev{suffix}"
    )
    (tmp_path / "folder").mkdir()
    evaluation.to_json(tmp_path / "folder" / "validation.jsonl")
    script = ScriptArguments(dataset_name=str(tmp_path / "train.jsonl"))
    given = {
        "file": SelfPlayScriptArguments(eval_dataset_name=str(tmp_path / f"dev{suffix}")),
        "folder": SelfPlayScriptArguments(eval_dataset_name=str(tmp_path / "folder")),  # its only split
        "list": SelfPlayScriptArguments(eval_datasets=[{"path": "json", "data_files": str(tmp_path / "dev.jsonl")}]),
    }
    evaluation.to_json(tmp_path / "dev.jsonl")
    for name, self_play in given.items():
        for strategy in ("steps", "no"):  # also without evaluation steps: the likelihood inversion is measured on it
            data = load_data(script, DatasetMixtureConfig(), self_play, eval_strategy=strategy)
            assert data["eval"].to_list() == evaluation.to_list(), (name, strategy)
            assert data["train"].to_list() == rows(6)
    folder = SelfPlayScriptArguments(eval_dataset_name=str(tmp_path / "folder"), eval_dataset_split="validation")
    assert len(load_data(script, DatasetMixtureConfig(), folder)["eval"]) == 3
    assert load_data(script, DatasetMixtureConfig(), SelfPlayScriptArguments())["eval"] is None


def test_model_card_states_the_tspin_settings_the_iterations_and_an_honest_license(tmp_path, tokenizer):
    from helpers import make_config

    from tspin_trl import TSPINTrainer
    from tspin_trl.demo import save_tiny_preset

    base = Path(save_tiny_preset(tmp_path / "base"))
    output = tmp_path / "out"
    args = make_config(output, num_iterations=3, beta=0.2, alpha=0.5, learning_rate=2e-4, optim="adamw_torch")
    trainer = TSPINTrainer(model=str(base), args=args, train_dataset=Dataset.from_list(rows(6)))
    trainer.create_model_card(model_name="out")
    card = (output / "README.md").read_text()
    assert "licence" not in card and "\nlicense:" not in card.split("---")[1]  # unknown: no metadata line
    assert "Not recorded: the card of the base model `base` states none" in card
    for row in (
        "| objective | `tspin`, loss `sigmoid` |",
        "| alpha (reward scale) | 0.5 |",
        "| beta (historical term) | 0.2 (0 in iteration 0) |",
        "| self-play iterations | 3 |",
        "| epochs per iteration | 1 |",
        "| learning rate | 0.0002, `linear`, warm-up 0, restarted every iteration |",
        "| optimizer | `adamw_torch`, weight decay 0 |",
        "| training prompts | 6 |",
    ):
        assert row in card, row
    assert "### Per-iteration results" not in card  # nothing trained yet

    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# the base model\n")
    folder = output / "self_play"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"iteration": 0, "first_step": 1, "last_step": 2, "complete": True, "means": {"loss/per_example": 0.69}}
    (folder / "iterations.jsonl").write_text(json.dumps(record) + "\n")
    trainer.create_model_card(model_name="out")
    card = (output / "README.md").read_text()
    assert "\nlicense: apache-2.0\n" in card.split("---")[1] and "licence" not in card
    assert "`apache-2.0`, from the card of the base model `base`" in card
    assert "### Per-iteration results" in card and "| 0 | 1-2 | 0.69 |" in card
    assert card.index("### T-SPIN settings") < card.index("### Framework versions")


def test_a_launch_that_asked_for_two_processes_and_got_one_is_warned_about(tmp_path):
    from tspin_trl.scripts.launch import lone_process_warning, single_process_launch_warning

    # what accelerate 1.15's launchers set in the child (`env` printed from inside each launch)
    simple = {"ACCELERATE_USE_CPU": "True", "ACCELERATE_DYNAMO_BACKEND": "NO", "OMP_NUM_THREADS": "1"}
    assert single_process_launch_warning(simple) is None  # --num_processes 1: fine
    assert "--multi_gpu" in single_process_launch_warning(
        simple | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    )
    multi = {"ACCELERATE_DYNAMO_BACKEND": "NO", "MASTER_ADDR": "localhost", "RANK": "0", "WORLD_SIZE": "2"}
    assert single_process_launch_warning(multi) is None and single_process_launch_warning({}) is None
    # `--multi_gpu --num_processes 2` on CPU without `--use_cpu true`: two processes that each train alone
    assert "--use_cpu true" in lone_process_warning(1, multi)
    assert lone_process_warning(2, multi) is None and lone_process_warning(1, simple) is None

    # a real launch: `--cpu --num_processes 2` starts one process, which says so before anything else
    accelerate = str(Path(sys.executable).parent / "accelerate")
    command = [accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision"]
    command += ["no", "--dynamo_backend", "no", "-m", "tspin_trl", "train", "--model_name_or_path", "./no_model"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("MASTER_ADDR", None)
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode != 0
    warning = "tspin-trl train: warning: this looks like `accelerate launch --num_processes N` with N > 1 that started"
    # what the process printed itself (accelerate >= 1.16 repeats the tail of its stderr in its own traceback)
    own = completed.stderr.split("(The traceback is hidden")[0]
    assert own.count(warning) == 1, completed.stderr[-3000:]
    assert "tspin-trl train: error: The model folder './no_model' does not exist" in completed.stderr
