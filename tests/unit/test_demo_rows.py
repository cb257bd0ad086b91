"""`tspin_trl/demo/rows.py`: the row format both demo tasks share (the text of a response in any form, an instruction
from a dict or its JSON) and the seeded split builder (unique prompts across splits, both row forms, its errors)."""

import json

import pytest

from tspin_trl.demo.rows import build_splits, parse_instruction, response_text


def test_response_text_of_every_form():
    assert response_text("1 2 3") == "1 2 3"
    assert response_text({"role": "assistant", "content": "1 2"}) == "1 2"
    assert response_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
    assert response_text([]) == "" and response_text(None) == "" and response_text({"role": "assistant"}) == ""
    assert response_text(7) == "7"


def test_parse_instruction_from_a_dict_or_its_json():
    assert parse_instruction({"kind": "uppercase"}) == {"kind": "uppercase"}
    assert parse_instruction('{"kind": "word_count", "n": 3}') == {"kind": "word_count", "n": 3}
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_instruction("{kind: uppercase}")
    with pytest.raises(ValueError, match="with a 'kind' key"):
        parse_instruction('{"n": 3}')
    with pytest.raises(ValueError, match="with a 'kind' key"):
        parse_instruction('["uppercase"]')


def numbered(rng, index):
    """A task of 30 possible prompts: `n <k>`, answered `<k + 1>`."""
    k = rng.randrange(30)
    return f"n {k}", str(k + 1), {"kind": "number", "k": k}


def test_splits_have_unique_prompts_in_both_forms_and_follow_the_seed():
    splits = build_splits(numbered, num_train=12, num_eval=6, seed=3, conversational=True, template="{prompt}")
    assert (len(splits["train"]), len(splits["test"])) == (12, 6)
    prompts = [row["prompt"][0]["content"] for split in splits.values() for row in split]
    assert len(set(prompts)) == 18, "no prompt twice, within or across splits"
    row = splits["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    instruction = json.loads(row["instruction"])
    assert row["completion"][0]["content"] == str(instruction["k"] + 1)
    again = build_splits(numbered, num_train=12, num_eval=6, seed=3, conversational=True, template="{prompt}")
    assert again["train"].to_list() == splits["train"].to_list()
    other = build_splits(numbered, num_train=12, num_eval=6, seed=4, conversational=True, template="{prompt}")
    assert other["train"].to_list() != splits["train"].to_list()

    plain = build_splits(numbered, num_train=2, num_eval=0, seed=3, conversational=False, template="Q: {prompt}\nA: ")
    assert plain["train"][0]["prompt"].startswith("Q: n ") and plain["train"][0]["prompt"].endswith("\nA: ")
    assert isinstance(plain["train"][0]["completion"], str)
    assert len(plain["test"]) == 0 and plain["test"].features == plain["train"].features


def test_asking_for_more_prompts_than_exist_or_a_negative_size_is_an_error():
    with pytest.raises(ValueError, match="Could not draw 31 distinct prompts"):
        build_splits(numbered, num_train=25, num_eval=6, seed=0, conversational=True, template="{prompt}")
    with pytest.raises(ValueError, match="must be non-negative"):
        build_splits(numbered, num_train=-1, num_eval=0, seed=0, conversational=True, template="{prompt}")
