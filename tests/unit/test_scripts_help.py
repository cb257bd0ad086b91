"""`tspin_trl/scripts/help.py`: `tspin-trl train --help` printed from the recorded help page, the same text as the real
parser's; a record that does not match this installation falls back to the real parser and is cached."""

import json

import pytest

from tspin_trl.cli import TESTED_VERSIONS
from tspin_trl.scripts import help as train_help
from tspin_trl.scripts.train import make_parser


PROG = "tspin-trl train"


def test_the_shipped_record_is_this_installations_and_up_to_date():
    """Fails when a flag, its help or a default changed without regenerating the record (then commit
    tspin_trl/scripts/train_help.json). The record is made with the development set of libraries; in another tested
    environment (`make test-newest`, `make test-oldest`) `--help` comes from the real parser, then from the user's
    cache (the test below), and only the record's own part of the key is checked here."""
    stored = json.loads(train_help.SHIPPED.read_text())
    key = train_help.record_key()
    regenerate = 'stale: python -c "from tspin_trl.scripts.train import write_help_record; write_help_record()"'
    assert (stored["key"]["tspin-trl"], stored["key"]["sources"]) == (key["tspin-trl"], key["sources"]), regenerate
    development = TESTED_VERSIONS["dev"]
    made_with = {name: stored["key"][name] for name in ("trl", "transformers")}
    assert made_with == {name: development[name] for name in made_with}, (
        f"the record was made with {made_with}, not the development set: regenerate it in .venv"
    )
    if made_with != {name: key[name] for name in made_with}:
        pytest.skip(f"this environment has {key}, the record {made_with}: `--help` here is the real parser's")
    assert stored["record"] == train_help.record_of(make_parser(prog=PROG)), regenerate


def this_installations_record() -> dict:
    """The shipped record where it matches this installation, else the record the real parser gives (what the cache
    holds after the first `--help`)."""
    return train_help.load_record(train_help.record_key()) or train_help.record_of(make_parser(prog=PROG))


@pytest.mark.parametrize("columns", ["60", "100", "200"])
def test_the_recorded_help_is_the_real_parsers_at_any_width(monkeypatch, tmp_path, columns):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", columns)  # argparse wraps the help to the terminal's width
    recorded = train_help.parser_from(this_installations_record(), PROG).format_help()
    assert recorded == make_parser(prog=PROG).format_help()
    assert (
        recorded.startswith("usage: tspin-trl train [--config FILE]")
        and "  --num_iterations NUM_ITERATIONS" in recorded
    )


def test_help_is_asked_for_as_argparse_reads_it():
    assert train_help.help_requested(["--task", "sorting", "-h"])
    assert train_help.help_requested(["--help"])
    assert not train_help.help_requested(["--task", "sorting"])
    assert not train_help.help_requested(["--", "--help"])


def test_another_installation_gets_the_real_parsers_help_once_then_the_cached_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(
        train_help, "SHIPPED", tmp_path / "absent.json"
    )  # as if TRL or transformers were another release
    assert train_help.load_record() is None
    assert train_help.print_train_help(PROG, lambda: make_parser(prog=PROG)) == 0
    first = capsys.readouterr().out
    assert first == make_parser(prog=PROG).format_help()
    cached = list((tmp_path / "cache" / "tspin_trl" / "help").glob("train-*.json"))
    assert len(cached) == 1
    stored = json.loads(cached[0].read_text())
    stored["record"]["description"] = "read from the cache"
    cached[0].write_text(json.dumps(stored))
    train_help.print_train_help(PROG, lambda: make_parser(prog=PROG))
    assert "read from the cache" in capsys.readouterr().out
    stored["key"]["trl"] = "0.0"  # a record of another key is not used
    cached[0].write_text(json.dumps(stored))
    assert train_help.load_record() is None
