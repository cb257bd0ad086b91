"""Fixtures and hooks only; the builders tests share are in `tests/support/`."""

import os

import pytest
from datasets import Dataset


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.support import sorting_rows  # noqa: E402
from tests.support.tools import build_tool_tokenizer  # noqa: E402
from tspin_trl.demo import build_char_tokenizer, build_tiny_model  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The configuration matrix's cells (`matrix` marker, ~30 minutes) run only when an `-m` expression names them:
    `make test-matrix`, not `make test`."""
    if "matrix" in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("matrix") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("matrix") is None]


_TEST_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """With `TSPIN_TEST_TIMES=<file>`, append each test's seconds (setup + call + teardown) to the file as it ends,
    so a long run can be read while it goes (`sort -k2 -n -r <file> | head`)."""
    path = os.environ.get("TSPIN_TEST_TIMES")
    if not path:
        return
    _TEST_SECONDS[report.nodeid] = _TEST_SECONDS.get(report.nodeid, 0.0) + report.duration
    if report.when == "teardown":
        with open(path, "a") as f:
            f.write(f"{report.nodeid} {_TEST_SECONDS.pop(report.nodeid):.1f}\n")


@pytest.fixture(autouse=True)
def _isolated_proto_cache(tmp_path, monkeypatch):
    """Every test gets its own proto cache, so no test sees another's entries."""
    monkeypatch.setenv("TSPIN_TRL_CACHE", str(tmp_path / "proto_cache"))


@pytest.fixture
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def model(tokenizer):
    return build_tiny_model(tokenizer)


@pytest.fixture
def sorting_dataset():
    return Dataset.from_list(sorting_rows())


@pytest.fixture
def tool_tokenizer():
    """The character-level tokenizer with a chat template that renders tools and tool calls (`tests/support/tools.py`)."""
    return build_tool_tokenizer()
