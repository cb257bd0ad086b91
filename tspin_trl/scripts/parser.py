"""The argument parser of `tspin-trl train`: TRL's `TrlParser` (flags from dataclasses, `--config FILE`) with a help
page that starts with T-SPIN's own options, a short usage line, an epilog with a first command that runs offline,
and errors that name the closest known flag or key.
"""

import argparse
import dataclasses
import difflib
from collections.abc import Iterable
from typing import Any, get_type_hints

import yaml
from trl import TrlParser

from .errors import DEBUG_ENV, DEBUG_FLAG, InputNotFoundError, UsageError
from .help import HelpFormatter


# The README's first command (tests/launches/test_cli.py runs it as written there and checks that the score rises):
# offline, about a minute on 2 CPUs. Chosen from the candidates of bench/first_command.py (docs/cli.md).
FIRST_COMMAND = (
    "tspin-trl train --model_name_or_path preset:tiny --task sorting --sorting_digits 2-3 --num_train_prompts 64 \\\n"
    "    --num_iterations 2 --epochs_per_iteration 3 --per_device_train_batch_size 4 --learning_rate 1e-3 \\\n"
    "    --alpha 0.1 --real_nll_weight 1 --max_completion_length 8 --output_dir tiny-tspin"
)

EPILOG = f"""\
First run (offline, about a minute on a CPU; a ~0.1M-parameter model on a built-in digit-sorting task):

  {FIRST_COMMAND}

Your model and data (a Hub id, a local folder, or a file: .jsonl, .json, .csv, .parquet, ...):

  tspin-trl train --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/Capybara \\
    --eval_dataset_name test.jsonl --eval_strategy epoch --num_iterations 3 --output_dir qwen-tspin

--config FILE reads any of the flags above from a YAML file (plus `datasets:` / `eval_datasets:` lists of files or
Hub datasets). Several processes: accelerate launch [--config_file FILE] -m tspin_trl train ...; on CPU,
accelerate launch --multi_gpu --num_processes 2 -m tspin_trl train ... --use_cpu true.

Errors print their cause and fix; {DEBUG_FLAG} (or {DEBUG_ENV}=1) adds the traceback. Exit codes: 0 success,
1 error explained in its message, 2 bad command line or config, 3 unexpected error (traceback printed),
130 interrupted. More: docs/cli.md.
"""


class TSPINParser(TrlParser):
    """
    [`~trl.TrlParser`] that groups the help page by where each flag comes from, T-SPIN's own first.

    Each dataclass gets its own group, titled by `group_titles`; the fields that `own_fields_of` adds to its bases get
    a group of their own, listed first, and the fields it declares again with its own defaults a second one. Unknown flags and config-file keys raise a
    [`UsageError`] naming the closest known flag; a missing config file raises an [`InputNotFoundError`].

    Args:
        dataclass_types (`Iterable[type]`):
            The dataclasses whose fields become flags, in the order `parse_args_and_config` returns them.
        group_titles (`dict[type, str]`):
            The help-page title of each dataclass's group; groups are listed in this dict's order.
        own_fields_of (`type`):
            The dataclass whose own fields are listed first, under `own_title`.
        own_title (`str`):
            The title of that first group.
        overridden_title (`str`):
            The title of the group, second, of the fields `own_fields_of` declares again with its own defaults.
        **kwargs:
            Passed to [`~trl.TrlParser`] (`prog`, `usage`, `epilog`, ...).
    """

    def __init__(
        self,
        dataclass_types: Iterable[type],
        group_titles: dict[type, str],
        own_fields_of: type,
        own_title: str,
        overridden_title: str,
        **kwargs: Any,
    ):
        self._group_titles = group_titles
        self._own_fields_of = own_fields_of
        self._own_title = own_title
        self._overridden_title = overridden_title
        self._groups: dict[str, argparse._ArgumentGroup] = {}
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(dataclass_types, **kwargs)
        order = [own_title, overridden_title, *group_titles.values()]
        named = sorted(self._groups.values(), key=lambda group: order.index(group.title))
        self._action_groups = [g for g in self._action_groups if g not in named] + named

    def _group(self, title: str) -> argparse._ArgumentGroup:
        if title not in self._groups:
            self._groups[title] = self.add_argument_group(title)
        return self._groups[title]

    def _add_dataclass_arguments(self, dtype: type) -> None:
        # HfArgumentParser's loop, with a group per field's origin instead of one per dataclass
        type_hints = get_type_hints(dtype)
        own, overridden = set(), set()
        if dtype is self._own_fields_of:
            inherited = {
                f.name
                for base in dtype.__mro__[1:]
                if dataclasses.is_dataclass(base)
                for f in dataclasses.fields(base)
            }
            declared = set(vars(dtype).get("__annotations__", {}))
            own, overridden = declared - inherited, declared & inherited
        for field in dataclasses.fields(dtype):
            if not field.init:
                continue
            field.type = type_hints[field.name]
            if field.name in own:
                title = self._own_title
            elif field.name in overridden:
                title = self._overridden_title
            else:
                title = self._group_titles[dtype]
            self._parse_dataclass_field(self._group(title), field)

    def known_flags(self) -> list[str]:
        return [option for action in self._actions for option in action.option_strings if option.startswith("--")]

    def _suggest(self, name: str) -> str:
        flag = "--" + name.lstrip("-").split("=", 1)[0]
        close = difflib.get_close_matches(flag, self.known_flags(), n=1, cutoff=0.6)
        return f" (did you mean {close[0]}?)" if close else ""

    def parse_args_and_config(self, args: Iterable[str] | None = None, **kwargs: Any) -> tuple:
        """
        TRL's `parse_args_and_config`, with errors for a person: an unknown flag or config key raises a [`UsageError`]
        naming the closest known flag, a missing `--config` file an [`InputNotFoundError`], an invalid value (for
        example a [`TSPINConfig`] check) a [`UsageError`] with its message.
        """
        if kwargs:
            return super().parse_args_and_config(args, **kwargs)
        args = list(args) if args is not None else None
        try:
            *outputs, from_config, from_args = super().parse_args_and_config(
                args, return_remaining_strings=True, separate_remaining_strings=True
            )
        except FileNotFoundError as error:
            raise InputNotFoundError(
                f"The config file {error.filename!r} does not exist: check the path given to --config."
            ) from error
        except yaml.YAMLError as error:
            raise UsageError(f"The config file is not valid YAML: {error}") from error
        except (ValueError, TypeError) as error:  # a dataclass's check (TSPINConfig, TrainingArguments) or TRL's
            raise UsageError(str(error)) from error
        problems = [
            f"unknown key {key.removeprefix('--')!r} in the config file{self._suggest(key)}"
            for key in from_config[::2]
        ]
        flags = [arg for arg in from_args if arg.startswith("-")]
        problems += [f"unknown flag {flag}{self._suggest(flag)}" for flag in flags]
        if from_args and not flags:
            problems.append(f"unexpected argument {from_args[0]!r} (flags take the form --name value)")
        if problems:
            raise UsageError("; ".join(problems) + f". `{self.prog} --help` lists every flag.")
        return tuple(outputs)
