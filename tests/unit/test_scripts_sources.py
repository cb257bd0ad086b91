"""`tspin_trl/scripts/sources.py`: which names are local paths and which are Hub ids; a missing path fails at once,
naming the closest existing one."""

import re

import pytest

from tspin_trl.scripts.errors import InputNotFoundError
from tspin_trl.scripts.sources import check_model_source, closest_existing, load_named_dataset, looks_local


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


def damaged_files(folder) -> dict[str, str]:
    """An empty .jsonl, a .jsonl.gz cut in the middle, a .jsonl that is not text, a .jsonl with a broken line."""
    import gzip
    import json

    rows = "".join(json.dumps({"prompt": f"p{i}", "completion": "c" * 40}) + "\n" for i in range(500)).encode()
    compressed = gzip.compress(rows)
    files = {
        "empty.jsonl": b"",
        "cut.jsonl.gz": compressed[: len(compressed) // 2],
        "binary.jsonl": bytes(range(256)) * 4,
        "broken.jsonl": b'{"prompt": "a", "completion": "b"}\n{"prompt": oops\n',
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: str(folder / name) for name in files}


@pytest.mark.parametrize("flag", ["--dataset_name", "--eval_dataset_name"])
@pytest.mark.parametrize(
    "name, message",
    [
        ("empty.jsonl", r"is empty \(0 bytes\)\. Give a file with the examples"),
        ("cut.jsonl.gz", r"is cut short or damaged \(EOFError: .*\).*copy or download it again"),
        ("binary.jsonl", r"could not be read as JSON Lines \(UnicodeDecodeError: .*UTF-8 encoded"),
        ("broken.jsonl", r"could not be read as JSON Lines \(ArrowInvalid: JSON parse error"),
    ],
)
def test_an_empty_cut_or_undecodable_data_file_is_named(tmp_path, flag, name, message):
    path = damaged_files(tmp_path)[name]
    with pytest.raises(
        ValueError, match=rf"The dataset file (or folder )?'{re.escape(path)}' given to {flag} {message}"
    ):
        load_named_dataset(path, flag=flag)
    folder = tmp_path / "folder"  # the same file in a folder given by name
    folder.mkdir()
    (folder / name).write_bytes(open(path, "rb").read())
    with pytest.raises(ValueError, match=rf"given to {flag}"):
        load_named_dataset(str(folder), flag=flag)
