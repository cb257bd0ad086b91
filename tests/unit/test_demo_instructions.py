"""`tspin_trl/demo/instructions.py`: the verifiable-instruction task (its checkers on hand-written cases, its seeded
dataset and splits, the paper's plain-text template), and both tasks' datasets the same in another process."""

import json
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest

from tspin_trl.demo import (
    INSTRUCTION_KINDS,
    PAPER_PROMPT_TEMPLATE,
    check_instruction,
    instruction_pass_rate,
    make_instruction_dataset,
    make_sorting_dataset,
    task_scorer,
)


# Hand-written (instruction, response) pairs; every kind has at least one good and one bad response.
GOOD_CASES = [
    ({"kind": "word_count", "n": 5}, "Vast blue water full life."),
    ({"kind": "word_count", "n": 3}, "  Cats purr softly.  "),
    ({"kind": "word_count", "n": 4}, "Dogs - love long walks."),  # a lone dash is not a word
    ({"kind": "include_keyword", "keyword": "fish"}, "The ocean holds many fish."),
    ({"kind": "include_keyword", "keyword": "fish"}, "FISH swim in the sea."),
    ({"kind": "uppercase"}, "THE SUN IS BRIGHT."),
    ({"kind": "uppercase"}, '{"TOPIC": "SUN", "N": 3}'),
    ({"kind": "lowercase"}, "the sun is bright."),
    ({"kind": "bullet_list", "n": 2}, "- Cats purr.\n- They sleep a lot."),
    ({"kind": "bullet_list", "n": 3}, "Facts:\n- one\n- two\n- three"),
    ({"kind": "json_keys", "keys": ["topic", "fact"]}, '{"fact": "Cats purr.", "topic": "cats"}'),
    ({"kind": "json_keys", "keys": ["topic"]}, '```json\n{"topic": "cats"}\n```'),
    ({"kind": "end_phrase", "phrase": "That is all."}, "Rain is wet. That is all."),
    ({"kind": "end_phrase", "phrase": "Thank you."}, "Snow is cold. thank you!  "),
    ({"kind": "no_commas"}, "Snow is cold and white."),
    ({"kind": "start_word", "word": "Indeed"}, "Indeed, owls hunt at night."),
    ({"kind": "start_word", "word": "Well"}, "well the wind is strong."),
    ({"kind": "one_word", "kind_note": "extra keys are ignored"}, "Blue."),
    ({"kind": "one_word"}, ' "Furry" '),
]


BAD_CASES = [
    ({"kind": "word_count", "n": 5}, "Vast blue water."),
    ({"kind": "word_count", "n": 3}, "Cats purr very softly."),
    ({"kind": "include_keyword", "keyword": "fish"}, "The ocean holds many fishes."),
    ({"kind": "include_keyword", "keyword": "fish"}, "The ocean is vast."),
    ({"kind": "uppercase"}, "THE SUN is BRIGHT."),
    ({"kind": "uppercase"}, "123 !!!"),
    ({"kind": "lowercase"}, "The sun is bright."),
    ({"kind": "lowercase"}, ""),
    ({"kind": "bullet_list", "n": 2}, "- Cats purr.\n- They sleep.\n- They play."),
    ({"kind": "bullet_list", "n": 2}, "* Cats purr.\n* They sleep."),
    ({"kind": "json_keys", "keys": ["topic", "fact"]}, '{"topic": "cats"}'),
    ({"kind": "json_keys", "keys": ["topic"]}, '{"topic": "cats", "fact": "Cats purr."}'),
    ({"kind": "json_keys", "keys": ["topic"]}, "{'topic': 'cats'}"),
    ({"kind": "json_keys", "keys": ["topic"]}, '["topic"]'),
    ({"kind": "end_phrase", "phrase": "That is all."}, "That is all. Rain is wet."),
    ({"kind": "end_phrase", "phrase": "The end."}, "Rain is wet. Thetheend."),
    ({"kind": "no_commas"}, "Snow is cold, white and soft."),
    ({"kind": "no_commas"}, "   "),
    ({"kind": "start_word", "word": "Indeed"}, "Owls hunt at night. Indeed."),
    ({"kind": "start_word", "word": "Well"}, "Wellness matters."),
    ({"kind": "one_word"}, "Very furry."),
    ({"kind": "one_word"}, ""),
]


PRINTABLE = set(string.printable)


def _text(value):
    return value if isinstance(value, str) else value[0]["content"]


@pytest.fixture(scope="module")
def instruction_dataset():
    return make_instruction_dataset(num_train=200, num_eval=50, seed=0)


def test_hand_written_cases_cover_every_kind():
    assert {case[0]["kind"] for case in GOOD_CASES} == set(INSTRUCTION_KINDS)
    assert {case[0]["kind"] for case in BAD_CASES} == set(INSTRUCTION_KINDS)


@pytest.mark.parametrize("instruction, response", GOOD_CASES)
def test_checker_accepts_good_response(instruction, response):
    assert check_instruction(response, instruction)
    assert check_instruction(response, json.dumps(instruction))  # JSON string form
    assert check_instruction([{"role": "assistant", "content": response}], instruction)  # conversational form


@pytest.mark.parametrize("instruction, response", BAD_CASES)
def test_checker_rejects_bad_response(instruction, response):
    assert not check_instruction(response, instruction)
    assert not check_instruction(response, json.dumps(instruction))


def test_checker_errors():
    with pytest.raises(ValueError, match="Unknown instruction kind"):
        check_instruction("hi", {"kind": "rhyme"})
    with pytest.raises(ValueError, match="missing the parameter"):
        check_instruction("hi", {"kind": "word_count"})
    with pytest.raises(ValueError):
        check_instruction("hi", "not json")


def test_instruction_dataset_structure(instruction_dataset):
    assert set(instruction_dataset) == {"train", "test"}
    assert len(instruction_dataset["train"]) == 200
    assert len(instruction_dataset["test"]) == 50
    for split in instruction_dataset.values():
        assert split.column_names == ["prompt", "completion", "instruction"]
        assert {json.loads(row)["kind"] for row in split["instruction"]} == set(INSTRUCTION_KINDS)
        for row in split:
            assert [message["role"] for message in row["prompt"]] == ["user"]
            assert [message["role"] for message in row["completion"]] == ["assistant"]
            prompt, response = _text(row["prompt"]), _text(row["completion"])
            assert len(prompt.split()) < 40
            assert len(response.split()) <= 40
            assert set(prompt + response + row["instruction"]) <= PRINTABLE


def test_instruction_responses_pass_their_checker(instruction_dataset):
    for split in instruction_dataset.values():
        for row in split:
            assert check_instruction(row["completion"], row["instruction"]), row
        responses = [_text(row["completion"]) for row in split]
        assert instruction_pass_rate(responses, split["instruction"]) == 1.0
        assert task_scorer("instructions")(responses, split) == 1.0


def test_instruction_splits_are_disjoint(instruction_dataset):
    train_prompts = {_text(p) for p in instruction_dataset["train"]["prompt"]}
    test_prompts = [_text(p) for p in instruction_dataset["test"]["prompt"]]
    assert len(train_prompts) == 200
    assert len(set(test_prompts)) == 50
    assert train_prompts.isdisjoint(test_prompts)


def test_instruction_determinism(instruction_dataset):
    same = make_instruction_dataset(num_train=200, num_eval=50, seed=0)
    other = make_instruction_dataset(num_train=200, num_eval=50, seed=1)
    for split in ("train", "test"):
        assert same[split].to_list() == instruction_dataset[split].to_list()
        assert other[split].to_list() != instruction_dataset[split].to_list()


def test_determinism_across_processes():
    # Python's string hashing is randomized per process; the datasets must not depend on it.
    code = (
        "import json; from tspin_trl.demo import make_instruction_dataset, make_sorting_dataset; "
        "print(json.dumps([make_instruction_dataset(30, 10, seed=3)['test'].to_list(), "
        "make_sorting_dataset(30, 10, seed=3)['test'].to_list()]))"
    )
    root = str(Path(__file__).resolve().parents[2])
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": root}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.append(json.loads(result.stdout))
    local = [
        make_instruction_dataset(30, 10, seed=3)["test"].to_list(),
        make_sorting_dataset(30, 10, seed=3)["test"].to_list(),
    ]
    assert outputs[0] == outputs[1] == json.loads(json.dumps(local))


def test_plain_text_instruction_mode_uses_paper_template():
    dataset = make_instruction_dataset(num_train=20, num_eval=10, seed=0, conversational=False)
    conversational = make_instruction_dataset(num_train=20, num_eval=10, seed=0)
    for split in ("train", "test"):
        for row, conv_row in zip(dataset[split], conversational[split]):
            assert isinstance(row["prompt"], str) and isinstance(row["completion"], str)
            assert row["prompt"].startswith("### Instruction: ")
            assert row["prompt"].endswith("\n\n### Response: ")
            assert row["prompt"] == PAPER_PROMPT_TEMPLATE.format(prompt=_text(conv_row["prompt"]))
            assert row["completion"] == _text(conv_row["completion"])
            assert check_instruction(row["completion"], row["instruction"])


def test_empty_eval_split():
    dataset = make_instruction_dataset(num_train=5, num_eval=0)
    assert len(dataset["test"]) == 0
    assert dataset["test"].features == dataset["train"].features
