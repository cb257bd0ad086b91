"""Real multi-process runs on CPU: `accelerate launch` with 2 processes over gloo (DDP and DeepSpeed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "support" / "scripts" / "run_tiny.py"
CONFIGS = ROOT / "examples" / "accelerate_configs"


def launch(tmp_path, name, launcher_args, *script_args, processes=2):
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    env["TSPIN_TRL_CACHE"] = str(tmp_path / f"{name}_cache")
    result = tmp_path / name
    if processes == 1:
        command = [sys.executable, str(SCRIPT)]
    else:
        accelerate = Path(sys.executable).with_name("accelerate")
        command = [str(accelerate), "launch", *launcher_args, "--num_processes", str(processes), str(SCRIPT)]
    command += ["--output_dir", str(tmp_path / f"{name}_out"), "--result", str(result), *script_args]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return [json.loads(Path(f"{result}.rank{r}.json").read_text()) for r in range(processes)]


def test_two_process_ddp_matches_single_process_on_the_same_global_batch(tmp_path):
    common = ["--pregenerated", "--num_iterations", "1", "--num_prompts", "8"]
    single = launch(tmp_path, "single", [], *common, "--per_device_train_batch_size", "4", processes=1)[0]
    ddp = launch(tmp_path, "ddp", ["--multi_gpu"], *common, "--per_device_train_batch_size", "2")
    assert ddp[0]["world_size"] == 2 and "MULTI_CPU" in ddp[0]["distributed_type"]
    assert len(single["losses"]) == len(ddp[0]["losses"]) == 2
    assert ddp[0]["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert ddp[0]["param_sum"] == pytest.approx(single["param_sum"], rel=1e-5)


def _check_regeneration(results, tmp_path, name):
    assert [r["world_size"] for r in results] == [2, 2]
    # every rank holds every prompt's response, in the original order
    assert results[0]["synthetic_ids"] == results[1]["synthetic_ids"]
    rows = [
        json.loads(line) for line in (tmp_path / f"{name}_out" / "self_play" / "iteration_1" / "train.jsonl").open()
    ]
    assert [row["index"] for row in rows] == list(range(12))
    assert [row["synthetic_ids"] for row in rows] == results[0]["synthetic_ids"]
    # both ranks made the same number of generate calls: 12 prompts / (2 per call * 2 ranks) = 3 per pass, 2 passes
    assert results[0]["generate_calls"] == results[1]["generate_calls"] == 6
    assert results[0]["global_step"] == 6


@pytest.mark.slow
def test_two_process_ddp_regenerates_every_prompt_once_in_order(tmp_path):
    results = launch(tmp_path, "ddp", ["--multi_gpu"])
    _check_regeneration(results, tmp_path, "ddp")


@pytest.mark.slow
def test_two_process_deepspeed_zero3_regenerates_and_finishes(tmp_path):
    results = launch(tmp_path, "zero3", ["--config_file", str(CONFIGS / "zero3.yaml")])
    assert "DEEPSPEED" in results[0]["distributed_type"]
    _check_regeneration(results, tmp_path, "zero3")


@pytest.mark.slow
def test_two_process_deepspeed_zero2_restarts_the_schedule_and_optimizer_every_iteration(tmp_path):
    results = launch(tmp_path, "zero2", ["--config_file", str(CONFIGS / "zero2.yaml")], "--warmup_steps", "0.5")
    assert "DEEPSPEED" in results[0]["distributed_type"]
    # 12 prompts / (2 per device * 2 processes) = 3 steps per iteration; warm-up ceil(0.5 * 3) = 2 steps, then decay
    one_iteration = [0.0, 5e-4, 1e-3]
    assert results[0]["learning_rates"] == pytest.approx(one_iteration * 2)
    # the reset reached the partitioned optimizer states of iteration 0 on every process
    assert all(len(r["optimizer_resets"]) == 1 and r["optimizer_resets"][0] > 0 for r in results[:1])
