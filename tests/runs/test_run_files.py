"""What a run's files look like on disk: they follow the user's umask, and temporaries a killed writer left are
removed."""

import os
import stat

from tests.support import self_play_trainer
from tspin_trl.cache import ProtoCache


def test_temporaries_of_a_killed_writer_are_removed_and_files_follow_the_umask(tmp_path, tokenizer):
    stray = tmp_path / "self_play" / "iteration_0" / "train.jsonl.k1ll3d.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_text("half")
    cache = tmp_path / "cache"
    cache_stray = cache / "0123456789abcdef0123456789abcdef.jsonl.x1y2.tmp"
    cache.mkdir()
    cache_stray.write_text("half")
    old = os.umask(0o022)
    try:
        trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=1, proto_cache_dir=str(cache))
        trainer.train()
    finally:
        os.umask(old)
    assert not stray.exists()
    for path in [*tmp_path.glob("self_play/**/*.json*"), *cache.glob("*.json*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    entry = next(cache.glob("*.jsonl"))
    ProtoCache(str(cache))._remove_temporaries("0123456789abcdef0123456789abcdef")
    assert not cache_stray.exists() and entry.exists()


def test_checkpoint_files_follow_the_umask(tmp_path, tokenizer):
    old = os.umask(0o022)
    try:
        trainer = self_play_trainer(tmp_path, tokenizer, num_iterations=1, save_strategy="steps", save_steps=4)
        trainer.train()
        trainer.save_model()
    finally:
        os.umask(old)
    weights = [tmp_path / "checkpoint-4" / "model.safetensors", tmp_path / "model.safetensors"]
    for path in weights:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
