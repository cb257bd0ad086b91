"""
Scoring any row of either demo task: the checker behind the `instruction` column, the per-task reward functions in
TRL's `reward_funcs` shape ([`task_reward_funcs`]) and the older per-task scorers ([`task_scorer`]).
"""

import re
from collections.abc import Callable, Sequence
from typing import Any

from .instructions import INSTRUCTION_CHECKERS
from .rows import parse_instruction, response_text
from .sorting import _sorting_digits, check_sorting


TASK_NAMES = ("instructions", "sorting")
"""Names accepted by [`task_scorer`]."""


def _check_sorting_instruction(text: str, params: dict[str, Any]) -> bool:
    return check_sorting(params["digits"], text)


_CHECKERS: dict[str, Callable[[str, dict[str, Any]], bool]] = {
    **INSTRUCTION_CHECKERS,
    "sorting": _check_sorting_instruction,
}


def check_instruction(response: str | list[dict[str, str]], instruction: str | dict[str, Any]) -> bool:
    """
    Check whether a response follows a verifiable instruction.

    Args:
        response (`str` or `list[dict[str, str]]`):
            The response text, or a conversational completion (list of messages; the content of the last one is
            checked).
        instruction (`str` or `dict[str, Any]`):
            The instruction, as stored in the `instruction` column of the demo datasets: a dict (or its JSON
            string) with a `kind` key and the parameters of that kind. Supported kinds and parameters:

            - `"word_count"` (`n`): exactly `n` words (whitespace-separated tokens that contain a letter or digit).
            - `"include_keyword"` (`keyword`): contains `keyword` as a whole word (case-insensitive).
            - `"uppercase"` / `"lowercase"`: every cased character is upper / lower case (and there is at least one).
            - `"bullet_list"` (`n`): exactly `n` lines that start with `"- "`.
            - `"json_keys"` (`keys`): the response (optionally inside a code fence) is a JSON object with exactly
              `keys`.
            - `"end_phrase"` (`phrase`): ends with `phrase` (case-insensitive, lenient on the final punctuation mark).
            - `"no_commas"`: non-empty and contains no comma.
            - `"start_word"` (`word`): the first word, stripped of punctuation, is `word` (case-insensitive).
            - `"one_word"`: exactly one word.
            - `"sorting"` (`digits`): the response is the sorted digits, see [`check_sorting`].

    Returns:
        `bool`: Whether the response satisfies the instruction.

    Example:

    ```python
    >>> from tspin_trl.demo import check_instruction

    >>> check_instruction("Vast blue water full life.", {"kind": "word_count", "n": 5})
    True
    >>> check_instruction("Vast blue water.", '{"kind": "word_count", "n": 5}')
    False
    ```
    """
    parsed = parse_instruction(instruction)
    kind = parsed["kind"]
    if kind not in _CHECKERS:
        raise ValueError(f"Unknown instruction kind {kind!r}; expected one of {sorted(_CHECKERS)}.")
    try:
        return bool(_CHECKERS[kind](response_text(response), parsed))
    except KeyError as error:
        raise ValueError(f"Instruction {parsed!r} is missing the parameter {error.args[0]!r}.") from error


def instruction_pass_rate(responses: Sequence[Any], instructions: Sequence[str | dict[str, Any]]) -> float:
    """
    Fraction of responses that follow their instruction.

    Args:
        responses (`Sequence[str]` or `Sequence[list[dict[str, str]]]`):
            Responses, as texts or conversational completions.
        instructions (`Sequence[str]` or `Sequence[dict[str, Any]]`):
            One instruction per response, in the format accepted by [`check_instruction`].

    Returns:
        `float`: The pass rate in `[0, 1]` (`0.0` when there are no responses).

    Example:

    ```python
    >>> from tspin_trl.demo import instruction_pass_rate

    >>> instruction_pass_rate(["HELLO THERE", "Hello"], [{"kind": "uppercase"}, {"kind": "uppercase"}])
    0.5
    ```
    """
    if len(responses) != len(instructions):
        raise ValueError(f"Got {len(responses)} responses but {len(instructions)} instructions.")
    if len(responses) == 0:
        return 0.0
    passed = sum(check_instruction(response, instruction) for response, instruction in zip(responses, instructions))
    return passed / len(responses)


def task_scorer(name: str) -> Callable[[Sequence[Any], Sequence[dict[str, Any]]], float]:
    """
    Scoring function of a task.

    Args:
        name (`str`):
            `"instructions"` (verifiable instruction following) or `"sorting"` (digit sorting).

    Returns:
        `Callable[[Sequence[str], Sequence[dict]], float]`: A function `score(responses, rows)` that returns the
        fraction of correct responses, where `rows` are dataset rows (dicts with an `instruction` column, or for
        sorting at least a `prompt`), one per response. An empty batch scores `0.0`.

    Example:

    ```python
    >>> from tspin_trl.demo import make_sorting_dataset, task_scorer

    >>> test = make_sorting_dataset(num_train=10, num_eval=4)["test"]
    >>> score = task_scorer("sorting")
    >>> score([row["completion"][0]["content"] for row in test], list(test))
    1.0
    ```
    """
    if name == "instructions":

        def score_instructions(responses: Sequence[Any], rows: Sequence[dict[str, Any]]) -> float:
            rows = list(rows)
            return instruction_pass_rate(responses, [row["instruction"] for row in rows])

        return score_instructions
    if name == "sorting":

        def score_sorting(responses: Sequence[Any], rows: Sequence[dict[str, Any]]) -> float:
            rows = list(rows)
            if len(responses) != len(rows):
                raise ValueError(f"Got {len(responses)} responses but {len(rows)} rows.")
            if not rows:
                return 0.0
            passed = sum(
                check_sorting(row["instruction"] if row.get("instruction") else row["prompt"], response)
                for response, row in zip(responses, rows)
            )
            return passed / len(rows)

        return score_sorting
    raise ValueError(f"Unknown task {name!r}; expected one of {list(TASK_NAMES)}.")


def sorting_credit(prompt_or_digits: Any, response: Any) -> float:
    """
    Partial credit of a digit-sorting response: the share of positions where the response's digits are the sorted
    digits (over the longer of the two digit sequences, so a missing or an extra digit costs one position). 1.0 when
    the digits are right and in order, whatever the spacing; [`check_sorting`] also wants single spaces.

    Args:
        prompt_or_digits (`str`, `Sequence[int]`, `list[dict[str, str]]` or `dict[str, Any]`):
            What to sort, as [`check_sorting`] takes it.
        response (`str` or `list[dict[str, str]]`):
            The response text, or a conversational completion.

    Example:

    ```python
    >>> from tspin_trl.demo import sorting_credit

    >>> sorting_credit("sort: 8 3 1 9", "1 3 8 9"), sorting_credit("sort: 8 3 1 9", "1 3 9"), sorting_credit([2, 1], "")
    (1.0, 0.5, 0.0)
    ```
    """
    answer = sorted(_sorting_digits(prompt_or_digits))
    given = [int(digit) for digit in re.findall(r"\d", response_text(response))]
    return sum(a == b for a, b in zip(given, answer)) / max(len(given), len(answer), 1)


def sorting_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    instruction: Sequence[Any] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float]:
    """
    The digit-sorting task's reward function, in TRL's `reward_funcs` shape: [`sorting_credit`] of every completion
    (partial credit, 1.0 for the sorted digits). With `log_metric` (GRPO's, or `TSPINTrainer`'s score), the
    exact-match rate of [`check_sorting`] is logged as `sorting_exact_match`.

    Args:
        prompts (`Sequence[str]` or `Sequence[list[dict]]`):
            The prompts (text or messages), read when there is no `instruction` column.
        completions (`Sequence[str]` or `Sequence[list[dict]]`):
            One completion per prompt.
        instruction (`Sequence[str]`, *optional*):
            The dataset's `instruction` column (JSON with the digits).
        log_metric (`Callable[[str, float], None]`, *optional*):
            Logs a scalar metric.

    Example:

    ```python
    >>> from tspin_trl.demo import sorting_reward

    >>> sorting_reward(["sort: 3 1 2", "sort: 9 8"], ["1 2 3", "8"])
    [1.0, 0.5]
    ```
    """
    sources = list(instruction) if instruction is not None else list(prompts)
    if len(sources) != len(completions):
        raise ValueError(f"Got {len(completions)} completions for {len(sources)} prompts.")
    if log_metric is not None and completions:
        exact = [check_sorting(source, completion) for source, completion in zip(sources, completions)]
        log_metric("sorting_exact_match", sum(exact) / len(exact))
    return [sorting_credit(source, completion) for source, completion in zip(sources, completions)]


def instruction_reward(
    prompts: Sequence[Any], completions: Sequence[Any], instruction: Sequence[Any], **kwargs: Any
) -> list[float]:
    """
    The verifiable-instruction task's reward function, in TRL's `reward_funcs` shape: 1.0 for a completion that
    follows its row's instruction ([`check_instruction`]), else 0.0.

    Example:

    ```python
    >>> from tspin_trl.demo import instruction_reward

    >>> instruction_reward(["Shout.", "Shout."], ["LOUD", "quiet"], [{"kind": "uppercase"}] * 2)
    [1.0, 0.0]
    ```
    """
    if len(instruction) != len(completions):
        raise ValueError(f"Got {len(completions)} completions for {len(instruction)} instructions.")
    return [float(check_instruction(c, i)) for c, i in zip(completions, instruction)]


def task_reward_funcs(name: str) -> list[Callable[..., list[float]]]:
    """
    The reward functions of a built-in task, as [`~tspin_trl.TSPINTrainer`]'s `reward_funcs` (and TRL's
    `GRPOTrainer`) take them: [`sorting_reward`] for `"sorting"` (partial credit, its exact-match rate logged beside
    it) and [`instruction_reward`] for `"instructions"` (pass or fail).

    Example:

    ```python
    >>> from tspin_trl.demo import task_reward_funcs

    >>> [function.__name__ for function in task_reward_funcs("sorting")]
    ['sorting_reward']
    ```
    """
    if name == "sorting":
        return [sorting_reward]
    if name == "instructions":
        return [instruction_reward]
    raise ValueError(f"Unknown task {name!r}; expected one of {list(TASK_NAMES)}.")
