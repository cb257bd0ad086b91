"""`tspin_trl/run_folder.py`: the layout of `output_dir/self_play/` and its records."""

import json
import os

import pytest
from datasets import Dataset

from tests.support import make_config, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo.presets import build_tiny_model
from tspin_trl.run_folder import RunFolder


def test_eval_split_names_cannot_escape_the_output_dir(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"Evaluation dataset name '\.\./\.\./x' cannot be used in file names"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path),
            train_dataset=Dataset.from_list(sorting_rows(4)),
            eval_dataset={"../../x": Dataset.from_list(sorting_rows(2))},
            processing_class=tokenizer,
        )


def test_a_resume_drops_the_records_of_the_steps_it_replays(tmp_path):
    folder = RunFolder(str(tmp_path))
    os.makedirs(folder.root)
    for step in (0, 4, 8):
        folder.append_heldout({"label": "start" if step == 0 else f"iteration_{step // 4 - 1}", "step": step})
        folder.append_iteration_record({"iteration": step // 4, "step": step})
        folder.append_log({"loss": 1.0, "step": step})
    folder.drop_records_after(4)
    assert [r["step"] for r in folder.heldout()] == [0, 4] and sorted(folder.iteration_records()) == [0, 1]
    assert [json.loads(line)["step"] for line in open(folder.logs_path)] == [0, 4]
