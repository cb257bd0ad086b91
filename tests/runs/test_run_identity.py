"""A run never trains on responses that are not its own: another run's files in `output_dir` are refused, a fresh
identical run regenerates what a trained policy made, the proto cache is keyed by everything that changes its
responses, one run per `output_dir`, and settings changed on `trainer.args` are checked when training starts."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.support import make_config, self_play_trainer, sorting_rows
from tspin_trl.checked_io import sha256_hex
from tspin_trl.locks import OutputDirLockedError
from tspin_trl.self_play import SelfPlayError


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


def test_the_proto_cache_key_covers_the_chunking(tmp_path, tokenizer):
    self_play_trainer(tmp_path / "a", tokenizer, num_iterations=1).train()
    other = self_play_trainer(tmp_path / "b", tokenizer, num_iterations=1, generation_batch_size=8)
    other.train()
    assert "proto/train" in other.self_play.generation_stats, "other chunks draw other samples: not the same entry"


def with_own_responses(synthetic: str) -> list[dict]:
    return [r | {"synthetic": [{"role": "assistant", "content": synthetic}]} for r in sorting_rows(8)]


def test_a_changed_own_response_column_is_another_run(tmp_path, tokenizer):
    self_play_trainer(tmp_path, tokenizer, rows=with_own_responses("1 2"), num_iterations=1).train()
    with pytest.raises(SelfPlayError, match=r"another run \(it differs in: data \(different content\)\)"):
        self_play_trainer(tmp_path, tokenizer, rows=with_own_responses("3 4"), num_iterations=1).train()


def test_settings_changed_after_construction_are_checked_when_training_starts(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path / "fewer", tokenizer, num_iterations=3)
    trainer.args.num_iterations = 2  # takes effect: two iterations of 4 steps, as a new trainer would run
    trainer.train()
    assert trainer.state.global_step == 8 and trainer.args.num_train_epochs == 2
    assert sorted(trainer.self_play.generation_stats) == ["iteration_1/train", "proto/train"]

    trainer = self_play_trainer(tmp_path / "alpha", tokenizer)
    trainer.args.alpha = -1.0
    with pytest.raises(ValueError, match=r"TSPINConfig.alpha=-1.0 is invalid: it must be > 0"):
        trainer.train()

    trainer = self_play_trainer(tmp_path / "length", tokenizer)
    trainer.args.max_length = 32
    with pytest.raises(
        ValueError, match=r"changed after the trainer was built: max_length \(64 -> 32\).*new TSPINTrainer"
    ):
        trainer.train()


def test_a_replaced_args_object_and_a_second_fresh_train_are_refused(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=1)
    trainer.args = make_config(tmp_path, num_iterations=1, per_device_train_batch_size=2)
    with pytest.raises(ValueError, match="`trainer.args` was replaced by another TSPINConfig"):
        trainer.train()
    trainer = self_play_trainer(tmp_path / "twice", tokenizer, num_iterations=1, save_strategy="steps", save_steps=2)
    trainer.train()
    with pytest.raises(
        ValueError, match=r"already been trained \(4 steps.*resume_from_checkpoint=True.*model=trainer"
    ):
        trainer.train()
    trainer.train(resume_from_checkpoint=True)  # resuming the finished run is allowed (it has nothing left to do)
