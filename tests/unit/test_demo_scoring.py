"""`tspin_trl/demo/scoring.py`: scoring rows of either task (`instruction_pass_rate`, `task_scorer`) and the tasks'
reward functions in TRL's `reward_funcs` shape (`sorting_credit`, `sorting_reward`, `instruction_reward`)."""

import json

import pytest

from tspin_trl.demo import (
    instruction_pass_rate,
    instruction_reward,
    make_sorting_dataset,
    sorting_credit,
    sorting_reward,
    task_reward_funcs,
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


def test_sorting_credit_counts_the_positions_holding_the_sorted_digit():
    assert sorting_credit("sort: 8 3 1 9", "1 3 8 9") == 1.0
    assert sorting_credit("sort: 8 3 1 9", "1389") == 1.0, "the digits in order, whatever the spacing"
    assert sorting_credit("sort: 8 3 1 9", "1 3 9 8") == 0.5
    assert sorting_credit("sort: 8 3 1 9", "1 3 8 9 9 9") == 4 / 6, "extra digits cost their positions"
    assert sorting_credit([2, 1], "") == 0.0 and sorting_credit([2, 1], "  ") == 0.0


def test_the_tasks_reward_functions_take_grpos_arguments():
    test = make_sorting_dataset(num_train=2, num_eval=3, seed=0)["test"]
    answers = [row["completion"] for row in test]
    logged = {}
    rewards = sorting_reward(
        prompts=test["prompt"],
        completions=[answers[0], [{"role": "assistant", "content": "x"}], answers[2]],
        instruction=test["instruction"],
        log_metric=logged.__setitem__,
        trainer_state=None,
    )
    assert rewards == [1.0, 0.0, 1.0] and logged == {"sorting_exact_match": 2 / 3}
    assert sorting_reward(test["prompt"], answers) == [1.0] * 3, "the digits read from the prompts"
    assert instruction_reward(["a", "b"], ["LOUD", "quiet"], ['{"kind": "uppercase"}'] * 2) == [1.0, 0.0]
    assert [f.__name__ for f in task_reward_funcs("instructions")] == ["instruction_reward"]
    with pytest.raises(ValueError, match="Unknown task"):
        task_reward_funcs("math")
