"""`tspin_trl/demo/scoring.py`: scoring rows of either task (`instruction_pass_rate`, `task_scorer`)."""

import json

import pytest

from tspin_trl.demo import (
    instruction_pass_rate,
    task_scorer,
)


def test_pass_rate():
    instructions = [
        {"kind": "uppercase"},
        json.dumps({"kind": "one_word"}),
        {"kind": "no_commas"},
        {"kind": "lowercase"},
    ]
    assert instruction_pass_rate(["HELLO", "Blue.", "a, b", "Hi"], instructions) == 0.5
    assert instruction_pass_rate(["HELLO", "Blue.", "a b", "hi"], instructions) == 1.0
    assert instruction_pass_rate([], []) == 0.0
    with pytest.raises(ValueError):
        instruction_pass_rate(["HELLO"], instructions)


def test_task_scorer_names():
    instruction_rows = [{"instruction": json.dumps({"kind": "uppercase"})}, {"instruction": '{"kind": "one_word"}'}]
    assert task_scorer("instructions")(["LOUD", "two words"], instruction_rows) == 0.5
    assert task_scorer("instructions")([], []) == 0.0
    with pytest.raises(ValueError, match="Unknown task"):
        task_scorer("math")
