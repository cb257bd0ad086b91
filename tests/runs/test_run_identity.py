"""A run never trains on responses that are not its own (issue: stale files, changed settings, concurrent runs,
half-written checkpoints, non-finite settings, invalid stored files)."""

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from tests.support import StopAfter, make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.cache import ProtoCache, model_fingerprint
from tspin_trl.checked_io import atomic_write, json_digest, read_checked_jsonl, read_jsonl, sha256_hex
from tspin_trl.checkpoints import last_complete_checkpoint
from tspin_trl.demo.presets import build_tiny_model
from tspin_trl.generation import ChunkStore
from tspin_trl.locks import OutputDirLockedError, RunLock
from tspin_trl.self_play import SelfPlayError


def interrupted_run(output_dir, tokenizer, stop_after=6, **config):
    """A 2-iteration run (4 steps each) stopped after `stop_after` steps, with a checkpoint at every step."""
    trainer = self_play_trainer(output_dir, tokenizer, save_strategy="steps", save_steps=1, **config)
    trainer.add_callback(StopAfter(stop_after))
    trainer.train()
    return trainer


# ---- 1. stale files and changed settings ----------------------------------------------------------------------------


def test_a_fresh_run_refuses_another_runs_files(tmp_path, tokenizer):
    self_play_trainer(tmp_path, tokenizer).train()
    other_rows = [r | {"completion": [{"role": "assistant", "content": "0"}]} for r in sorting_rows(8)]
    with pytest.raises(SelfPlayError, match=r"holds the self-play files of another run \(it differs in: data"):
        self_play_trainer(tmp_path, tokenizer, rows=other_rows).train()
    with pytest.raises(SelfPlayError, match=r"temperature.*1\.0 -> 0\.5|sampling"):
        self_play_trainer(tmp_path, tokenizer, temperature=0.5).train()


def test_a_fresh_identical_run_regenerates_what_the_trained_policy_made(tmp_path, tokenizer):
    first = self_play_trainer(tmp_path, tokenizer)
    first.train()
    again = self_play_trainer(tmp_path, tokenizer)
    again.train()
    # iteration 1's responses came from the earlier run's trained policy: sampled again, not reused
    assert "iteration_1/train" in again.self_play.generation_stats
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"num_iterations": 3}, "num_iterations"),
        ({"temperature": 0.5}, "sampling"),
        ({"rows": sorting_rows(10)}, "data"),
        ({"learning_rate": 5e-4}, "learning_rate"),
    ],
)
def test_a_resume_with_changed_settings_names_each_change(tmp_path, tokenizer, change, field):
    interrupted_run(tmp_path, tokenizer)
    rows = change.pop("rows", None)
    resumed = self_play_trainer(tmp_path, tokenizer, rows=rows, save_strategy="steps", save_steps=1, **change)
    with pytest.raises(SelfPlayError, match=f"Cannot resume.*Changed: .*{field}"):
        resumed.train(resume_from_checkpoint=True)


# ---- 2. settings are finite ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["alpha", "beta", "beta_first_iteration", "real_nll_weight", "learning_rate", "max_grad_norm", "top_p"]
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_settings_are_refused_with_the_field_named(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"TSPINConfig.{field}=.*finite"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **{field: value})


@pytest.mark.parametrize("field", ["alpha", "beta", "real_nll_weight", "temperature"])
def test_absurd_magnitudes_are_refused(tmp_path, field):
    with pytest.raises(ValueError, match=f"TSPINConfig.{field}=1e\\+30 is invalid: it must be <= 100"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **{field: 1e30})


# ---- 3. concurrency -------------------------------------------------------------------------------------------------


def _write_many(path: str, tag: str, count: int) -> None:
    for i in range(count):
        atomic_write(path, f"{tag} {i}\n")


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    path = str(tmp_path / "shared.jsonl")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(path, tag, 2000)) for tag in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert Path(path).read_text().split()[0] in ("a", "b")
    assert not list(tmp_path.glob("*.tmp"))


def test_one_run_per_output_dir(tmp_path, tokenizer):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path = tmp_path / "self_play" / "run.lock"
        lock_path.parent.mkdir(parents=True)
        lock_path.write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "started": time.time()}))
        with pytest.raises(OutputDirLockedError, match=f"process {sleeper.pid}"):
            self_play_trainer(tmp_path, tokenizer).train()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder died: its lock is stale and is taken over
    trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=1)
    trainer.train()
    assert not lock_path.exists(), "the lock is released when training ends"


def _hold_entry_then_save(directory: str, key: str, responses: list, ready) -> None:
    lock = ProtoCache(directory).claim(key, len(responses), 100)
    ready.set()
    time.sleep(2)
    ProtoCache(directory).save(key, responses, {"test": True})
    lock.release()


def test_two_runs_share_a_proto_cache_entry_without_duplicated_work(tmp_path):
    directory, key, responses = str(tmp_path / "cache"), json_digest({"test": True})[:32], [[1, 2], [3]]
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    writer = context.Process(target=_hold_entry_then_save, args=(directory, key, responses, ready))
    writer.start()
    assert ready.wait(30)
    start = time.perf_counter()
    got = ProtoCache(directory).claim(key, len(responses), 100, poll_seconds=0.2)
    writer.join(30)
    assert got == responses, "the second run waits for the first and uses its entry instead of generating"
    assert time.perf_counter() - start > 1


# ---- 4. a corrupted iteration file after training began ---------------------------------------------------------


def test_a_corrupted_iteration_file_after_training_began_is_an_error(tmp_path, tokenizer):
    interrupted_run(tmp_path, tokenizer)  # stopped at step 6, inside iteration 1 (steps 5..8)
    data = tmp_path / "self_play" / "iteration_1" / "train.jsonl"
    data.write_text(data.read_text()[:-20])
    resumed = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=1)
    with pytest.raises(
        SelfPlayError, match="Training of iteration 1 has begun.*resume from the checkpoint taken at the"
    ):
        resumed.train(resume_from_checkpoint=True)
    # resuming at the start of the iteration regenerates it from the right policy
    resumed = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=1)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert "iteration_1/train" in resumed.self_play.generation_stats


# ---- 5. resume finds the last complete checkpoint ---------------------------------------------------------------


def test_resume_skips_a_half_written_checkpoint(tmp_path, tokenizer, caplog):
    interrupted_run(tmp_path, tokenizer, stop_after=3)
    (tmp_path / "checkpoint-99").mkdir()  # a save killed midway: no trainer_state.json, no weights
    partial = tmp_path / "checkpoint-50"
    shutil.copytree(tmp_path / "checkpoint-3", partial)
    (partial / "model.safetensors").unlink()  # the disk filled up during the save
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-3")
    assert "checkpoint-99" in caplog.text and "checkpoint-50" in caplog.text
    resumed = self_play_trainer(tmp_path, tokenizer)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8


# ---- 6. stored files are validated ----------------------------------------------------------------------------------


def _rewrite_with_checksum(data_path: Path, meta_path: Path, rows: list) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    data_path.write_text(text)
    meta = json.loads(meta_path.read_text())
    meta.update(sha256=sha256_hex(text.encode()), count=len(rows))
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("bad_ids", [[10**6], [-1], [1.5], "abc"])
def test_a_cache_entry_with_invalid_token_ids_is_regenerated(tmp_path, tokenizer, bad_ids, caplog):
    self_play_trainer(tmp_path / "first", tokenizer, num_iterations=1).train()
    cache = Path(os.environ["TSPIN_TRL_CACHE"])
    data = next(cache.glob("*.jsonl"))
    rows = [json.loads(line) for line in data.open()]
    rows[0] = bad_ids
    _rewrite_with_checksum(data, data.with_suffix(".json"), rows)  # a forged entry whose checksum matches
    with caplog.at_level("WARNING"):
        again = self_play_trainer(tmp_path / "second", tokenizer, num_iterations=1)
        again.train()
    assert "proto/train" in again.self_play.generation_stats
    assert "outside the vocabulary" in caplog.text


def test_a_sidecar_that_is_not_an_object_is_ignored(tmp_path):
    data, meta = tmp_path / "x.jsonl", tmp_path / "x.json"
    data.write_text("[1]\n")
    meta.write_text("[1, 2]")
    assert read_checked_jsonl(str(data), str(meta)) is None


def test_chunks_and_manifest_are_checksummed_and_validated(tmp_path):
    chunks = [[0, 1], [2, 3]]
    store = ChunkStore(str(tmp_path), "key", vocab_size=10)
    assert store.load(chunks) == {}
    store.write(0, [(0, [1, 2]), (1, [3])])
    store.write(1, [(2, [4]), (3, [5, 6])])
    assert sorted(ChunkStore(str(tmp_path), "key", 10).load(chunks)) == [0, 1]
    # a forged chunk of the right length: its checksum no longer matches the manifest
    (tmp_path / "chunk_00001.jsonl").write_text("[2, []]\n[3, []]\n")
    assert sorted(ChunkStore(str(tmp_path), "key", 10).load(chunks)) == [0]
    # garbage in the manifest: every chunk is discarded, nothing crashes
    (tmp_path / "manifest.json").write_text("{not json")
    assert ChunkStore(str(tmp_path), "key", 10).load(chunks) == {}
    # ids outside the vocabulary, with a matching checksum
    store = ChunkStore(str(tmp_path), "key", 10)
    store.load(chunks)
    store.write(0, [(0, [99]), (1, [3])])
    assert ChunkStore(str(tmp_path), "key", 10).load(chunks) == {}


# ---- 7. the smaller ones ------------------------------------------------------------------------------------------


def test_eval_split_names_cannot_escape_the_output_dir(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"Evaluation dataset name '\.\./\.\./x' cannot be used in file names"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path),
            train_dataset=Dataset.from_list(sorting_rows(4)),
            eval_dataset={"../../x": Dataset.from_list(sorting_rows(2))},
            processing_class=tokenizer,
        )


def test_the_fingerprint_covers_every_parameter(tokenizer):
    model = build_tiny_model(tokenizer)
    before = model_fingerprint(model)["weights"]
    with torch.no_grad():
        weight = model.model.layers[0].mlp.up_proj.weight
        weight.view(-1)[weight.numel() // 2] += 1e-3  # the middle of one tensor: not in its first or last values
    assert model_fingerprint(model)["weights"] != before


def test_plot_logs_tolerate_a_truncated_last_line(tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text('{"loss": 1.0, "step": 1}\n{"loss": 0.5, "st')
    assert read_jsonl(str(path)) == [{"loss": 1.0, "step": 1}]


def test_generation_lengths_training_cannot_use_are_warned(tmp_path, tokenizer, caplog):
    with caplog.at_level("WARNING"):
        self_play_trainer(tmp_path, tokenizer, max_length=40, max_completion_length=200)
    assert "would be generated and then cut before training" in caplog.text


def test_a_failing_scorer_is_named_and_the_checkpoint_kept(tmp_path, tokenizer, caplog):
    calls = []

    def broken_scorer(responses, rows):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("scorer bug")
        return 0.5

    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, num_iterations=2, per_device_train_batch_size=2, save_strategy="epoch"),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
        scorer=broken_scorer,
        scorer_dataset=Dataset.from_list(sorting_rows(2)),
    )
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "The scorer test_a_failing_scorer_is_named_and_the_checkpoint_kept.<locals>.broken_scorer raised" in (
        caplog.text
    )
    assert (tmp_path / "checkpoint-2").is_dir() and (tmp_path / "checkpoint-4").is_dir()
    records = trainer.run_folder.scores()
    assert [r["label"] for r in records] == ["start", "iteration_0", "iteration_1"]
    assert records[1]["error"] == "RuntimeError: scorer bug"


def test_a_nan_score_is_warned(tmp_path, tokenizer, caplog):
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, per_device_train_batch_size=2),
        train_dataset=Dataset.from_list(sorting_rows(4)),
        processing_class=tokenizer,
        scorer=lambda responses, rows: float("nan"),
        scorer_dataset=Dataset.from_list(sorting_rows(2)),
    )
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "returned nan" in caplog.text


def test_a_python_list_as_the_dataset_is_a_clear_error(tmp_path, tokenizer):
    with pytest.raises(TypeError, match=r"Dataset.from_list\(rows\)"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path),
            train_dataset=sorting_rows(4),
            processing_class=tokenizer,
        )


def test_run_lock_is_reentrant_within_a_process(tmp_path):
    lock = RunLock(str(tmp_path / "run.lock"))
    lock.acquire()
    RunLock(str(tmp_path / "run.lock")).acquire()  # e.g. a crashed train() in this process left it behind
    lock.release()


# ---- defects the fault campaign found (bench/faults/), each fixed ---------------------------------------------------


def test_tspin_ref_with_data_mixing_trains(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, objective="tspin_ref", alpha=0.1, mix_previous_iteration=True)
    trainer.train()  # 4 reference roles: computed as 3 + 1 responses per forward pass
    rows = [json.loads(line) for line in (tmp_path / "self_play" / "iteration_1" / "train.jsonl").open()]
    assert all("ref_previous_synthetic_logps" in r and "ref_proto_logps" in r for r in rows)


def test_a_resume_with_another_generation_batch_size_is_refused(tmp_path, tokenizer):
    interrupted_run(tmp_path, tokenizer)
    resumed = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=1, generation_batch_size=8)
    with pytest.raises(SelfPlayError, match="generation_batch_size"):
        resumed.train(resume_from_checkpoint=True)


def test_the_proto_cache_key_covers_the_chunking(tmp_path, tokenizer):
    self_play_trainer(tmp_path / "a", tokenizer, num_iterations=1).train()
    other = self_play_trainer(tmp_path / "b", tokenizer, num_iterations=1, generation_batch_size=8)
    other.train()
    assert "proto/train" in other.self_play.generation_stats, "other chunks draw other samples: not the same entry"


def test_a_renamed_cache_entry_is_ignored(tmp_path):
    cache = ProtoCache(str(tmp_path))
    cache.save("a" * 32, [[1]], {"model": "other"})
    for suffix in (".jsonl", ".json"):
        os.rename(tmp_path / ("a" * 32 + suffix), tmp_path / ("b" * 32 + suffix))
    assert cache.load("b" * 32, 1, 10) is None


def test_a_lock_whose_pid_was_reused_is_stale(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "run.lock"
        owner = {"pid": sleeper.pid, "pid_start": "1", "host": os.uname().nodename, "started": 0}
        path.write_text(json.dumps(owner))  # a live pid, but not the process that took the lock
        lock = RunLock(str(path))
        lock.acquire()
        assert lock.held
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.pt"])
def test_a_damaged_checkpoint_file_is_named(tmp_path, tokenizer, damaged):
    from tspin_trl.trainer import CheckpointLoadError

    interrupted_run(tmp_path, tokenizer)
    path = tmp_path / "checkpoint-6" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    resumed = self_play_trainer(tmp_path, tokenizer, save_strategy="steps", save_steps=1)
    with pytest.raises(CheckpointLoadError, match="checkpoint-6.*resume_from_checkpoint=.*checkpoint-5"):
        resumed.train(resume_from_checkpoint=True)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_iterations", "3", "must be an integer"),
        ("per_device_train_batch_size", 0, ">= 1"),
        ("gradient_accumulation_steps", 0, ">= 1"),
        ("weight_decay", -0.1, r"in \[0, 1\]"),
        ("weight_decay", 1e30, r"in \[0, 1\]"),
        ("warmup_steps", 1e30, "number of steps up to"),
    ],
)
def test_settings_the_campaign_found_accepted_are_refused(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=f"TSPINConfig.{field}=.*{message}"):
        TSPINConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **{field: value})


def test_a_foreign_lock_naming_a_live_process_is_stale(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "k.lock"
        path.write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))  # not written by a RunLock
        lock = ProtoCache(str(tmp_path)).claim("k", 1, 10, poll_seconds=0.1)
        assert isinstance(lock, RunLock) and lock.held
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_cache_lock_without_progress_is_taken_over(tmp_path):
    path = tmp_path / "k.lock"
    # a holder on another host (its liveness cannot be checked here) that stopped writing long ago
    path.write_text(json.dumps({"pid": 1, "pid_start": "1", "host": "another-host", "started": 0}))
    os.utime(path, (0, 0))
    lock = ProtoCache(str(tmp_path)).claim("k", 1, 10, poll_seconds=0.1, stale_after=60)
    assert isinstance(lock, RunLock) and lock.held
    lock.release()
