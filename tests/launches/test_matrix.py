"""The configuration matrix: launch x generation backend x PEFT x objective x how the model is given, run on CPU.

Every pair of values of any two factors is run together at least once (a pairwise covering array, `tests/support/covering.py`).
Each cell is a real two-process launch (tests/support/scripts/matrix_cell.py: a tiny Llama with head_dim 32, 12 prompts, two
iterations, greedy generation, AdamW at a small learning rate so the greedy responses change with training) and must:

- finish, with the expected number of optimizer steps, every loss finite and both iteration files complete;
- write iteration 1's responses (generated from the weights trained in iteration 0) equal to those of a
  single-process `model.generate` reference run of the same objective and PEFT setting, with the same global batch;
- end with parameters within `PARAMETER_TOLERANCE` of that reference (LoRA cells are compared with a LoRA reference:
  their trained parameters are others);
- have moved its trained weights from the initial ones (a LoRA run: its adapter, its base weights within
  `FROZEN_TOLERANCE`).

The cells run only when selected (`make test-matrix`, i.e. `pytest -m matrix tests/launches/test_matrix.py`), not in
`make test`; the design test below (pairwise coverage) runs in both. A vLLM server for the server cells is started once
and shared; every cell reloads its own weights into it before its first generation pass.

Not runnable on CPU, so not in the matrix (`NOT_RUNNABLE_ON_CPU`, also in docs/distributed.md): FSDP2, vLLM's sleep
mode, TRL's NCCL weight transfer to a vLLM server, bf16/fp16 mixed precision on the vLLM side.
"""

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from tests.support.covering import pairwise_covering_array, uncovered_pairs


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "support" / "scripts" / "matrix_cell.py"
CONFIGS = ROOT / "examples" / "accelerate_configs"

FACTORS = {
    "launch": ["ddp", "zero2", "zero3", "zero3_offload"],
    "backend": ["hf", "vllm_colocate", "vllm_server"],
    "peft": ["full", "lora"],
    "objective": ["tspin", "spin", "tspin_ref"],
    "model": ["folder", "instance"],
    # Not in the list, but never run with several processes or with vLLM before: free here (no more cells)
    "gradient_checkpointing": ["off", "on"],
    "mix_previous": ["off", "on"],
}
# Run as a whole, not only pair by pair: issue 24's failure (vLLM's engine did not start from the ZeRO-3-partitioned,
# empty weights of a model given as an instance), and the same with LoRA: the engine then starts with random weights
# (`load_format="dummy"`) and generates only from the adapter-merged weights gathered from both processes
REQUIRED = [
    {
        "launch": "zero3",
        "backend": "vllm_colocate",
        "peft": peft,
        "objective": "tspin",
        "model": "instance",
        "gradient_checkpointing": "off",
        "mix_previous": "off",
    }
    for peft in ("full", "lora")
]
LAUNCHERS = {
    "ddp": ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"],
    "zero2": ["--config_file", str(CONFIGS / "zero2.yaml")],
    "zero3": ["--config_file", str(CONFIGS / "zero3.yaml")],
    "zero3_offload": ["--config_file", str(CONFIGS / "zero3_offload.yaml")],
}
# Learning rates at which iteration 0's training changes most greedy responses of iteration 1 (checked on the
# references), so that equal responses show the trained weights reached the generation backend.
LEARNING_RATES = {"full": 1e-4, "lora": 3e-3}
# max |parameter - reference's|: the launches sum gradients in another order (gloo all-reduce, DeepSpeed's
# partitioned reduce), and AdamW turns the float32 rounding of small gradients into step differences of up to about
# lr * 1e-3 per step
PARAMETER_TOLERANCE = 1e-5
# max |change| of a LoRA run's frozen base weights: TRL's weight sync to vLLM merges the adapter into them and
# subtracts it again, in place, which leaves float32 rounding behind (3.7e-9 measured after three syncs)
FROZEN_TOLERANCE = 1e-7
NOT_RUNNABLE_ON_CPU = {
    "FSDP2 (`examples/accelerate_configs/fsdp2.yaml`)": "accelerate 1.15 switches to FSDP only for GPU-like "
    "distributed types; with `use_cpu=True` the launch runs as plain DDP over gloo, without it as two separate "
    "single-process runs (measured; docs/distributed.md, FSDP2)",
    "vLLM sleep mode (`vllm_enable_sleep_mode=True`)": "vLLM's CPU build has no sleep mode; the trainer refuses it on "
    "CPU with a ValueError",
    "vLLM server weight transfer over NCCL (TRL's `VLLMClient.init_communicator`)": "needs CUDA: on CPU TRL raises "
    "NotImplementedError, so the CPU path saves the weights and asks the server to reload them from the folder",
    "vLLM in bfloat16/float16 (`vllm_dtype`)": "runs on CPU, but greedy outputs then differ from the float32 policy's "
    "(29/64 prompts equal, measured), so no cell could compare responses",
}
CELL_TIMEOUT = 600
SERVER_START_TIMEOUT = 600  # about 25 s on 2 idle cores; minutes on a loaded machine


def _ordered_cells() -> list[dict[str, str]]:
    # Server cells last: the shared server then runs only while they do (it is stopped with the module)
    order = FACTORS["backend"]
    return sorted(pairwise_covering_array(FACTORS, REQUIRED), key=lambda cell: order.index(cell["backend"]))


CELLS = _ordered_cells()


def cell_id(cell: dict[str, str]) -> str:
    name = "-".join(cell[factor] for factor in ("launch", "backend", "peft", "objective", "model"))
    return (
        name
        + ("-gc" if cell["gradient_checkpointing"] == "on" else "")
        + ("-mix" if cell["mix_previous"] == "on" else "")
    )


def test_the_matrix_covers_every_pair_of_values():
    assert not uncovered_pairs(FACTORS, CELLS)
    assert all(cell in CELLS for cell in REQUIRED)
    assert pairwise_covering_array(FACTORS, REQUIRED) == pairwise_covering_array(FACTORS, REQUIRED)  # deterministic
    # 4 launches x 3 backends is the lower bound
    assert 4 * 3 <= len(CELLS) <= 14
    assert len({cell_id(cell) for cell in CELLS}) == len(CELLS)


def test_pairwise_covering_array_on_other_factors():
    factors = {"a": [0, 1, 2], "b": ["x", "y"], "c": [True, False], "d": [1, 2, 3, 4], "e": ["only"]}
    rows = pairwise_covering_array(factors)
    assert not uncovered_pairs(factors, rows)
    assert all(set(row) == set(factors) for row in rows)
    missing = uncovered_pairs(factors, rows[1:])
    assert missing and all(rows[0][a] == x and rows[0][b] == y for a, x, b, y in missing)
    required = [{"a": 2, "b": "y", "c": False, "d": 4, "e": "only"}] * 2
    with_required = pairwise_covering_array(factors, required)
    assert not uncovered_pairs(factors, with_required)
    assert sum(row == required[0] for row in with_required) >= 2
    with pytest.raises(ValueError, match="'b'"):
        pairwise_covering_array({"a": [1], "b": [2, 2]})
    with pytest.raises(ValueError, match="Required row"):
        pairwise_covering_array(factors, [{"a": 5, "b": "x", "c": True, "d": 1, "e": "only"}])


# ----------------------------------------------------------------------------------------------------------- the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(cache: Path) -> dict[str, str]:
    env = dict(os.environ, TSPIN_TRL_CACHE=str(cache))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    # A fixed key/value cache size: vLLM's CPU default takes a share of all RAM and fails on a busy machine
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    return env


def run_cell(directory: Path, cell: dict[str, str], model_dir: Path, server_url: str | None, processes: int) -> dict:
    """Launch one run; its facts, parameters, iteration files and wall time (raises with the output if it failed)."""
    directory.mkdir(parents=True, exist_ok=True)
    if processes == 1:
        command = [sys.executable, str(SCRIPT), "--per_device_train_batch_size", "4"]
    else:
        accelerate = Path(sys.executable).with_name("accelerate")
        command = [str(accelerate), "launch", *LAUNCHERS[cell["launch"]], "--num_processes", str(processes)]
        command += ["--main_process_port", str(free_port()), str(SCRIPT), "--per_device_train_batch_size", "2"]
    command += ["--output_dir", str(directory / "out"), "--result", str(directory / "result")]
    command += ["--objective", cell["objective"], "--backend", cell["backend"]]
    command += ["--learning_rate", str(LEARNING_RATES[cell["peft"]])]
    command += ["--lora"] if cell["peft"] == "lora" else []
    command += ["--model_dir", str(model_dir)] if cell["model"] == "folder" else []
    command += ["--gradient_checkpointing"] if cell["gradient_checkpointing"] == "on" else []
    command += ["--mix_previous_iteration"] if cell["mix_previous"] == "on" else []
    command += ["--vllm_server_base_url", server_url] if server_url else []
    start = time.perf_counter()
    completed = subprocess.run(
        command, env=environment(directory / "cache"), capture_output=True, text=True, timeout=CELL_TIMEOUT
    )
    seconds = time.perf_counter() - start
    (directory / "output.log").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise AssertionError(
            f"exit code {completed.returncode}:\n{completed.stdout[-3000:]}{completed.stderr[-6000:]}"
        )
    from safetensors.torch import load_file

    iterations = {}
    for iteration in (0, 1):
        path = directory / "out" / "self_play" / f"iteration_{iteration}" / "train.jsonl"
        iterations[iteration] = [json.loads(line) for line in path.open()]
    return {
        "facts": json.loads((directory / "result.json").read_text()),
        "parameters": load_file(directory / "result.safetensors"),
        "iterations": iterations,
        "seconds": seconds,
    }


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix")


@pytest.fixture(scope="module")
def model_dir(matrix_dir) -> Path:
    """The tiny model and tokenizer as a folder, for the cells that give the model as a path (same weights as the
    instance the script builds)."""
    from tspin_trl.demo.presets import save_tiny_preset

    return Path(save_tiny_preset(matrix_dir / "model", num_attention_heads=2))


@pytest.fixture(scope="module")
def initial_parameters(model_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def trained_and_frozen_change(parameters: dict, initial: dict) -> tuple[float, float]:
    """The largest change of a trained parameter and of a frozen one, from the initial model's.

    A LoRA run's adapter matrices (`lora_A`/`lora_B`) are its trained parameters: their change is measured by `lora_B`,
    which starts at zero; its base weights (`base_model.model.<name>`, `.base_layer` for adapted layers) are frozen.
    """
    if not any("lora_" in name for name in parameters):
        return max((parameters[name] - initial[name]).abs().max().item() for name in initial), 0.0
    trained = max(tensor.abs().max().item() for name, tensor in parameters.items() if "lora_B" in name)
    base = {
        name.removeprefix("base_model.model.").replace(".base_layer", ""): tensor
        for name, tensor in parameters.items()
        if "lora_" not in name
    }
    assert base.keys() == initial.keys()
    return trained, max((base[name] - initial[name]).abs().max().item() for name in initial)


@pytest.fixture(scope="module")
def references(matrix_dir, model_dir):
    """Single-process `model.generate` runs without gradient checkpointing, one per (objective, peft, mix_previous)
    (the settings that change what is trained), made on first use."""
    cache: dict[tuple[str, str, str], dict] = {}

    def reference(objective: str, peft: str, mix_previous: str) -> dict:
        key = objective, peft, mix_previous
        if key not in cache:
            cell = {"launch": "single", "backend": "hf", "peft": peft, "objective": objective, "model": "instance"}
            cell |= {"gradient_checkpointing": "off", "mix_previous": mix_previous}
            result = run_cell(matrix_dir / ("reference-" + "-".join(key)), cell, model_dir, None, processes=1)
            rows = result["iterations"][1]
            # Training changed most greedy responses: equal responses in a cell mean its trained weights generated
            changed = sum(row["synthetic_ids"] != row["proto_ids"] for row in rows)
            assert changed >= len(rows) // 2, f"reference {objective}/{peft}: only {changed} responses changed"
            cache[key] = result
        return cache[key]

    return reference


@pytest.fixture(scope="module")
def vllm_server(matrix_dir):
    """One vLLM server (float32, CPU) for every server cell. It starts from other weights (seed 1) than the
    trainer's, so that only the trainer's weight reload makes its responses equal."""
    from tspin_trl.demo.presets import save_tiny_preset

    folder = save_tiny_preset(matrix_dir / "server_model", num_attention_heads=2, seed=1)
    port = free_port()
    log_path = matrix_dir / "server.log"
    log = log_path.open("w")
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--dtype", "float32", "--max-model-len", "512"]
    server = subprocess.Popen(
        command,
        env=dict(environment(matrix_dir / "server_cache"), VLLM_SERVER_DEV_MODE="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + SERVER_START_TIMEOUT
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the vLLM server did not start:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        log.close()


RESULTS: list[dict] = []


@pytest.fixture(scope="module")
def report(matrix_dir):
    """Writes the table of cells (docs/distributed.md's) when the module ends: to `$TSPIN_MATRIX_REPORT` if set."""
    yield RESULTS
    lines = [
        "| launch | backend | peft | objective | model as | grad. ckpt | mix prev. | time (s) | iteration-1 responses "
        "equal | max param diff | weights changed by |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in RESULTS:
        cell = row["cell"]
        equal = row.get("responses_equal", "-")
        difference = f"{row['max_param_diff']:.1e}" if "max_param_diff" in row else "-"
        seconds = f"{row['seconds']:.0f}" if "seconds" in row else "-"
        changed = row.get("weights_changed", "-")
        outcome = "" if row["passed"] else f" (FAILED: {row['error']})"
        lines.append(
            f"| {cell['launch']} | {cell['backend']} | {cell['peft']} | {cell['objective']} | {cell['model']} | "
            f"{cell['gradient_checkpointing']} | {cell['mix_previous']} | {seconds} | {equal}{outcome} | {difference} | {changed} |"
        )
    text = "\n".join(lines) + "\n"
    path = Path(os.environ.get("TSPIN_MATRIX_REPORT") or matrix_dir / "report.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"\nMatrix report ({path}):\n{text}")


@pytest.mark.matrix
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_cell(cell, request, matrix_dir, model_dir, initial_parameters, references, report):
    reference = references(cell["objective"], cell["peft"], cell["mix_previous"])
    server_url = request.getfixturevalue("vllm_server") if cell["backend"] == "vllm_server" else None
    row = {"cell": cell, "passed": False, "error": "did not finish"}
    report.append(row)
    result = run_cell(matrix_dir / cell_id(cell), cell, model_dir, server_url, processes=2)
    row["seconds"] = result["seconds"]
    assert result["facts"]["world_size"] == 2
    expected_type = "MULTI_CPU" if cell["launch"] == "ddp" else "DEEPSPEED"
    assert expected_type in result["facts"]["distributed_type"]
    # 12 prompts / (2 processes x 2 per device) = 3 steps per iteration; twice that with the previous iteration mixed in
    steps = 12 if cell["mix_previous"] == "on" else 6
    assert result["facts"]["global_step"] == reference["facts"]["global_step"] == steps
    losses = result["facts"]["losses"]
    assert len(losses) == steps and all(math.isfinite(loss) for loss in losses), losses

    for iteration in (0, 1):
        rows, expected = result["iterations"][iteration], reference["iterations"][iteration]
        assert [r["index"] for r in rows] == list(range(len(expected)))
    responses = [r["synthetic_ids"] for r in result["iterations"][1]]
    expected = [r["synthetic_ids"] for r in reference["iterations"][1]]
    equal = sum(a == b for a, b in zip(responses, expected))
    row["responses_equal"] = f"{equal}/{len(expected)}"
    parameters, expected_parameters = result["parameters"], reference["parameters"]
    assert parameters.keys() == expected_parameters.keys()
    difference = max((parameters[name] - expected_parameters[name]).abs().max().item() for name in parameters)
    row["max_param_diff"] = difference
    # the proto pass (initial weights) too: for a server cell it ran after the first weight reload
    row["error"] = "proto responses differ"
    assert [r["proto_ids"] for r in result["iterations"][1]] == [r["proto_ids"] for r in reference["iterations"][1]]
    row["error"] = "iteration-1 responses differ"
    assert responses == expected
    row["error"] = f"parameters differ by {difference:.1e}"
    assert difference <= PARAMETER_TOLERANCE
    assert all(torch.isfinite(p).all() for p in parameters.values())
    # Training moved the trained weights away from the initial ones (and LoRA left the base weights alone, up to the
    # rounding of vLLM's merge-and-unmerge sync)
    trained, frozen = trained_and_frozen_change(parameters, initial_parameters)
    row["weights_changed"] = f"{trained:.1e}" + (f" (frozen: {frozen:.0e})" if cell["peft"] == "lora" else "")
    row["error"] = f"trained weights changed by {trained:.1e}, frozen ones by {frozen:.1e}"
    assert trained > 1e-4 and frozen <= FROZEN_TOLERANCE, (trained, frozen)
    row["passed"] = True
