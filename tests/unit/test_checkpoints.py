"""`tspin_trl/checkpoints.py`: checkpoint names, when a checkpoint is complete, the one a resume takes (in one process),
the error for a damaged one, and the node layout's checks (the multi-node runs: `tests/launches/test_multinode.py`)."""

import json

import pytest
from accelerate import Accelerator

from tspin_trl.checkpoints import (
    NodeLayout,
    check_complete_on_every_node,
    checkpoint_dir,
    checkpoint_is_complete,
    checkpoint_load_error,
    checkpoint_steps,
    complete_checkpoint_steps,
    detect_node_layout,
    last_checkpoint_on_every_node,
    last_complete_checkpoint,
    step_of,
)


def save(output_dir, step, state=None, weights="model.safetensors"):
    """A `checkpoint-<step>` folder as a save leaves it: `trainer_state.json` (unless `state` is False) and weights."""
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if state is not False:
        (folder / "trainer_state.json").write_text(
            state if isinstance(state, str) else json.dumps({"global_step": step})
        )
    if weights:
        (folder / weights).write_bytes(b"weights")
    return folder


def test_checkpoint_names_and_steps(tmp_path):
    assert checkpoint_dir("out", 12) == "out/checkpoint-12"
    assert step_of("out/checkpoint-12") == 12 and step_of("out/checkpoint-12/") == 12
    assert step_of("out/checkpoint-best") is None and step_of("out/my-checkpoint-3") is None


def test_a_checkpoint_is_complete_with_a_readable_state_and_weights(tmp_path):
    assert checkpoint_is_complete(str(save(tmp_path, 1)))
    assert checkpoint_is_complete(str(save(tmp_path, 2, weights="adapter_model.safetensors")))
    deepspeed = save(tmp_path, 3, weights=None)
    (deepspeed / "global_step3").mkdir()
    assert checkpoint_is_complete(str(deepspeed)), "DeepSpeed's weights are in its global_step folder"
    assert not checkpoint_is_complete(str(save(tmp_path, 4, weights=None))), "no weights"
    assert not checkpoint_is_complete(str(save(tmp_path, 5, state=False))), "no trainer_state.json"
    assert not checkpoint_is_complete(str(save(tmp_path, 6, state='{"global_st'))), "a truncated state"
    assert not checkpoint_is_complete(str(save(tmp_path, 7, state="[1, 2]"))), "a state that is not an object"
    assert not checkpoint_is_complete(str(tmp_path / "checkpoint-99")), "absent"


def test_the_last_complete_checkpoint_skips_incomplete_ones_and_names_them(tmp_path, caplog):
    assert last_complete_checkpoint(str(tmp_path)) is None
    for step in (2, 10, 4):
        save(tmp_path, step)
    save(tmp_path, 12, weights=None)  # a save killed midway
    (tmp_path / "checkpoint-20").write_text("a file, not a folder")
    (tmp_path / "checkpoint-final").mkdir()
    assert checkpoint_steps(str(tmp_path)) == [12, 10, 4, 2]
    with caplog.at_level("WARNING"):
        assert complete_checkpoint_steps(str(tmp_path)) == [10, 4, 2]
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert "Skipping the incomplete checkpoint" in caplog.text and "checkpoint-12" in caplog.text


def test_in_one_process_every_node_is_this_one(tmp_path):
    accelerator = Accelerator(cpu=True)
    with pytest.raises(ValueError, match="No complete checkpoint found in .* Start without `resume_from_checkpoint`"):
        last_checkpoint_on_every_node(str(tmp_path), accelerator, num_nodes=1)
    save(tmp_path, 3)
    save(tmp_path, 5, weights=None)
    assert last_checkpoint_on_every_node(str(tmp_path), accelerator, num_nodes=1) == str(tmp_path / "checkpoint-3")
    check_complete_on_every_node(str(tmp_path / "checkpoint-3"), accelerator)
    with pytest.raises(ValueError, match="missing or incomplete on 1 of the 1 processes' nodes"):
        check_complete_on_every_node(str(tmp_path / "checkpoint-5"), accelerator)
    assert detect_node_layout(str(tmp_path), accelerator) == NodeLayout(1, True)


def test_a_damaged_checkpoint_names_an_earlier_complete_one(tmp_path):
    for step in (2, 4, 6):
        save(tmp_path, step)
    error = checkpoint_load_error("the optimizer", str(tmp_path / "checkpoint-6"), EOFError("truncated"))
    message = str(error)
    assert "Could not load the optimizer from the checkpoint" in message and "EOFError: truncated" in message
    assert f"resume_from_checkpoint={str(tmp_path / 'checkpoint-4')!r}" in message
    first = checkpoint_load_error("the model weights", str(tmp_path / "checkpoint-2"), OSError("bad"))
    assert "start over" in str(first), "no earlier checkpoint"


def test_the_writers_must_match_the_node_layout():
    NodeLayout(1, True).check_writers("out", save_on_each_node=True)  # one node: anything goes
    NodeLayout(2, True).check_writers("out", save_on_each_node=False)
    NodeLayout(2, False).check_writers("out", save_on_each_node=True)
    with pytest.raises(ValueError, match="share output_dir 'out'.*Set `save_on_each_node=False`"):
        NodeLayout(2, True).check_writers("out", save_on_each_node=True)
    with pytest.raises(ValueError, match="do not share output_dir 'out'.*Set `save_on_each_node=True`"):
        NodeLayout(2, False).check_writers("out", save_on_each_node=False)


def test_model_weights_are_loaded_as_saved_or_refused(tmp_path, tokenizer):
    from tests.support import tiny_moe
    from tspin_trl.checkpoints import CheckpointLoadError, load_model_weights, round_trip_problems
    from tspin_trl.demo import build_tiny_model

    # Qwen2-MoE holds its experts fused and saves them one by one (`mlp.experts.0.gate_proj.weight`, ...)
    saved = tiny_moe(tokenizer, "qwen2_moe")
    saved.save_pretrained(tmp_path / "moe")
    assert round_trip_problems(saved, str(tmp_path / "moe")) == []
    other = tiny_moe(tokenizer, "qwen2_moe")
    for param in other.parameters():
        param.data.add_(1.0)
    assert load_model_weights(other, str(tmp_path / "moe"))
    for (name, a), b in zip(saved.state_dict().items(), other.state_dict().values(), strict=True):
        assert a.equal(b), f"{name} was not loaded as saved"

    # a model whose saves leave a trained tensor out: the check names it, a resume is refused
    lossy = build_tiny_model(tokenizer)
    lossy._keys_to_ignore_on_save = {"model.norm.weight"}
    lossy.save_pretrained(tmp_path / "lossy")
    assert round_trip_problems(lossy, str(tmp_path / "lossy")) == ["no saved value for model.norm.weight"]
    with pytest.raises(CheckpointLoadError, match=r"no value for 1 trained tensors .*\(model.norm.weight\)"):
        load_model_weights(build_tiny_model(tokenizer), str(tmp_path / "lossy"))
    assert not load_model_weights(lossy, str(tmp_path)), "no model weights there: the caller loads its own way"


def test_a_write_error_of_a_checkpoint_save_is_named(tmp_path):
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from tspin_trl.checkpoints import checkpoint_write_error

    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    try:  # safetensors' writer names no file in its errors
        save_file({"w": torch.zeros(2)}, str(folder / "missing" / "model.safetensors"))
    except SafetensorError as error:
        named = checkpoint_write_error(str(folder), error)
    assert named.errno == 2 and named.filename == str(folder / "model.safetensors")
    assert f"(writing {folder / 'model.safetensors'}, while saving checkpoint-3)" in str(named)
    (folder / "optimizer.pt").write_bytes(b"half")  # torch's writer: the last of its files that exists
    named = checkpoint_write_error(str(folder), RuntimeError("[enforce fail at inline_container.cc:672] . unexpected"))
    assert named.filename == str(folder / "optimizer.pt") and "the write failed (RuntimeError" in str(named)
    assert checkpoint_write_error(str(folder), ValueError("not about a file")) is None
    assert checkpoint_write_error(str(folder), FileNotFoundError(2, "No such file", "x")) is None, "named already"
