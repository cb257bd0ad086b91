"""The `tspin-trl` command as a process: `train` (TRL `dpo.py` parity: eval split, mixtures), `plot`, `env`, an unknown
command, the installed TRL's `dpo.py` and `sft.py` with only the class names swapped, a `pip install` into a fresh
venv, the README's first command, and a launch that asked for two processes and got one."""

import gzip
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml
from datasets import Dataset


ROOT = Path(__file__).resolve().parents[2]


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


def converted_trl_script(script: str) -> str:
    """The installed TRL's `trl/scripts/<script>.py` (`"dpo"`, `"sft"`), with its trainer and config classes
    (DPOTrainer/DPOConfig, SFTTrainer/SFTConfig) swapped for TSPINTrainer/TSPINConfig."""
    source = Path(importlib.util.find_spec(f"trl.scripts.{script}").origin).read_text()
    trainer, config = f"{script.upper()}Trainer", f"{script.upper()}Config"
    assert source.count(trainer) == 2 and source.count(config) == 2, f"TRL's {script}.py changed shape"
    source = source.replace(trainer, "TSPINTrainer").replace(config, "TSPINConfig")

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
    script.write_text(converted_trl_script("dpo"))
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
    # the recorded help page travels with the wheel: `train --help` imports no torch there either
    code = "import sys; from tspin_trl.cli import main; main(['train', '--help']); print('torch' in sys.modules)"
    helped = run([str(python), "-c", code], work, env={"XDG_CACHE_HOME": str(tmp_path / "empty-cache")}).stdout
    assert "--num_iterations" in helped and helped.endswith("False\n"), helped[-300:]
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


def readme_first_command_block() -> dict:
    from tests.support.docs import code_blocks
    from tspin_trl.scripts.parser import FIRST_COMMAND

    blocks = [block for block in code_blocks(ROOT / "README.md") if FIRST_COMMAND in block["code"]]
    assert len(blocks) == 1, "the README shows the first command of `tspin-trl train --help` once, as written there"
    return blocks[0]


@pytest.mark.slow
def test_the_readmes_first_command_runs_as_written(tmp_path):
    """The README's first block with a command, run as a user pastes it (from an empty folder, offline, no preset
    written yet), and what it prints: the verdict and the per-iteration table within 100 columns, then the run's files.
    The task score rises, no alarm fires, and the numbers the README states are this run's."""
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
    closing = completed.stdout[completed.stdout.index("What self-play did:") :]
    assert max(len(line) for line in closing.splitlines()) <= 100, closing
    lines = closing.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["iter", "steps"])
    assert lines[header].split()[:5] == ["iter", "steps", "loss", "logp(y)", "logp(y')"]
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["start", "0", "1"]
    assert f"The full table: {out.name}/results.md" in closing and "alarms" not in lines[header]
    results = (out / "results.md").read_text()
    # the full table: the settings that change between iterations (beta here: 0, then 0.1), the held-out evidence
    assert "| iteration | steps | beta | heldout logp(y)/token |" in results
    # the score rises, beyond noise (the verdict says so), and the README states this run's numbers
    scores = [json.loads(line)["score"] for line in (out / "self_play" / "scores.jsonl").open()]
    assert len(scores) == 3 and scores[0] < scores[1] < scores[2], scores
    assert "from the start, up." in " ".join(closing.split())
    stated = re.search(
        r"went from \*\*([\d.]+)\*\* before training to \*\*([\d.]+)\*\* after iteration 0 and \*\*([\d.]+)\*\* after "
        r"iteration 1",
        " ".join(readme.split()),
    )
    assert stated, "the README states the score before training and after each iteration"
    assert [float(value) for value in stated.groups()] == pytest.approx(scores, abs=0.03), (stated.groups(), scores)
    for path in re.findall(r"^- [^:]+: (\S+)", results, flags=re.MULTILINE):
        assert list(tmp_path.glob(path)), f"results.md links {path}, which does not exist"
    assert (out / "model.safetensors").is_file() and "### T-SPIN settings" in (out / "README.md").read_text()
    print(f"the README's first command: {seconds:.0f} s")


def test_a_launch_that_asked_for_two_processes_and_got_one_is_warned_about(tmp_path):
    """A real launch: `--cpu --num_processes 2` starts one process, which says so before anything else (the warnings
    themselves: `tests/unit/test_scripts_launch.py`)."""
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


def test_version_and_help_answer_without_importing_torch(tmp_path):
    """`--version`, `--help` and `train --help` import neither torch nor transformers (they took 7-8 s on 2 cores
    when they did); `train --help` prints the recorded page (tspin_trl/scripts/help.py): the shipped one where it was
    made for these libraries, else, after one slow answer from the real parser, the one in the user's cache."""
    from tspin_trl.scripts.help import SHIPPED, record_key

    code = (
        "import sys; from tspin_trl.cli import main; "
        "codes = [main(['--version']), main(['--help']), main(['train', '--help'])]; "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets', 'accelerate') if m in sys.modules]; "
        "print('RESULT', codes, heavy, file=sys.stderr)"
    )
    cache = tmp_path / "cache"
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    shipped_matches = json.loads(SHIPPED.read_text())["key"] == record_key()
    completed = run([sys.executable, "-c", code], tmp_path, env=env)
    assert completed.stdout.startswith("tspin-trl 0.1.0\nusage: tspin-trl [--version]")
    assert "usage: tspin-trl train [--config FILE]" in completed.stdout and "--num_iterations" in completed.stdout
    if shipped_matches:
        assert "RESULT [0, 0, 0] []" in completed.stderr, completed.stderr[-2000:]
        assert not cache.exists()  # the shipped record, not a cached one
    else:
        assert "RESULT [0, 0, 0]" in completed.stderr, completed.stderr[-2000:]
        again = run([sys.executable, "-c", code], tmp_path, env=env)
        assert "RESULT [0, 0, 0] []" in again.stderr, again.stderr[-2000:]
        assert again.stdout == completed.stdout


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


RESUMABLE_RUN = [
    *TINY_RUN,
    "--task",
    "sorting",
    "--num_train_prompts",
    "8",
    "--num_eval_prompts",
    "4",
    "--output_dir",
    "my out",
]


def test_ctrl_c_before_the_first_checkpoint_says_the_run_starts_again(tmp_path):
    """Ctrl-C (SIGINT) while the run is being set up: exit code 130, no checkpoint yet, and the command that starts it
    again (the same arguments, quoted for a shell)."""
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "proto"), TSPIN_TRL_MODELS=str(tmp_path / "models"))
    command = [sys.executable, "-m", "tspin_trl", "train", *RESUMABLE_RUN, "--save_strategy", "no"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "my out" / "self_play", process)  # the trainer is being built: the arguments were parsed
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr[-3000:]
    note = stderr[stderr.index("tspin-trl train: interrupted.") :].splitlines()
    assert note[0] == (
        "tspin-trl train: interrupted. No checkpoint was saved yet (none in my out): the run starts again from the "
        f"beginning. To start it, run (in {tmp_path}):"
    )
    typed = shlex.split(note[1])
    assert typed[1:] == ["-m", "tspin_trl", "train", *RESUMABLE_RUN, "--save_strategy", "no"]
    assert typed[0] in ("python", "python3", sys.executable)


@pytest.mark.slow
def test_sigterm_prints_the_command_that_resumes_and_the_resumed_run_says_where_it_continues(tmp_path):
    """A run stopped by SIGTERM after its first checkpoint: exit code 143, the checkpoint and the command that resumes
    from it (`--resume_from_checkpoint last`); that command, run as printed, continues from that checkpoint, says
    where, and finishes."""
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "proto"), TSPIN_TRL_MODELS=str(tmp_path / "models"))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    command = [sys.executable, "-m", "tspin_trl", "train", *RESUMABLE_RUN, "--save_steps", "1"]
    command += ["--num_iterations", "2"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "my out" / "checkpoint-1" / "trainer_state.json", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 143, stderr[-3000:]
    text, line = stderr[stderr.index("tspin-trl train: stopped by SIGTERM.") :].splitlines()[:2]
    checkpoint = re.search(r"The last complete checkpoint is (my out/checkpoint-(\d+)) \(step \d+ of 4\)", text)
    assert checkpoint and text.endswith(f"To resume from it, run (in {tmp_path}):"), text
    assert shlex.split(line)[-2:] == ["--resume_from_checkpoint", "last"]

    resumed = run(["bash", "-c", line], tmp_path, env={"PATH": env["PATH"]})  # as a person pastes it
    step = int(checkpoint.group(2))
    assert f"tspin-trl train: resuming from {checkpoint.group(1)} (saved after step {step} of 4): " in resumed.stdout
    assert re.search(
        r"iteration [01] \(of 2, counted from 0\) (continues|starts) with step \d \(steps [13]-[24]\)\.",
        resumed.stdout,
    )
    assert json.loads((tmp_path / "my out" / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


def test_installed_trl_sft_script_trains_on_plain_text_with_the_classes_swapped(tmp_path):
    """TRL's `sft.py` renamed, on a local plain-text dataset, split by the paper's template given as a flag (the flag
    comes from `TSPINConfig`, so `tspin-trl train` has it too)."""
    from tspin_trl.demo import save_tiny_preset

    model = save_tiny_preset(tmp_path / "tiny")
    data = tmp_path / "data"
    data.mkdir()
    texts = [f"### Instruction: sort {i} 2 1\n\n### Response: 1 2 {i}" for i in range(4)]
    Dataset.from_list([{"text": text} for text in texts]).to_json(data / "train.jsonl")
    script = tmp_path / "sft_tspin.py"
    script.write_text(converted_trl_script("sft"))
    args = ["--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(tmp_path / "out")]
    args += ["--per_device_train_batch_size", "2", "--num_iterations", "1", "--max_completion_length", "8"]
    args += ["--max_length", "64", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no"]
    args += ["--response_template", "paper", "--logging_steps", "1", "--activation_checkpointing", "false"]
    completed = run([sys.executable, str(script), *args], tmp_path)
    assert "Training completed" in completed.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()
    iteration = [json.loads(line) for line in (tmp_path / "out/self_play/iteration_0/train.jsonl").open()]
    prompts = [text.partition("### Response: ")[0] + "### Response: " for text in texts]
    assert [row["prompt"] for row in iteration] == prompts  # split after the template
    assert any("mean_token_accuracy" in entry and "num_tokens" in entry for entry in logged(tmp_path / "out"))
