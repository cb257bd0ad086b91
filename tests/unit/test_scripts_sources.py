"""`tspin_trl/scripts/sources.py`: which names are local paths and which are Hub ids; a missing path fails at once,
naming the closest existing one."""

import pytest

from tspin_trl.scripts.errors import InputNotFoundError
from tspin_trl.scripts.sources import check_model_source, closest_existing, looks_local


def test_local_looking_names():
    for name in ("nope.jsonl", "data.csv.gz", "./data", "../x", "/abs/path", "~/d", "a/b/c", "x.parquet"):
        assert looks_local(name, data=True), name
    for name in ("trl-lib/Capybara", "imdb", "HuggingFaceH4/ultrachat_200k", "org/name.v2"):
        assert not looks_local(name, data=True), name
    assert not looks_local("model.json") and looks_local("./model")


def test_a_name_is_local_when_it_exists_or_its_first_folder_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "Qwen").mkdir()
    for name in ("models/tinyy", "models/tiny", ".models/x", ".hidden", "Qwen/Qwen2.5-0.5B-Instruct", "models"):
        assert looks_local(name), name
    for name in ("org/models", "gpt2", "HuggingFaceH4/zephyr-7b-beta"):
        assert not looks_local(name), name


def test_the_closest_existing_path_of_a_missing_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny.txt").write_text("")
    assert closest_existing("models/tinyy", folders_only=True) == "models/tiny"
    assert closest_existing("./models/tinyy/deeper", folders_only=True) == "models/tiny"
    assert closest_existing(str(tmp_path / "modls" / "tiny")) == str(tmp_path / "models")
    assert closest_existing("models/zzz") is None and closest_existing("nothing/here") is None


def test_a_missing_path_like_model_fails_at_once_naming_the_closest_folder(tmp_path, monkeypatch):
    """Never looked up on the Hub: with no network and without `HF_HUB_OFFLINE` the Hub client would retry for ~35 s,
    then report a Hub failure; here the error is the local one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # were it sent to the Hub, it would fail there
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text("{}")
    with pytest.raises(InputNotFoundError) as error:
        check_model_source("models/tinyy")
    message = str(error.value)
    assert message.startswith(f"The model folder 'models/tinyy' does not exist ({tmp_path}/models/tinyy) (the closest")
    assert "existing folder: 'models/tiny'). A name that looks like a path is never looked up on the Hub." in message
    check_model_source("models/tiny")  # a local folder: loaded locally, nothing asked of the Hub
    with pytest.raises(InputNotFoundError, match="The model folder '~/no-such-model-here' does not exist"):
        check_model_source("~/no-such-model-here")
    with pytest.raises(InputNotFoundError, match="is not a model folder: it has no config.json"):
        check_model_source("models")
