"""
Digit sorting: a tiny task with a clear data-scaling gap for a ~1M-parameter character-level model.

The prompt is `"sort: "` followed by random digits, the completion the same digits sorted ([`make_sorting_dataset`]);
[`check_sorting`] is its exact-match checker.
"""

import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from datasets import DatasetDict

from .rows import build_splits, parse_instruction, response_text


SORTING_PROMPT_TEMPLATE = "{prompt}\n"
"""Plain-text prompt template of the non-conversational sorting dataset (the answer follows the newline)."""


def _sorting_digits(source: Any) -> list[int]:
    """Digits to sort, from a list of ints, an instruction (dict or JSON), a prompt string or a list of messages."""
    if isinstance(source, dict):
        if "digits" in source:
            return [int(digit) for digit in source["digits"]]
        return _sorting_digits(source.get("content", ""))
    if isinstance(source, str):
        stripped = source.strip()
        if stripped.startswith("{"):
            return _sorting_digits(parse_instruction(stripped))
        match = re.search(r"sort:([^\n]*)", source)
        return [int(char) for char in re.findall(r"\d", match.group(1) if match else source)]
    if isinstance(source, Iterable):
        items = list(source)
        if items and all(isinstance(item, dict) for item in items):
            return _sorting_digits(" ".join(str(m.get("content", "")) for m in items if m.get("role") == "user"))
        return [int(item) for item in items]
    raise TypeError(f"Cannot read digits to sort from {source!r}.")


def check_sorting(
    prompt_or_digits: str | Sequence[int] | list[dict[str, str]] | dict[str, Any], response: Any
) -> bool:
    """
    Check a response of the digit-sorting task.

    Args:
        prompt_or_digits (`str`, `Sequence[int]`, `list[dict[str, str]]` or `dict[str, Any]`):
            What to sort: a prompt (`"sort: 8 3 1 9"`, also inside a plain-text template), a conversational prompt
            (list of messages; the user messages are read), a sequence of digits, or a sorting instruction (dict or
            JSON string with a `digits` key).
        response (`str` or `list[dict[str, str]]`):
            The response text, or a conversational completion.

    Returns:
        `bool`: Whether the response, stripped of surrounding whitespace, is exactly the sorted digits separated by
        single spaces.

    Example:

    ```python
    >>> from tspin_trl.demo import check_sorting

    >>> check_sorting("sort: 8 3 1 9", "1 3 8 9")
    True
    >>> check_sorting([8, 3, 1, 9], "1 3 9 8")
    False
    ```
    """
    digits = _sorting_digits(prompt_or_digits)
    if not digits:
        raise ValueError(f"No digits to sort found in {prompt_or_digits!r}.")
    return response_text(response).strip() == " ".join(str(digit) for digit in sorted(digits))


def make_sorting_dataset(
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    min_len: int = 8,
    max_len: int = 12,
    conversational: bool = True,
    prompt_template: str = SORTING_PROMPT_TEMPLATE,
) -> DatasetDict:
    """
    Build the synthetic digit-sorting dataset.

    The prompt is `"sort: "` followed by `min_len` to `max_len` random digits (0-9, with repetition) separated by
    spaces, e.g. `"sort: 8 3 1 9 3 0 7 2"`; the completion is the same digits sorted in ascending order, e.g.
    `"0 1 2 3 3 7 8 9"`.

    Args:
        num_train (`int`, *optional*, defaults to `2000`):
            Number of rows of the `"train"` split.
        num_eval (`int`, *optional*, defaults to `200`):
            Number of rows of the `"test"` split. No prompt of the test split appears in the train split.
        seed (`int`, *optional*, defaults to `0`):
            Random seed. The same seed always gives the same dataset.
        min_len (`int`, *optional*, defaults to `8`):
            Minimum number of digits.
        max_len (`int`, *optional*, defaults to `12`):
            Maximum number of digits.
        conversational (`bool`, *optional*, defaults to `True`):
            If `True`, `prompt` is `[{"role": "user", "content": ...}]` and `completion` is
            `[{"role": "assistant", "content": ...}]`. If `False`, both are plain strings and the prompt is formatted
            with `prompt_template`.
        prompt_template (`str`, *optional*, defaults to `SORTING_PROMPT_TEMPLATE`):
            Template with a `{prompt}` field for the plain-text prompts; the default `"{prompt}\\n"` ends the prompt
            with a newline. Ignored when `conversational=True`.

    Returns:
        [`~datasets.DatasetDict`]: Splits `"train"` and `"test"` with columns `prompt`, `completion` and
        `instruction` (a JSON string `{"answer": ..., "digits": [...], "kind": "sorting"}`).

    Example:

    ```python
    >>> from tspin_trl.demo import check_sorting, make_sorting_dataset

    >>> dataset = make_sorting_dataset(num_train=100, num_eval=20, seed=0)
    >>> row = dataset["test"][0]
    >>> check_sorting(row["prompt"], row["completion"])
    True
    ```
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"Expected 1 <= min_len <= max_len, got min_len={min_len} and max_len={max_len}.")

    def make_example(rng: random.Random, index: int) -> tuple[str, str, dict[str, Any]]:
        digits = [rng.randrange(10) for _ in range(rng.randint(min_len, max_len))]
        answer = " ".join(str(digit) for digit in sorted(digits))
        prompt = "sort: " + " ".join(str(digit) for digit in digits)
        instruction = {"kind": "sorting", "digits": digits, "answer": answer}
        if not check_sorting(digits, answer):
            raise AssertionError(f"Generated answer {answer!r} does not sort {digits!r}.")
        return prompt, answer, instruction

    return build_splits(make_example, num_train, num_eval, seed, conversational, prompt_template)
