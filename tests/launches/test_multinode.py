"""Two nodes on this machine over loopback (one CPU process each, gloo): a two-iteration run stopped after a checkpoint,
then resumed, with one shared output_dir and with a separate output_dir (and proto cache) per node. Every run must end
with the parameters of an uninterrupted one-node, two-process run of the same global batch."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "support" / "scripts" / "run_tiny.py"
ZERO3 = ROOT / "examples" / "accelerate_configs" / "zero3.yaml"
BIN = Path(sys.executable).parent
# 12 prompts / (2 per device * 2 processes) = 3 steps per iteration: checkpoint-4 is in iteration 1, and the run stops
# after step 5, so the resume replays a step and loads iteration 1's responses from the files
CHECKPOINTED = ["--save_strategy", "steps", "--save_steps", "4"]
TIMEOUT = 420

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    env["TSPIN_TRL_CACHE"] = str(cache)
    return env


def node_command(launcher: str, rank: int, port: int) -> list[str]:
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1"] + [
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
        ]
    config = ["--config_file", str(ZERO3)] if launcher == "zero3" else ["--multi_gpu", "--mixed_precision", "no"]
    return [str(BIN / "accelerate"), "launch", *config, "--num_machines", "2", "--machine_rank", str(rank)] + [
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        "--dynamo_backend",
        "no",
    ]


def launch_two_nodes(launcher: str, dirs: list[Path], caches: list[Path], *script_args: str) -> list[tuple[int, str]]:
    """Start node 0 and node 1 (node `r` writes to `dirs[r]`, caches in `caches[r]`); their exit codes and output."""
    port, nodes = free_port(), []
    for rank in (0, 1):
        command = node_command(launcher, rank, port) + [str(SCRIPT), "--output_dir", str(dirs[rank])]
        command += ["--result", f"{dirs[rank]}.result", *script_args]
        log = open(f"{dirs[rank]}.node{rank}.log", "w+")
        process = subprocess.Popen(
            command, env=environment(caches[rank]), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        nodes.append((process, log))
    outcomes = []
    for process, log in nodes:
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for other, _ in nodes:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            process.wait()
        log.seek(0)
        outcomes.append((process.returncode, log.read()))
        log.close()
    return outcomes


def run_two_nodes(launcher: str, dirs: list[Path], caches: list[Path], *script_args: str) -> list[dict]:
    outcomes = launch_two_nodes(launcher, dirs, caches, *script_args)
    for rank, (code, output) in enumerate(outcomes):
        assert code == 0, f"node {rank} failed:\n{output[-6000:]}"
    return [json.loads(Path(f"{dirs[rank]}.result.rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> dict:
    """The reference: an uninterrupted run of two processes on one node."""
    tmp = tmp_path_factory.mktemp("one_node")
    command = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(free_port()), str(SCRIPT)]
    command += ["--output_dir", str(tmp / "out"), "--result", str(tmp / "result")]
    completed = subprocess.run(
        command, env=environment(tmp / "cache"), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    result = json.loads((tmp / "result.rank0.json").read_text())
    result["logs"] = (tmp / "out" / "self_play" / "logs.jsonl").read_text().splitlines()
    return result


def layout_dirs(tmp_path: Path, shared: bool) -> tuple[list[Path], list[Path]]:
    if shared:
        return [tmp_path / "out"] * 2, [tmp_path / "cache"] * 2
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    return [node / "out" for node in nodes], [node / "cache" for node in nodes]


def check_stop_and_resume(launcher: str, tmp_path: Path, shared: bool, one_node: dict) -> list[dict]:
    dirs, caches = layout_dirs(tmp_path, shared)
    for directory in dirs:
        directory.parent.mkdir(parents=True, exist_ok=True)
    per_node = [] if shared else ["--save_on_each_node"]
    stopped = run_two_nodes(launcher, dirs, caches, *CHECKPOINTED, *per_node, "--stop_after_step", "5")
    assert [r["global_step"] for r in stopped] == [5, 5]
    resumed = run_two_nodes(launcher, dirs, caches, *CHECKPOINTED, *per_node, "--resume")
    assert [r["world_size"] for r in resumed] == [2, 2]
    assert [r["global_step"] for r in resumed] == [6, 6]
    assert resumed[0]["generate_calls"] == resumed[1]["generate_calls"] == 0  # iteration 1 came from the files
    for result in resumed:
        assert result["param_sum"] == pytest.approx(one_node["param_sum"], rel=1e-5)
        assert result["param_abs_sum"] == pytest.approx(one_node["param_abs_sum"], rel=1e-5)
        assert result["losses"] == pytest.approx(one_node["losses"], rel=1e-4)
    for directory in dirs:  # each node's copy (one folder when shared) is a complete run folder
        checkpoint = directory / "checkpoint-4"
        assert (checkpoint / "trainer_state.json").is_file()
        assert (checkpoint / "tspin_iteration_monitor.json").is_file()
        assert (checkpoint / "model.safetensors").is_file()
        assert (directory / "self_play" / "iteration_1" / "train.jsonl").is_file()
        assert len((directory / "self_play" / "logs.jsonl").read_text().splitlines()) == len(one_node["logs"])
        assert not list(directory.glob(".tspin_node_*")), "the layout markers were left behind"
        assert not (directory / "self_play" / "run.lock").exists()
    first = (dirs[0] / "self_play" / "iteration_1" / "train.jsonl").read_text()
    assert (dirs[1] / "self_play" / "iteration_1" / "train.jsonl").read_text() == first
    return resumed


@pytest.mark.parametrize("shared", [True, False], ids=["shared_output_dir", "separate_output_dirs"])
def test_two_nodes_stop_and_resume_match_one_node(tmp_path, one_node, shared):
    # the plain recipe (torchrun) on separate disks, accelerate on the shared one: both launchers are exercised
    check_stop_and_resume("accelerate" if shared else "torchrun", tmp_path, shared, one_node)


@pytest.mark.parametrize("shared", [True, False], ids=["shared_output_dir", "separate_output_dirs"])
def test_two_nodes_deepspeed_zero3_stop_and_resume_match_one_node(tmp_path, one_node, shared):
    resumed = check_stop_and_resume("zero3", tmp_path, shared, one_node)
    assert "DEEPSPEED" in resumed[0]["distributed_type"]
    dirs, _ = layout_dirs(tmp_path, shared)
    for directory in dirs:
        assert (directory / "checkpoint-4" / "latest").read_text().strip() == "global_step4"


@pytest.mark.parametrize(
    "shared, per_node, message",
    [
        (False, [], "do not share output_dir .* Set `save_on_each_node=True`"),
        (True, ["--save_on_each_node"], "`save_on_each_node=True`, but the 2 nodes of this run share output_dir"),
    ],
    ids=["separate_without_save_on_each_node", "shared_with_save_on_each_node"],
)
def test_a_layout_that_cannot_resume_stops_at_start_on_every_node(tmp_path, shared, per_node, message):
    dirs, caches = layout_dirs(tmp_path, shared)
    for directory in dirs:
        directory.parent.mkdir(parents=True, exist_ok=True)
    outcomes = launch_two_nodes("accelerate", dirs, caches, *CHECKPOINTED, *per_node)
    for code, output in outcomes:
        assert code != 0
        assert re.search(f"ValueError: .*{message}", output), output[-4000:]
        assert "Generating" not in output  # nothing ran before the error
    for directory in dirs:
        assert not list(directory.glob("checkpoint-*")) and not (directory / "self_play").exists()
        assert not list(directory.glob(".tspin_node_*"))
