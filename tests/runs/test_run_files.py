"""What a run's files look like on disk: they follow the user's umask, and temporaries a killed writer left are
removed."""

import os
import re
import stat

import pytest
from transformers import TrainerCallback

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


def test_no_credential_is_written_to_the_output_folder(tmp_path, tokenizer):
    from datasets import Dataset

    from tests.support import make_config, sorting_rows
    from tspin_trl import TSPINTrainer
    from tspin_trl.demo import build_tiny_model, task_scorer

    hub_token, model_token = "hf_PlantedHubToken0123456789", "hf_PlantedModelToken0123456789"
    build_tiny_model(tokenizer).save_pretrained(tmp_path / "model")  # loaded by path, with a token
    args = make_config(
        tmp_path / "out",
        num_iterations=2,
        per_device_train_batch_size=2,
        save_strategy="steps",
        save_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        hub_token=hub_token,
        model_init_kwargs={"token": model_token},
    )
    trainer = TSPINTrainer(
        model=str(tmp_path / "model"),
        args=args,
        train_dataset=Dataset.from_list(sorting_rows(4)),
        eval_dataset=Dataset.from_list(sorting_rows(2, offset=4)),
        processing_class=tokenizer,
        scorer=task_scorer("sorting"),
        scorer_dataset=Dataset.from_list(sorting_rows(2, offset=6)),
    )
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    assert trainer.args.hub_token == hub_token, "the run itself keeps it (a push to the Hub uses it)"
    written = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert any(path.name == "training_args.bin" for path in written) and len(written) > 20
    for path in written:
        content = path.read_bytes()
        for secret in (hub_token, model_token):
            assert secret.encode() not in content, f"{secret} written to {path}"
    assert "<HUB_TOKEN>" in trainer.args.to_json_string() and model_token not in trainer.args.to_json_string()


class FullDiskAt(TrainerCallback):
    """Puts `/dev/full` (a real "No space left on device") behind the file `name` of checkpoint-2, just before it is
    saved: torch's writer (optimizer.pt) and Python's (trainer_state.json) say so without naming the file."""

    def __init__(self, name: str):
        self.name = name

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            folder = os.path.join(args.output_dir, "checkpoint-2")
            os.makedirs(folder)
            os.symlink("/dev/full", os.path.join(folder, self.name))


@pytest.mark.parametrize("name", ["optimizer.pt", "trainer_state.json"])
def test_a_full_disk_during_a_checkpoint_save_names_the_file(tmp_path, tokenizer, name):
    trainer = self_play_trainer(
        tmp_path, tokenizer, num_iterations=1, save_strategy="steps", save_steps=2, callbacks=[FullDiskAt(name)]
    )
    path = re.escape(str(tmp_path / "checkpoint-2" / name))
    with pytest.raises(OSError, match=rf"\(writing {path}, while saving checkpoint-2\)\. Free space on the disk"):
        trainer.train()
    assert trainer.state.global_step == 2
