"""
The row format both demo tasks share, and the seeded split builder.

Every row has a `prompt`, a `completion` and an `instruction` column. The `instruction` column is a JSON string with a
`kind` and its parameters, so that [`~tspin_trl.demo.check_instruction`] can score any row of either task. All text is
printable ASCII.
"""

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset, DatasetDict, Features, List, Value


_MAX_ATTEMPTS_PER_ROW = 200


def response_text(response: Any) -> str:
    """Return the text of a response given as a string, a message dict or a list of messages (last one is used)."""
    if response is None:
        return ""
    if isinstance(response, str):
        return response
    if isinstance(response, dict):
        return str(response.get("content", ""))
    if isinstance(response, Sequence):
        return response_text(response[-1]) if len(response) > 0 else ""
    return str(response)


def parse_instruction(instruction: str | dict[str, Any]) -> dict[str, Any]:
    """The instruction as a dict with a `kind` key, from a dict or its JSON string."""
    if isinstance(instruction, str):
        try:
            instruction = json.loads(instruction)
        except json.JSONDecodeError as error:
            raise ValueError(f"The instruction is not valid JSON: {instruction!r}") from error
    if not isinstance(instruction, dict) or "kind" not in instruction:
        raise ValueError(f"An instruction must be a dict (or JSON object) with a 'kind' key, got {instruction!r}.")
    return instruction


def _conversational_features() -> Features:
    message = {"role": Value("string"), "content": Value("string")}
    return Features({"prompt": List(message), "completion": List(message), "instruction": Value("string")})


def _plain_features() -> Features:
    return Features({"prompt": Value("string"), "completion": Value("string"), "instruction": Value("string")})


def _to_row(prompt: str, response: str, instruction: dict[str, Any], conversational: bool, template: str) -> dict:
    if conversational:
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": response}],
            "instruction": json.dumps(instruction, sort_keys=True),
        }
    return {
        "prompt": template.format(prompt=prompt),
        "completion": response,
        "instruction": json.dumps(instruction, sort_keys=True),
    }


def build_splits(
    make_example: Callable[[random.Random, int], tuple[str, str, dict[str, Any]]],
    num_train: int,
    num_eval: int,
    seed: int,
    conversational: bool,
    template: str,
) -> DatasetDict:
    """Draw unique prompts for both splits (train first), so no prompt appears in both splits.

    `make_example(rng, index)` returns a `(prompt, response, instruction)` triple; rows are shuffled per split.
    """
    if num_train < 0 or num_eval < 0:
        raise ValueError(f"num_train and num_eval must be non-negative, got {num_train} and {num_eval}.")
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, size in (("train", num_train), ("test", num_eval)):
        rows = []
        for index in range(size):
            for _ in range(_MAX_ATTEMPTS_PER_ROW):
                prompt, response, instruction = make_example(rng, index)
                if prompt not in seen:
                    break
            else:
                raise ValueError(
                    f"Could not draw {num_train + num_eval} distinct prompts; ask for fewer examples (seen {len(seen)})."
                )
            seen.add(prompt)
            rows.append(_to_row(prompt, response, instruction, conversational, template))
        rng.shuffle(rows)
        splits[split] = rows
    features = _conversational_features() if conversational else _plain_features()
    return DatasetDict(
        {
            split: Dataset.from_dict({column: [row[column] for row in rows] for column in features}, features=features)
            for split, rows in splits.items()
        }
    )
