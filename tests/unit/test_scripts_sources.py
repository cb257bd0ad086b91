"""`tspin_trl/scripts/sources.py`: which names are local paths and which are Hub ids."""

from tspin_trl.scripts.sources import looks_local


def test_local_looking_names():
    for name in ("nope.jsonl", "data.csv.gz", "./data", "../x", "/abs/path", "~/d", "a/b/c", "x.parquet"):
        assert looks_local(name, data=True), name
    for name in ("trl-lib/Capybara", "imdb", "HuggingFaceH4/ultrachat_200k", "org/name.v2"):
        assert not looks_local(name, data=True), name
    assert not looks_local("model.json") and looks_local("./model")
