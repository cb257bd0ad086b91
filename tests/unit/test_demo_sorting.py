"""`tspin_trl/demo/sorting.py`: the digit-sorting task's dataset and its exact-match checker."""

import string

import pytest

from tspin_trl.demo import (
    check_instruction,
    check_sorting,
    make_sorting_dataset,
    task_scorer,
)


PRINTABLE = set(string.printable)


def _text(value):
    return value if isinstance(value, str) else value[0]["content"]


@pytest.fixture(scope="module")
def sorting_dataset():
    return make_sorting_dataset(num_train=500, num_eval=100, seed=0)


def test_check_sorting():
    assert check_sorting("sort: 8 3 1 9", "1 3 8 9")
    assert check_sorting("sort: 8 3 1 9", "  1 3 8 9\n")
    assert check_sorting([8, 3, 1, 9, 3], "1 3 3 8 9")
    assert check_sorting([{"role": "user", "content": "sort: 2 0 2"}], [{"role": "assistant", "content": "0 2 2"}])
    assert check_sorting("### Instruction: sort: 5 4\n\n### Response: ", "4 5")
    assert check_sorting('{"kind": "sorting", "digits": [5, 4]}', "4 5")
    assert not check_sorting("sort: 8 3 1 9", "1 3 9 8")
    assert not check_sorting("sort: 8 3 1 9", "1 3 8")
    assert not check_sorting("sort: 8 3 1 9", "1389")
    assert not check_sorting("sort: 8 3 1 9", "1  3 8 9")
    assert not check_sorting([8, 3, 3], "3 8")
    assert not check_sorting([8, 3], "")
    assert check_instruction("3 8", {"kind": "sorting", "digits": [8, 3]})


def test_sorting_dataset(sorting_dataset):
    assert len(sorting_dataset["train"]) == 500 and len(sorting_dataset["test"]) == 100
    for split in sorting_dataset.values():
        for row in split:
            prompt, answer = _text(row["prompt"]), _text(row["completion"])
            digits = prompt.removeprefix("sort: ").split(" ")
            assert prompt.startswith("sort: ") and 8 <= len(digits) <= 12
            assert all(digit in "0123456789" and len(digit) == 1 for digit in digits)
            assert answer == " ".join(sorted(digits))
            assert check_sorting(row["prompt"], row["completion"])
            assert check_instruction(answer, row["instruction"])
            assert set(prompt + answer + row["instruction"]) <= PRINTABLE
        responses = [_text(row["completion"]) for row in split]
        assert task_scorer("sorting")(responses, split) == 1.0
        wrong = [" ".join(reversed(r.split())) if len(set(r.split())) > 1 else r + " 0" for r in responses]
        assert task_scorer("sorting")(wrong, split) == 0.0
        assert task_scorer("sorting")(responses, [{"prompt": row["prompt"]} for row in split]) == 1.0
    train_prompts = {_text(p) for p in sorting_dataset["train"]["prompt"]}
    assert len(train_prompts) == 500
    assert train_prompts.isdisjoint(_text(p) for p in sorting_dataset["test"]["prompt"])


def test_sorting_determinism_and_options(sorting_dataset):
    assert make_sorting_dataset(500, 100, seed=0)["train"].to_list() == sorting_dataset["train"].to_list()
    assert make_sorting_dataset(500, 100, seed=1)["train"].to_list() != sorting_dataset["train"].to_list()
    short = make_sorting_dataset(num_train=20, num_eval=5, seed=0, min_len=2, max_len=3, conversational=False)
    for row in short["train"]:
        assert isinstance(row["prompt"], str) and row["prompt"].startswith("sort: ") and row["prompt"].endswith("\n")
        assert 2 <= len(row["completion"].split()) <= 3
        assert check_sorting(row["prompt"], row["completion"])
    with pytest.raises(ValueError):
        make_sorting_dataset(num_train=10, num_eval=1, min_len=1, max_len=1)  # only 10 distinct prompts exist
    with pytest.raises(ValueError):
        make_sorting_dataset(min_len=5, max_len=4)
