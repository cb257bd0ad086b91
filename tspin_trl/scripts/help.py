"""`tspin-trl train --help` without importing torch: the help page is printed from a recorded description of the
parser's flags (`train_help.json`, shipped with the package), so it answers in a fraction of a second instead of the
seconds it takes to import torch and transformers, whose `TrainingArguments` declares most of the flags.

The record is keyed by what the flags come from: the versions of tspin-trl, TRL and transformers and the sources of
the modules that declare T-SPIN's flags. When the key does not match (another TRL or transformers release, an edited
`config.py`), the help comes from the real parser, as before, and its record is kept in the user's cache
(`~/.cache/tspin_trl/help/`), so the next `--help` is fast again. `tspin_trl.scripts.train.write_help_record()`
regenerates the shipped record (tests/unit/test_scripts_help.py fails when it is stale).

This module imports only the standard library.
"""

import argparse
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


SHIPPED = Path(__file__).with_name("train_help.json")
# The modules whose text is in the help page (T-SPIN's fields, the script's fields, groups and epilog).
_SOURCES = ("config.py", "scripts/train.py", "scripts/parser.py", "scripts/errors.py")
_PACKAGE = Path(__file__).resolve().parents[1]
_DISTRIBUTIONS = ("tspin-trl", "trl", "transformers")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help (HfArgumentParser's choice) and the epilog's line breaks kept."""


def help_requested(argv: Sequence[str]) -> bool:
    """Whether `argv` (the arguments after `train`) asks for the help page, as argparse reads it: `-h` or `--help`
    before any `--`."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


def record_key() -> dict[str, str]:
    """What the flags depend on: the versions of tspin-trl, TRL and transformers, and a digest of T-SPIN's sources that
    declare flags."""
    key = {}
    for name in _DISTRIBUTIONS:
        try:
            key[name] = version(name)
        except PackageNotFoundError:
            key[name] = "not installed"
    digest = hashlib.sha256()
    for source in _SOURCES:
        digest.update((_PACKAGE / source).read_bytes())
    key["sources"] = digest.hexdigest()[:16]
    return key


def _cache_path(key: dict[str, str]) -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / "tspin_trl" / "help" / f"train-{name}.json"


def record_of(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The description of `parser`'s help page: its texts, and each group's flags as argparse formats them (option
    strings, metavar, choices, default, help); not the types, which only parsing needs."""
    groups = []
    for group in parser._action_groups:
        actions = []
        for action in group._group_actions:
            actions.append(
                {
                    "option_strings": list(action.option_strings),
                    "dest": action.dest,
                    "nargs": action.nargs,
                    "default": str(action.default),
                    "choices": None if action.choices is None else [str(choice) for choice in action.choices],
                    "required": action.required,
                    "help": action.help,
                    "metavar": action.metavar,
                }
            )
        groups.append({"title": group.title, "description": group.description, "actions": actions})
    return {
        "usage": parser.usage,
        "description": parser.description,
        "epilog": parser.epilog,
        "groups": groups,
    }


def parser_from(record: dict[str, Any], prog: str) -> argparse.ArgumentParser:
    """A plain argparse parser with the help page of `record` (for `--help` only: its flags take any string)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=record["usage"],
        description=record["description"],
        epilog=record["epilog"],
        formatter_class=HelpFormatter,
        add_help=False,
    )
    existing = {group.title: group for group in parser._action_groups}
    for entry in record["groups"]:
        group = existing.get(entry["title"]) or parser.add_argument_group(entry["title"], entry["description"])
        for action in entry["actions"]:
            kwargs: dict[str, Any] = {
                "dest": action["dest"],
                "default": argparse.SUPPRESS if action["default"] == argparse.SUPPRESS else action["default"],
                "help": argparse.SUPPRESS if action["help"] == argparse.SUPPRESS else action["help"],
            }
            if action["nargs"] == 0:  # a switch (--help, --no_<flag>): no value, so no metavar
                kwargs.update(action="store_const", const=None)
            else:
                kwargs.update(
                    nargs=action["nargs"],
                    choices=action["choices"],
                    required=action["required"],
                    metavar=action["metavar"],
                )
            group.add_argument(*action["option_strings"], **kwargs)
    return parser


def load_record(key: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The recorded help page for `key` (default: this installation's): the shipped one, else the user's cache, else
    `None`."""
    key = record_key() if key is None else key
    for path in (SHIPPED, _cache_path(key)):
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["record"]
    return None


def save_record(record: dict[str, Any], key: dict[str, str], path: Path) -> None:
    """Write `record` under `key` to `path` (atomically: a concurrent `--help` reads the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps({"key": key, "record": record}, indent=1, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def print_train_help(prog: str, real_parser: Callable[[], argparse.ArgumentParser]) -> int:
    """Print `tspin-trl train --help`: from the record when it matches this installation, else from `real_parser()`
    (then recorded in the user's cache). Returns the exit code, 0."""
    key = record_key()
    record = load_record(key)
    if record is not None:
        parser_from(record, prog).print_help()
        return 0
    parser = real_parser()
    try:
        save_record(record_of(parser), key, _cache_path(key))
    except OSError:  # a read-only home: the help is slow each time, and still right
        pass
    parser.print_help()
    return 0
