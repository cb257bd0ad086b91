"""A run killed (SIGKILL) in the middle of regeneration resumes from the last chunk it completed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigkill_during_regeneration_resumes_from_the_last_chunk(tmp_path):
    env = dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / "cache"))
    base = [
        sys.executable,
        str(ROOT / "tests" / "support" / "scripts" / "run_tiny.py"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    base += ["--result", str(tmp_path / "result"), "--save_strategy", "epoch"]  # 12 prompts, 2 per call: 6 chunks
    killed = subprocess.run(base + ["--kill_after_chunks", "4"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    chunks = sorted((tmp_path / "out" / "self_play" / "iteration_1" / "train_chunks").glob("chunk_*.jsonl"))
    assert len(chunks) == 4

    resumed = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((tmp_path / "result.rank0.json").read_text())
    stats = result["generation_stats"]["iteration_1/train"]
    assert stats["reused_chunks"] == 4 and stats["generate_calls"] == 2
    assert result["generate_calls"] == 2  # proto came from the cache / iteration 0 file
    assert result["global_step"] == 12

    fresh = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "support" / "scripts" / "run_tiny.py"),
            "--output_dir",
            str(tmp_path / "fresh"),
            "--result",
            str(tmp_path / "fresh_result"),
            "--save_strategy",
            "epoch",
        ],
        env=dict(env, TSPIN_TRL_CACHE=str(tmp_path / "cache_fresh")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    fresh_result = json.loads((tmp_path / "fresh_result.rank0.json").read_text())
    assert result["synthetic_ids"] == fresh_result["synthetic_ids"]
    assert result["param_sum"] == pytest.approx(fresh_result["param_sum"], rel=1e-6)
