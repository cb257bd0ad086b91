"""`tspin_trl/presets.py`: `preset:` model names resolved to their folder, written once, from Python as from the
command line, without the trainer core importing the demo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from tests.support import make_config, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.presets import resolve_model, write_once


ROOT = Path(__file__).resolve().parents[2]


def test_a_preset_folder_appears_complete_or_not_at_all(tmp_path):
    folder = tmp_path / "models" / "tiny"
    seen = []

    def slow_writer(path):  # rank 0, interrupted half-way by rank 1 doing the same
        (Path(path) / "config.json").write_text("{}")
        seen.append(folder.exists())
        write_once(str(folder), lambda other: (Path(other) / "config.json").write_text('{"winner": 1}'))
        (Path(path) / "model.safetensors").write_text("")

    assert write_once(str(folder), slow_writer) == str(folder)
    assert seen == [False]  # nobody saw the half-written folder
    assert json.loads((folder / "config.json").read_text()) == {"winner": 1}
    assert os.listdir(folder.parent) == ["tiny"]  # no staging folder left behind


def test_names_other_than_presets_pass_unchanged_and_the_demo_stays_unimported():
    code = (
        "import sys; from tspin_trl.presets import resolve_model; "
        "names = ['Qwen/Qwen2.5-0.5B-Instruct', './models/tiny', 'gpt2']; "
        "assert [resolve_model(n) for n in names] == names; "
        "print(sorted(m for m in sys.modules if m.startswith('tspin_trl.demo')))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_an_unknown_preset_names_the_known_ones(tmp_path):
    with pytest.raises(
        ValueError, match="Unknown preset 'tinyy': use 'preset:tiny' or 'preset:smollm2-135m-instruct'"
    ):
        resolve_model("preset:tinyy", cache_root=str(tmp_path))
    assert not (tmp_path / "tinyy").exists()


def test_the_trainer_takes_a_preset_name_as_the_command_line_does(tmp_path, monkeypatch):
    monkeypatch.setenv("TSPIN_TRL_MODELS", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    dataset = Dataset.from_list(sorting_rows(4))
    trainer = TSPINTrainer(model="preset:tiny", args=make_config(tmp_path / "out"), train_dataset=dataset)
    folder = str(tmp_path / "models" / "tiny")
    assert trainer.model.config._name_or_path == folder == resolve_model("preset:tiny")
    assert trainer.processing_class.eos_token == "<|end|>"  # the preset's own tokenizer, from its folder
    default = TSPINTrainer(model="preset:tiny", train_dataset=dataset, args=None)
    assert default.args.output_dir == "tiny-TSPIN"  # as TRL names it after the model, not "preset:tiny-TSPIN"
