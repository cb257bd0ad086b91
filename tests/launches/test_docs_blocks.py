"""The docs' commands run as written: every block marked `<!-- docs-test: run -->` in README.md and docs/*.md is
executed from a scratch folder that has the repository's `examples/`, with Hub ids swapped for local stand-ins
(`HUB_MODELS`, `HUB_DATASETS`). The markers are checked in `tests/unit/test_docs.py`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from tests.support.docs import ROOT, all_code_blocks, block_id


HUB_MODELS = ("Qwen/Qwen2.5-0.5B-Instruct", "HuggingFaceH4/zephyr-7b-sft-full")
HUB_DATASETS = {"trl-lib/Capybara": "train", "HuggingFaceH4/ultrachat_200k": "train_sft"}  # id -> its split


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, str]:
    """Local replacements for the Hub ids the docs name: the tiny preset, small datasets in the same formats."""
    from tspin_trl.demo import save_tiny_preset

    root = tmp_path_factory.mktemp("stand_ins")
    replacements = {model: str(save_tiny_preset(root / "tiny")) for model in HUB_MODELS}
    for number, (name, split) in enumerate(HUB_DATASETS.items()):
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"sort: {i} 3 1"},
                    {"role": "assistant", "content": " ".join(sorted(f"{i}31"))},
                ]
            }
            for i in range(8)
        ]
        folder = root / f"dataset_{number}"
        (folder / "data").mkdir(parents=True)
        Dataset.from_list(rows).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")  # Hub layout
        replacements[name] = str(folder)
    return replacements


RUN_BLOCKS = [block for block in all_code_blocks() if block["marker"] == "<!-- docs-test: run -->"]


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[block_id(block) for block in RUN_BLOCKS])
def test_marked_blocks_run(block, stand_ins, tmp_path):
    code = block["code"]
    for name, local in stand_ins.items():
        code = code.replace(name, local)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"], TSPIN_TRL_MODELS=str(tmp_path / "models"))
    if block["language"] in ("python", "py"):
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
