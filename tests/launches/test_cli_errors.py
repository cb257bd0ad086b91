"""`tspin-trl train` on bad input, as a person at a terminal meets it: each error ends the command before any model is
trained, with its documented exit code (docs/cli.md) and a first line that names the cause and the fix; the traceback
only with `--debug` or `TSPIN_TRL_DEBUG=1`.

"First line" is the first line after any progress bar of work done before the error (loading a dataset, in a
terminal a bar that has reached 100%). The cases run in-process through `tspin_trl.cli.main`, the code `tspin-trl` and
`python -m tspin_trl` run after their imports; one of them also runs as a new process (most of its ~10 s of CPU go to
importing torch and transformers), for the exit status a shell sees.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from tspin_trl.cli import main as cli_main
from tspin_trl.scripts.errors import EXIT_ERROR, EXIT_USAGE


PREFIX = "tspin-trl train: error: "


HIDDEN = "(The traceback is hidden: set TSPIN_TRL_DEBUG=1 or add --debug to see it.)"


TINY = ["--model_name_or_path", "preset:tiny", "--use_cpu", "true", "--report_to", "none"]


def _lock_of_a_live_process(out: Path, pid: int) -> list[str]:
    """`out` holds the run lock of the live process `pid` on this host, as a second run would find it."""
    (out / "self_play").mkdir(parents=True)
    with open(f"/proc/{pid}/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    owner = {"pid": pid, "pid_start": start, "host": socket.gethostname(), "started": time.time()}
    (out / "self_play" / "run.lock").write_text(json.dumps(owner))
    return ["--output_dir", str(out)]


# name: (arguments after `train`, exit code, start of the first line on stderr)
CASES = {
    "missing_data_file": (
        [*TINY, "--dataset_name", "nope.jsonl"],
        EXIT_ERROR,
        PREFIX + "The dataset file or folder 'nope.jsonl' given to --dataset_name does not exist",
    ),
    "missing_model_folder": (
        ["--model_name_or_path", "./no_model", "--task", "sorting"],
        EXIT_ERROR,
        PREFIX + "The model folder './no_model' does not exist",
    ),
    "model_path_typo": (  # `models/tiny` exists: a path, never looked up on the Hub (it used to wait ~35 s there)
        ["--model_name_or_path", "models/tinyy", "--task", "sorting"],
        EXIT_ERROR,
        PREFIX + "The model folder 'models/tinyy' does not exist ({tmp}/models/tinyy) (the closest existing folder: "
        "'models/tiny'). A name that looks like a path is never looked up on the Hub.",
    ),
    "resume_without_checkpoint": (
        [*TINY, "--task", "sorting", "--resume_from_checkpoint", "true"],
        EXIT_ERROR,
        PREFIX + "--resume_from_checkpoint true found no complete checkpoint in output_dir '{tmp}/out'",
    ),
    "resume_from_a_missing_folder": (
        [*TINY, "--task", "sorting", "--resume_from_checkpoint", "out/checkpoint-5"],
        EXIT_ERROR,
        PREFIX + "The checkpoint folder 'out/checkpoint-5' given to --resume_from_checkpoint does not exist.",
    ),
    "unreachable_hub_model": (
        ["--model_name_or_path", "nobody-here/no-such-model", "--task", "sorting"],
        EXIT_ERROR,
        PREFIX
        + "The model 'nobody-here/no-such-model' is not a local folder, and it could not be fetched from the Hub",
    ),
    "unknown_flag": (
        [*TINY, "--task", "sorting", "--learning_rte", "1e-3"],
        EXIT_USAGE,
        PREFIX + "unknown flag --learning_rte (did you mean --learning_rate?)",
    ),
    "data_format": (
        [*TINY, "--dataset_name", "{tmp}/questions.jsonl"],
        EXIT_ERROR,
        PREFIX + "Cannot recognise the dataset format from its columns",
    ),
    "eval_split_of_a_file": (
        [*TINY, "--dataset_name", "{tmp}/train.jsonl", "--eval_strategy", "steps"],
        EXIT_ERROR,
        PREFIX + "--eval_strategy steps needs evaluation data, and '{tmp}/train.jsonl' is a single file (one split). "
        "Give the evaluation rows in a file of their own: --eval_dataset_name",
    ),
    "self_play_output_dir_locked": (
        [*TINY, "--dataset_name", "{tmp}/train.jsonl", "--max_length", "48", "--max_completion_length", "8", "{lock}"],
        EXIT_ERROR,
        PREFIX + "Another process is training in '{tmp}/locked': process",
    ),
}


def report_lines(stderr: str) -> list[str]:
    """The lines of `stderr` after the progress bars (tqdm's `[00:01, 9.1 examples/s]`) of work done before the error
    (loading a dataset)."""
    bar = re.compile(r"\[\d+:\d+(<|,|\])")
    return [line for line in stderr.splitlines() if line.strip() and "\r" not in line and not bar.search(line)]


def rows(n: int) -> list[dict]:
    return [{"prompt": f"sort: {i} 3 1\n", "completion": " ".join(sorted(f"{i}31"))} for i in range(n)]


@pytest.fixture
def inputs(tmp_path, monkeypatch) -> Path:
    """A folder with the data files the cases name, as the current folder; the preset written before, as by an earlier
    run (its progress bar is not an error's); no traceback asked for."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TSPIN_TRL_DEBUG", raising=False)
    monkeypatch.setenv("TSPIN_TRL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("TSPIN_TRL_CACHE", str(tmp_path / "proto"))
    from tspin_trl.presets import resolve_model

    resolve_model("preset:tiny")
    Dataset.from_list(rows(8)).to_json(tmp_path / "train.jsonl")
    Dataset.from_list([{"question": "q", "answer": "a"}]).to_json(tmp_path / "questions.jsonl")
    return tmp_path


@pytest.mark.parametrize("name", list(CASES))
def test_error_exit_code_and_first_line(inputs, capsys, name):
    """Each case through `tspin_trl.cli.main`, the code `python -m tspin_trl` and `tspin-trl` run after the import."""
    args, code, first_line = CASES[name]
    sleeper = subprocess.Popen(["sleep", "600"]) if "{lock}" in args else None
    try:
        argv = []
        for arg in args:
            argv += _lock_of_a_live_process(inputs / "locked", sleeper.pid) if arg == "{lock}" else [arg]
        argv = [arg.format(tmp=inputs) for arg in argv]
        if "--output_dir" not in argv:
            argv += ["--output_dir", str(inputs / "out")]
        capsys.readouterr()  # not the set-up's progress bars
        returned = cli_main(["train", *argv])
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
    stderr = capsys.readouterr().err
    lines = report_lines(stderr)
    assert returned == code, stderr[-3000:]
    assert lines and lines[0].startswith(first_line.format(tmp=inputs)), stderr[-3000:]
    assert lines[1:] == [HIDDEN], "one paragraph, then how to see the traceback"
    assert not (inputs / "out" / "model.safetensors").exists()


def test_a_real_process_exits_with_the_code_and_first_line(tmp_path):
    """The same as a user's terminal sees it: `python -m tspin_trl train` with a missing data file, in a new process."""
    args, code, first_line = CASES["missing_data_file"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TSPIN_TRL_MODELS=str(tmp_path / "models"))
    env.pop("TSPIN_TRL_DEBUG", None)
    command = [sys.executable, "-m", "tspin_trl", "train", *args, "--output_dir", "out"]
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == code, completed.stderr[-3000:]
    lines = report_lines(completed.stderr)
    assert lines[0].startswith(first_line) and lines[1:] == [HIDDEN], completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr and not (tmp_path / "out").exists()


def test_in_process_variants(inputs, monkeypatch, capsys):
    """Other inputs of the same checks."""
    tmp_path = inputs
    (tmp_path / "folder").mkdir()
    Dataset.from_list(rows(4)).to_json(tmp_path / "folder" / "train.jsonl")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"learning_rte": 1e-3, "task": "sorting"}))
    mixture = {"datasets": [{"path": "json", "data_files": "missing/*.jsonl"}]}
    (tmp_path / "mixture.yaml").write_text(yaml.safe_dump(mixture))
    cases = {
        "folder": (
            ["--dataset_name", "data/missing/"],
            EXIT_ERROR,
            "The dataset file or folder 'data/missing/' given",
        ),
        "eval file": (
            ["--task", "sorting", "--eval_dataset_name", "dev.csv"],
            EXIT_ERROR,
            "The dataset file or folder",
        ),
        "config key": (
            ["--config", "typo.yaml"],
            EXIT_USAGE,
            "unknown key 'learning_rte' in the config file (did you",
        ),
        "config file": (["--config", "nope.yaml"], EXIT_ERROR, "The config file 'nope.yaml' does not exist"),
        "mixture": (
            ["--config", "mixture.yaml"],
            EXIT_ERROR,
            "The data file 'missing/*.jsonl' of entry 0 of `datasets:`",
        ),
        "folder split": (
            ["--dataset_name", "folder", "--eval_strategy", "epoch"],
            EXIT_ERROR,
            "--eval_strategy epoch",
        ),
        "eval split": (
            ["--dataset_name", "train.jsonl", "--eval_dataset_name", "folder", "--eval_dataset_split", "dev"],
            EXIT_ERROR,
            "The evaluation dataset 'folder' has no split 'dev' (it has ['train']): set --eval_dataset_split",
        ),
        "task": (["--task", "sortin"], EXIT_USAGE, "--task 'sortin' is not a built-in task"),
        "setting": (
            ["--task", "sorting", "--beta", "1e30"],
            EXIT_USAGE,
            "TSPINConfig.beta=1e+30 is invalid: it must be",
        ),
        "streaming": (
            ["--dataset_name", "train.jsonl", "--dataset_streaming", "true"],
            EXIT_USAGE,
            "--dataset_streaming (or `streaming: true` with `datasets:`) is not supported: self-play generates",
        ),
    }
    first_lines, _ = {}, capsys.readouterr()  # not the set-up's progress bars
    for name, (args, code, start) in cases.items():
        assert cli_main(["train", "--model_name_or_path", "preset:tiny", "--use_cpu", "true", *args]) == code, name
        first_lines[name] = report_lines(capsys.readouterr().err)[0]
        assert first_lines[name].startswith(PREFIX + start), (name, first_lines[name])
    folder_split = first_lines["folder split"]
    assert (
        "has the splits ['train'] (from its file names), none named 'test'. Name the evaluation file" in folder_split
    )

    # --debug (or TSPIN_TRL_DEBUG=1): the traceback, ending with the same message
    for debug_args, env in ((["--debug"], None), ([], "1")):
        if env:
            monkeypatch.setenv("TSPIN_TRL_DEBUG", env)
        assert (
            cli_main(["train", "--model_name_or_path", "preset:tiny", "--dataset_name", "x.jsonl", *debug_args]) == 1
        )
        lines = report_lines(capsys.readouterr().err)
        assert lines[0] == "Traceback (most recent call last):" and HIDDEN not in lines
        assert "InputNotFoundError: The dataset file or folder 'x.jsonl' given to --dataset_name" in lines[-1]
