"""`tspin_trl/scripts/sources.py`: which names are local paths and which are Hub ids."""

import re

import pytest

from tspin_trl.scripts.sources import load_named_dataset, looks_local


def test_local_looking_names():
    for name in ("nope.jsonl", "data.csv.gz", "./data", "../x", "/abs/path", "~/d", "a/b/c", "x.parquet"):
        assert looks_local(name, data=True), name
    for name in ("trl-lib/Capybara", "imdb", "HuggingFaceH4/ultrachat_200k", "org/name.v2"):
        assert not looks_local(name, data=True), name
    assert not looks_local("model.json") and looks_local("./model")


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
