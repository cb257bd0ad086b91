"""`tspin_trl/run_folder.py`: the layout of `output_dir/self_play/` and its records."""

import pytest
from datasets import Dataset

from tests.support import make_config, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo.presets import build_tiny_model


def test_eval_split_names_cannot_escape_the_output_dir(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"Evaluation dataset name '\.\./\.\./x' cannot be used in file names"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path),
            train_dataset=Dataset.from_list(sorting_rows(4)),
            eval_dataset={"../../x": Dataset.from_list(sorting_rows(2))},
            processing_class=tokenizer,
        )
