import pytest
import torch
from datasets import Dataset

from tests.support import make_config, sorting_rows
from tspin_trl import DataCollatorForTriplet, TSPINTrainer
from tspin_trl.data import DataFormatError, TripletTokenizer, detect_format, normalize_row
from tspin_trl.demo import build_char_tokenizer


USER = [{"role": "user", "content": "sort: 3 1 2"}]
ANSWER = [{"role": "assistant", "content": "1 2 3"}]


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["prompt", "completion"], "prompt_completion"),
        (["messages"], "messages"),
        (["real", "generated"], "spin"),
        (["prompt", "chosen", "rejected"], "preference"),
        (["prompt", "completion", "synthetic", "proto"], "prompt_completion"),
    ],
)
def test_detect_format(columns, expected):
    assert detect_format(columns) == expected


def test_every_format_normalises_to_the_same_triplet():
    multi_turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] + USER + ANSWER
    rows = {
        "prompt_completion": {"prompt": USER, "completion": ANSWER},
        "messages": {"messages": USER + ANSWER},
        "spin": {"real": USER + ANSWER, "generated": USER + [{"role": "assistant", "content": "3 2 1"}]},
        "preference": {"prompt": USER, "chosen": ANSWER, "rejected": [{"role": "assistant", "content": "x"}]},
    }
    for data_format, row in rows.items():
        out = normalize_row(row, data_format, 0)
        assert out["prompt"] == USER and out["real"] == ANSWER[0], data_format
    assert normalize_row(rows["spin"], "spin", 0)["synthetic"] == {"role": "assistant", "content": "3 2 1"}
    out = normalize_row({"messages": multi_turn}, "messages", 0)
    assert out["prompt"] == multi_turn[:-1] and out["real"] == ANSWER[0]
    out = normalize_row(
        {"prompt": "sort: 3 1 2\n", "completion": "1 2 3", "synthetic": "2 1 3"}, "prompt_completion", 0
    )
    assert out == {"prompt": "sort: 3 1 2\n", "real": "1 2 3", "synthetic": "2 1 3"}


def test_prompt_is_tokenized_as_generation_sees_it():
    tokenizer = build_char_tokenizer()
    triplet = TripletTokenizer(tokenizer, 64, None, "keep_end", [tokenizer.eos_token_id])
    out = triplet({"prompt": USER, "real": "1 2 3", "proto": "3 2 1"}, 0)
    prompt_text = tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(out["prompt_ids"]) == prompt_text and out["prompt_text"] == prompt_text
    full = tokenizer.apply_chat_template(USER + ANSWER, tokenize=False)
    assert tokenizer.decode(out["prompt_ids"] + out["real_ids"]) == full
    assert out["real_ids"][-1] == tokenizer.eos_token_id
    # plain text: the response gets an eos token
    out = triplet({"prompt": "sort: 3 1 2\n", "real": "1 2 3"}, 0)
    assert tokenizer.decode(out["real_ids"]) == "1 2 3<|end|>"


def test_prompt_truncation_keeps_the_end():
    tokenizer = build_char_tokenizer()
    triplet = TripletTokenizer(tokenizer, 64, 5, "keep_end", [tokenizer.eos_token_id])
    assert tokenizer.decode(triplet({"prompt": "abcdefgh", "real": "x"}, 0)["prompt_ids"]) == "defgh"
    triplet = TripletTokenizer(tokenizer, 64, 5, "keep_start", [tokenizer.eos_token_id])
    assert tokenizer.decode(triplet({"prompt": "abcdefgh", "real": "x"}, 0)["prompt_ids"]) == "abcde"


def test_collator_pads_triplets_and_truncates_responses():
    collator = DataCollatorForTriplet(pad_token_id=0, max_length=4)
    examples = [
        {"prompt_ids": [1, 2], "real_ids": [3, 4, 5], "synthetic_ids": [6], "proto_ids": [7, 8]},
        {"prompt_ids": [9], "real_ids": [10], "synthetic_ids": [11, 12], "proto_ids": [13]},
    ]
    batch = collator(examples)
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4],
        [9, 10, 0, 0],
        [1, 2, 6, 0],
        [9, 11, 12, 0],
        [1, 2, 7, 8],
        [9, 13, 0, 0],
    ]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 1, 1],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
        [0, 1, 0, 0],
    ]
    assert batch["attention_mask"].sum(1).tolist() == [4, 2, 3, 3, 4, 2]
    assert batch["response_lengths"].tolist() == [[2, 1, 2], [1, 2, 1]]
    assert batch["synthetic_equals_real"].tolist() == [False, False]
    # Without proto rows (beta = 0) the batch has two roles only
    pairs = collator([{k: v for k, v in e.items() if k != "proto_ids"} | {"ref_real_logps": -1.0} for e in examples])
    assert pairs["input_ids"].shape == (4, 4)
    assert torch.equal(pairs["ref_real_logps"], torch.tensor([-1.0, -1.0]))


# ---- bad input: each raises at construction, before any training compute ---------------------------------------


def build(tmp_path, rows_or_dataset, tokenizer=None, **config):
    tokenizer = tokenizer or build_char_tokenizer()
    from tspin_trl.demo import build_tiny_model

    dataset = rows_or_dataset if isinstance(rows_or_dataset, Dataset) else Dataset.from_list(rows_or_dataset)
    return TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path, **config),
        train_dataset=dataset,
        processing_class=tokenizer,
    )


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [{"question": "a", "answer": "b"}],
            r"Cannot recognise the dataset format from its columns \['answer', 'question'\]",
        ),
        ([{"prompt": "sort: 1\n", "completion": ""}], "Row 0, column 'completion': the response is empty"),
        ([{"prompt": "sort: 1\n", "completion": None}], "Row 0, column 'completion'"),
        ([{"prompt": "", "completion": "1"}], "Row 0, column 'prompt': the prompt is empty"),
        ([{"messages": USER}], "the last message must be the assistant's"),
        ([{"prompt": USER, "completion": [{"role": "assistant", "content": 3}]}], "message content must be a string"),
        ([{"prompt": USER, "completion": [{"role": "user", "content": "x"}]}], "exactly one assistant message"),
        (
            [
                {"prompt": "a\n", "completion": "b", "synthetic": "c"},
                {"prompt": "d\n", "completion": "e", "synthetic": None},
            ],
            "Column 'synthetic' of the train dataset is empty in 1 of 2 rows",
        ),
    ],
)
def test_bad_rows_raise_early(tmp_path, rows, message):
    with pytest.raises(DataFormatError, match=message):
        build(tmp_path, rows)


def test_empty_dataset(tmp_path):
    with pytest.raises(DataFormatError, match="The train dataset is empty"):
        build(tmp_path, Dataset.from_dict({"prompt": [], "completion": []}))


def test_tokenizer_without_pad_and_eos(tmp_path):
    tokenizer = build_char_tokenizer()
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an eos token"):
        build(tmp_path, sorting_rows(2), tokenizer=tokenizer)


def test_pad_token_falls_back_to_eos(tmp_path):
    tokenizer = build_char_tokenizer()
    tokenizer.pad_token = None
    trainer = build(tmp_path, sorting_rows(2), tokenizer=tokenizer)
    assert trainer.processing_class.pad_token == tokenizer.eos_token


def test_conversational_data_without_chat_template(tmp_path):
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        build(tmp_path, sorting_rows(2), tokenizer=tokenizer)


def test_persistent_workers_rejected(tmp_path):
    with pytest.raises(ValueError, match="dataloader_persistent_workers"):
        build(tmp_path, sorting_rows(2), dataloader_persistent_workers=True, dataloader_num_workers=1)
