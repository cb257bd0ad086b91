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
    completed = run([sys.executable, "-m", "tspin_trl", "env"], tmp_path)
    for line in ("- tspin-trl version: 0.1.0", "- TRL version: 1.16", "- Transformers version: 5.24"):
        assert line in completed.stdout, completed.stdout
    assert "- accelerator(s): " in completed.stdout and "- PEFT version: " in completed.stdout


def test_unknown_command_fails_with_the_usage(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "tspin_trl", "tran"], capture_output=True, text=True)
    assert completed.returncode == 2 and "usage: tspin-trl {train,plot,env}" in completed.stderr


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
    tspin_trl = env_dir / "bin" / "tspin-trl"
    config = {"model_name_or_path": "preset:tiny", "task": "sorting", "num_train_prompts": 8, "num_eval_prompts": 4}
    config |= {"output_dir": "out", "max_completion_length": 8, "max_length": 64, "per_device_train_batch_size": 4}
    config |= {"num_iterations": 1, "use_cpu": True, "report_to": "tensorboard", "activation_checkpointing": False}
    (work / "tiny.yaml").write_text(yaml.safe_dump(config))
    completed = run([str(tspin_trl), "train", "--config", "tiny.yaml"], work)
    assert "| 0 | 1-" in completed.stdout  # the per-iteration table of results.md
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
