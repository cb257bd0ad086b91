"""`tspin_trl/data.py`: recognising formats, templating and tokenizing as TRL's `DPOTrainer` does (implicit prompts, tool
calls, `chat_template_kwargs`, truncation), refusing bad rows early, and `TripletDataset`."""

import json
import logging

import pytest
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tests.support import make_config, self_play_trainer, sorting_rows
from tests.support.tools import (
    TOOL_ROWS,
    WEATHER_TOOL,
    agent_trace,
    assistant,
    build_qwen_tokenizer,
    tool_call,
    tool_result,
    user,
)
from tspin_trl import TSPINTrainer
from tspin_trl.collator import DataCollatorForTriplet
from tspin_trl.data import (
    DataFormatError,
    TripletDataset,
    TripletTokenizer,
    apply_formatting_func,
    check_columns,
    detect_format,
    eos_token_ids,
    normalize_row,
)
from tspin_trl.demo import build_char_tokenizer, build_tiny_model


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


def _examples(tokenizer, n=3):
    encode = TripletTokenizer(tokenizer, 64, None, "keep_end", eos_token_ids(tokenizer))
    rows = [{"prompt": r["prompt"], "real": r["completion"][0]["content"]} for r in sorting_rows(n)]
    return TripletDataset([encode(row, i) for i, row in enumerate(rows)])


def test_a_dataset_restores_what_it_was_given(tokenizer):
    dataset = _examples(tokenizer, n=2)
    dataset.set_column("synthetic_ids", [[1], [2]])
    given = TripletDataset([dict(e) for e in dataset.examples])  # a dataset that brought its own synthetic responses
    given.set_column("synthetic_ids", [[7], [8]])
    given.set_column("proto_ids", [[9], [9]])
    assert given[0]["synthetic_ids"] == [7]
    given.restore_given()
    assert given.column("synthetic_ids") == [[1], [2]] and not given.has("proto")
    bare = _examples(tokenizer, n=2)
    bare.set_column("synthetic_ids", [[3], [4]])
    bare.restore_given()
    assert not bare.has("synthetic")


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"messages"}, r"several formats \('messages' and 'prompt' \+ 'completion'\)"),
        ({"chosen"}, r"several formats \('prompt' \+ 'completion' and 'prompt' \+ 'chosen'\)"),
    ],
)
def test_a_dataset_with_two_formats_is_refused(tmp_path, tokenizer, columns, message):
    from tspin_trl.data import DataFormatError

    rows = sorting_rows(8)
    extra = {"messages": rows[0]["prompt"] + rows[0]["completion"], "chosen": rows[0]["completion"]}
    rows = [row | {column: extra[column] for column in columns} for row in rows]
    with pytest.raises(DataFormatError, match=message):
        self_play_trainer(tmp_path, tokenizer, rows=rows)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ([{"role": "user", "content": "  "}], "user message 0 of the prompt is empty"),
        ([{"role": "assistant", "content": "sort: 3 1"}], r"the prompt has no user message \(roles \['assistant'\]\)"),
    ],
)
def test_a_prompt_that_asks_nothing_is_refused(tmp_path, tokenizer, prompt, message):
    from tspin_trl.data import DataFormatError

    rows = [row | {"prompt": prompt} for row in sorting_rows(8)]
    with pytest.raises(DataFormatError, match=message):
        self_play_trainer(tmp_path, tokenizer, rows=rows)


def tspin_trainer(tmp_path, tokenizer, rows, eval_rows=None, **config):
    return TSPINTrainer(
        model=build_tiny_model(tokenizer),
        args=make_config(tmp_path / "tspin", **config),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=None if eval_rows is None else Dataset.from_list(eval_rows),
        processing_class=tokenizer,
    )


def dpo_trainer(tmp_path, tokenizer, rows, **config):
    """TRL's DPOTrainer on the same rows (its reference model given, so nothing is loaded by name)."""
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, bf16=False, report_to=[], **config)
    return DPOTrainer(
        model=build_tiny_model(tokenizer),
        ref_model=build_tiny_model(tokenizer),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def tokens(trainer, role):
    """(prompt ids, `role` response ids) of every prepared training example."""
    return [(example["prompt_ids"], example[f"{role}_ids"]) for example in trainer.train_dataset]


def test_implicit_prompt_conversations_are_tokenized_as_dpo_does(tmp_path, tokenizer):
    rows = [
        {
            "chosen": [user("sort: 3 1 2"), assistant("1 2 3")],
            "rejected": [user("sort: 3 1 2"), assistant("3 2 1")],
        },
        {  # multi-turn: the shared first three turns are the prompt
            "chosen": [user("hi"), assistant("hello"), user("sort: 2 1"), assistant("1 2")],
            "rejected": [user("hi"), assistant("hello"), user("sort: 2 1"), assistant("2 1")],
        },
    ]
    trainer = tspin_trainer(tmp_path, tokenizer, rows)
    assert tokens(trainer, "real") == tokens(dpo_trainer(tmp_path, tokenizer, rows), "chosen")
    assert tokenizer.decode(trainer.train_dataset[1]["prompt_ids"]) == (
        "<|user|>hi<|end|><|assistant|>hello<|end|><|user|>sort: 2 1<|end|><|assistant|>"
    )
    assert tokenizer.decode(trainer.train_dataset[1]["real_ids"]) == "1 2<|end|>"


def test_implicit_prompt_text_is_extracted_as_trl_does(tmp_path, tokenizer):
    rows = [
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        {"chosen": "2 + 2 = 4", "rejected": "2 + 2 = 5"},
    ]
    trainer = tspin_trainer(tmp_path, tokenizer, rows)
    # trl.extract_prompt: the common prefix, without the space before the answer
    assert tokenizer.decode(trainer.train_dataset[0]["prompt_ids"]) == "The sky is"
    assert tokenizer.decode(trainer.train_dataset[0]["real_ids"]) == " blue.<|end|>"
    assert tokens(trainer, "real") == tokens(dpo_trainer(tmp_path, tokenizer, rows), "chosen")


def test_implicit_prompt_needs_shared_turns(tmp_path, tokenizer):
    rows = [{"chosen": [assistant("a")], "rejected": [assistant("b")]}]
    with pytest.raises(DataFormatError, match=r"Row 0, columns 'chosen'/'rejected': they share no first turns"):
        tspin_trainer(tmp_path, tokenizer, rows)


def test_tool_calls_tools_and_template_kwargs_reach_the_chat_template(tmp_path, tool_tokenizer):
    trainer = tspin_trainer(tmp_path, tool_tokenizer, TOOL_ROWS, max_length=256)
    first, second = (trainer.train_dataset[i] for i in range(2))
    assert tool_tokenizer.decode(first["prompt_ids"]) == (
        "<|system|>tools:get_weather;<|end|><|system|>Be brief.<|end|><|user|>Weather in Paris?<|end|><|assistant|>"
    )
    assert tool_tokenizer.decode(first["real_ids"]) == 'call get_weather({"city": "Paris"})<|end|>'
    assert tool_tokenizer.decode(second["prompt_ids"]) == (
        "<|system|>tools:get_weather;<|end|><|user|>Weather in Rome?<|end|>"
        '<|assistant|>call get_weather({"city": "Rome"})<|end|><|user|>result: rain<|end|><|assistant|>'
    )
    # exactly the tokens DPOTrainer trains on for these rows
    assert tokens(trainer, "real") == tokens(dpo_trainer(tmp_path, tool_tokenizer, TOOL_ROWS), "chosen")


def test_tools_as_json_strings_and_messages_format(tmp_path, tool_tokenizer):
    rows = [
        {"messages": row["prompt"] + row["chosen"], "tools": json.dumps(row["tools"])}
        for row in TOOL_ROWS  # TRL decodes a JSON string in `tools`, as datasets often store them
    ]
    trainer = tspin_trainer(tmp_path, tool_tokenizer, rows, max_length=256)
    as_lists = [{key: row[key] for key in ("prompt", "chosen", "tools")} for row in TOOL_ROWS]
    reference = tspin_trainer(tmp_path / "lists", tool_tokenizer, as_lists, max_length=256)
    assert tokens(trainer, "real") == tokens(reference, "real")


def test_chat_template_kwargs_change_only_their_row(tmp_path, tool_tokenizer):
    rows = [
        {"prompt": [user("q")], "completion": [assistant("a")], "chat_template_kwargs": {"brief": brief}}
        for brief in (True, False)
    ]
    trainer = tspin_trainer(tmp_path, tool_tokenizer, rows)
    prompts = [tool_tokenizer.decode(example["prompt_ids"]) for example in trainer.train_dataset]
    assert prompts == ["<|system|>Be brief.<|end|><|user|>q<|end|><|assistant|>", "<|user|>q<|end|><|assistant|>"]


@pytest.mark.parametrize("column", ["images", "image"])
def test_image_columns_are_refused(tmp_path, tokenizer, column):
    rows = [{"prompt": [user("What is this?")], "completion": [assistant("A cat.")], column: [None]}]
    with pytest.raises(DataFormatError, match=rf"'{column}' column: vision-language \(image\) data is not supported"):
        tspin_trainer(tmp_path, tokenizer, rows)


def test_multimodal_content_is_refused(tmp_path, tokenizer):
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    with pytest.raises(
        DataFormatError, match=r"Row 0, column 'prompt': .*multimodal content \(parts of type \['image'\]"
    ):
        tspin_trainer(tmp_path, tokenizer, [{"prompt": prompt, "completion": [assistant("A cat.")]}])


def long_prompt_rows(long_at=(1, 4), n=6):
    return [
        {"prompt": "sort: " + ("9 " * 40 if i in long_at else f"{i} 1") + "\n", "completion": "1 9"} for i in range(n)
    ]


def test_keep_start_drops_rows_without_room_as_dpo_does(tmp_path, tokenizer, caplog):
    rows = long_prompt_rows()
    with caplog.at_level(logging.WARNING, logger="tspin_trl.data"):
        trainer = tspin_trainer(tmp_path, tokenizer, rows, truncation_mode="keep_start")
    dropped = [r.getMessage() for r in caplog.records if "Dropped" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].startswith("Dropped 2 of 6 rows of the train dataset (rows 1, 4)")
    assert len(trainer.train_dataset) == 4
    assert trainer.train_dataset.row_indices == [0, 2, 3, 5]
    assert trainer.train_dataset.dropped_row_indices == [1, 4]
    dpo_rows = [{"prompt": row["prompt"], "chosen": row["completion"], "rejected": "0"} for row in rows]
    dpo = dpo_trainer(tmp_path, tokenizer, dpo_rows, max_length=64)
    assert [ids for ids, _ in tokens(trainer, "real")] == [ids for ids, _ in tokens(dpo, "chosen")]
    again = tspin_trainer(tmp_path / "again", tokenizer, rows, truncation_mode="keep_start")
    assert again.train_dataset.dropped_row_indices == [1, 4]  # deterministic: part of the data's identity


def test_keep_end_cuts_prompts_from_the_left(tmp_path, tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="tspin_trl.data"):
        trainer = tspin_trainer(tmp_path, tokenizer, long_prompt_rows(), max_length=64, max_completion_length=10)
    assert len(trainer.train_dataset) == 6 and trainer.train_dataset.dropped_row_indices == []
    cut = trainer.train_dataset[1]["prompt_ids"]
    assert len(cut) == 64 - 10 and tokenizer.decode(cut).endswith("9 9 \n")
    assert any("Truncated the prompts of 2 of 6 rows" in r.getMessage() for r in caplog.records)


def test_no_row_left_is_an_error(tmp_path, tokenizer):
    with pytest.raises(DataFormatError, match=r"No row of the train dataset is left: all 3 prompts leave no room"):
        tspin_trainer(tmp_path, tokenizer, long_prompt_rows(range(3), n=3), truncation_mode="keep_start")


def test_prepared_datasets_are_readable_before_training(tmp_path, tokenizer):
    rows = [{"prompt": [user(f"sort: {i} 1")], "completion": [assistant(f"1 {i}")]} for i in range(3)]
    trainer = tspin_trainer(tmp_path, tokenizer, rows, eval_rows=rows[:2])
    assert len(trainer.train_dataset) == 3 and len(trainer.eval_dataset) == 2
    item = trainer.train_dataset[0]
    # not sampled yet: absent, not an error; SFT's view (input_ids, completion_mask) beside T-SPIN's fields
    assert set(item) == {"input_ids", "completion_mask", "prompt_ids", "real_ids"}
    assert tokenizer.decode(item["real_ids"]) == "1 0<|end|>"
    assert set(trainer.eval_dataset[1]) == {"input_ids", "completion_mask", "prompt_ids", "real_ids"}
    with pytest.raises(ValueError, match="The batch has no synthetic responses: self-play has not sampled them yet"):
        trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])


ROWS = [
    {
        "prompt": [user("Weather in Rome?")],
        "completion": agent_trace("Rome", "rain", "It rains."),
        "tools": [WEATHER_TOOL],
    },
    {
        "prompt": [user("Weather in Oslo?")],
        "completion": agent_trace("Oslo", "snow", "It snows."),
        "tools": [WEATHER_TOOL],
    },
    {"prompt": [user("Say hi.")], "completion": [assistant("Hi.")], "tools": [WEATHER_TOOL]},  # one turn: unchanged
]


@pytest.fixture
def qwen_tokenizer():
    return build_qwen_tokenizer()


def encoder(tokenizer, rule="last_assistant"):
    return TripletTokenizer(tokenizer, 2048, None, "keep_end", [tokenizer.eos_token_id], multi_turn_completions=rule)


def test_default_refuses_several_turns_and_names_the_opt_in():
    with pytest.raises(DataFormatError) as error:
        normalize_row(ROWS[0], "prompt_completion", 0)
    message = str(error.value)
    assert "Row 0, column 'completion': a conversational response must be a list with exactly one assistant" in message
    assert "multi_turn_completions='last_assistant'" in message
    # a completion that is not a conversation continued by the assistant gets no such hint
    with pytest.raises(DataFormatError) as error:
        normalize_row({"prompt": [user("q")], "completion": [user("x")]}, "prompt_completion", 0)
    assert "multi_turn_completions" not in str(error.value)


def test_last_assistant_moves_the_earlier_turns_into_the_prompt():
    out = normalize_row(ROWS[0], "prompt_completion", 0, "last_assistant")
    assert out["prompt"] == [user("Weather in Rome?"), tool_call("Rome"), tool_result("rain")]
    assert out["real"] == assistant("It rains.")
    assert out["moved_turns"] == 2
    assert out["tools"] == [WEATHER_TOOL]
    unchanged = normalize_row(ROWS[2], "prompt_completion", 2, "last_assistant")
    assert unchanged["prompt"] == ROWS[2]["prompt"] and "moved_turns" not in unchanged


def test_the_moved_turns_are_templated_with_the_tools(qwen_tokenizer):
    """The prompt is what the chat template renders for the original prompt, the tool call and its result (with the
    tools' system block and the generation prompt); the real response is the final answer alone. The same tokens as
    the row written in the `messages` format, whose prompt is everything before the last message."""
    tt = encoder(qwen_tokenizer)
    example = tt(normalize_row(ROWS[0], "prompt_completion", 0, "last_assistant"), 0)
    expected_prompt = qwen_tokenizer.apply_chat_template(
        [user("Weather in Rome?"), tool_call("Rome"), tool_result("rain")],
        tools=[WEATHER_TOOL],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert qwen_tokenizer.decode(example["prompt_ids"]) == expected_prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>' in expected_prompt
    assert expected_prompt.endswith("<tool_response>\nrain\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert qwen_tokenizer.decode(example["real_ids"]) == "It rains.<|im_end|>"
    as_messages = {"messages": ROWS[0]["prompt"] + ROWS[0]["completion"], "tools": [WEATHER_TOOL]}
    reference = tt(normalize_row(as_messages, "messages", 0), 0)
    assert (example["prompt_ids"], example["real_ids"]) == (reference["prompt_ids"], reference["real_ids"])


def test_implicit_prompt_rows_follow_the_same_rule():
    """DPO's implicit prompt: the shared first turns are extracted first (TRL's `maybe_extract_prompt`), then the rest
    of `chosen` is split by the rule."""
    row = {
        "chosen": [user("Weather in Rome?"), *agent_trace("Rome", "rain", "It rains.")],
        "rejected": [user("Weather in Rome?"), assistant("No idea.")],
    }
    with pytest.raises(DataFormatError, match="column 'chosen'.*multi_turn_completions='last_assistant'"):
        normalize_row(row, "implicit_preference", 0)
    out = normalize_row(row, "implicit_preference", 0, "last_assistant")
    assert out["prompt"] == [user("Weather in Rome?"), tool_call("Rome"), tool_result("rain")]
    assert out["real"] == assistant("It rains.")


def test_given_responses_must_continue_the_new_prompt():
    same_turns = ROWS[0] | {"synthetic": agent_trace("Rome", "rain", "Wet.")}
    out = normalize_row(same_turns, "prompt_completion", 0, "last_assistant")
    assert out["synthetic"] == assistant("Wet.")
    # a one-turn synthetic response answered the original prompt, not the one with the tool's result
    for synthetic in ([assistant("Wet.")], agent_trace("Paris", "sun", "Dry.")):
        with pytest.raises(DataFormatError, match=r"Row 0, column 'synthetic': .* drop the column"):
            normalize_row(ROWS[0] | {"synthetic": synthetic}, "prompt_completion", 0, "last_assistant")


def test_given_responses_read_from_a_dataset_compare_what_is_set():
    """`datasets` fills every dict with every key its column has (absent ones as None), down to the tool call's
    arguments: the same turns stored in two columns still compare equal."""
    with_units = [tool_call("Oslo"), tool_result("snow"), assistant("Cold.")]
    with_units[0]["tool_calls"][0]["function"]["arguments"]["units"] = "C"
    rows = [
        ROWS[0] | {"synthetic": agent_trace("Rome", "rain", "Wet.")},
        {
            "prompt": [user("Weather in Oslo?")],
            "completion": agent_trace("Oslo", "snow", "It snows."),
            "synthetic": with_units,
        },
    ]
    dataset = Dataset.from_list([{key: row[key] for key in ("prompt", "completion", "synthetic")} for row in rows])
    assert dataset[0]["synthetic"][0]["tool_calls"][0]["function"]["arguments"] == {"city": "Rome", "units": None}
    assert normalize_row(dataset[0], "prompt_completion", 0, "last_assistant")["synthetic"]["content"] == "Wet."
    with pytest.raises(DataFormatError, match="Row 1, column 'synthetic'"):  # its call had other arguments
        normalize_row(dataset[1], "prompt_completion", 1, "last_assistant")


def test_a_trace_must_end_with_the_assistant():
    row = {"prompt": [user("Weather in Rome?")], "completion": [tool_call("Rome"), tool_result("rain")]}
    with pytest.raises(DataFormatError, match=r"Row 0, column 'completion': .* must end with an assistant message"):
        normalize_row(row, "prompt_completion", 0, "last_assistant")
    with pytest.raises(ValueError, match="multi_turn_completions='all' is invalid"):
        normalize_row(row, "prompt_completion", 0, "all")


def test_trainer_counts_the_rows_it_changed_once(tmp_path, qwen_tokenizer, caplog):
    with pytest.raises(DataFormatError, match="multi_turn_completions='last_assistant'"):
        TSPINTrainer(
            model=build_tiny_model(qwen_tokenizer, max_position_embeddings=1024),
            args=make_config(tmp_path / "refused", max_length=1024),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=qwen_tokenizer,
        )
    with caplog.at_level(logging.WARNING, logger="tspin_trl.data"):
        trainer = TSPINTrainer(
            model=build_tiny_model(qwen_tokenizer, max_position_embeddings=1024),
            args=make_config(tmp_path / "run", max_length=1024, multi_turn_completions="last_assistant"),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=qwen_tokenizer,
        )
    notes = [record.getMessage() for record in caplog.records if "multi_turn_completions" in record.getMessage()]
    assert len(notes) == 1
    assert "in 2 of 3 rows of the train dataset (rows 0, 1)" in notes[0] and "(4 in all)" in notes[0]
    prompts = [qwen_tokenizer.decode(example["prompt_ids"]) for example in trainer.train_dataset]
    assert "<tool_response>\nsnow\n</tool_response>" in prompts[1] and "<tool_response>" not in prompts[2]


def test_responses_cut_to_fit_max_length_are_counted_and_warned_once(tmp_path, tokenizer, caplog):
    rows = [{"prompt": f"sort: {i} 1\n", "completion": "1 9 " * (30 if i in (2, 5) else 1)} for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="tspin_trl.data"):
        trainer = tspin_trainer(tmp_path, tokenizer, rows, max_length=64, max_completion_length=10)
    cut = [r.getMessage() for r in caplog.records if "longer than max_length" in r.getMessage()]
    assert len(cut) == 1, "one warning for the dataset, as for prompts"
    assert cut[0].startswith("The given responses (real) of 2 of 6 rows of the train dataset (rows 2, 5)")
    collator = DataCollatorForTriplet(pad_token_id=tokenizer.pad_token_id, max_length=64, require_synthetic=False)
    batch = collator([trainer.train_dataset.examples[2]])
    assert batch["input_ids"].size(1) == 64, "the collator cuts them, as the warning says"


def test_an_unused_rejected_column_is_said_once_with_what_rewards_rejected_holds(caplog):
    rows = Dataset.from_list([{"prompt": "sort: 2 1", "chosen": "1 2", "rejected": "2 1"}])
    with caplog.at_level(logging.WARNING, logger="tspin_trl.data"):
        assert check_columns(rows, "dpo_rejected_train") == "preference"
        check_columns(rows, "dpo_rejected_train")
    (warning,) = [r.getMessage() for r in caplog.records if "'rejected' column" in r.getMessage()]
    assert "The dpo_rejected_train dataset has a 'rejected' column, not used" in warning
    assert "`rewards/rejected` and `logps/rejected`" in warning and "the policy itself" in warning


# ---- SFT's data forms: plain text, pre-tokenized rows, ShareGPT, formatting_func, the readable prepared dataset ----


def text_tokenizer(tokenizer, **kwargs) -> TripletTokenizer:
    return TripletTokenizer(
        tokenizer, 64, None, "keep_end", eos_token_ids(tokenizer), max_completion_length=8, **kwargs
    )


def test_plain_text_is_recognised_only_when_no_other_format_is_there():
    assert detect_format(["text"]) == "text" and detect_format(["content", "id"], text_field="content") == "text"
    assert detect_format(["text", "prompt", "completion"]) == "prompt_completion"
    assert detect_format(["input_ids", "attention_mask", "completion_mask", "text"]) == "tokenized"  # as SFT: first
    assert detect_format(["conversations"]) == "sharegpt"
    with pytest.raises(DataFormatError, match="pre-tokenized .* no 'completion_mask'"):
        detect_format(["input_ids", "attention_mask"])


def test_default_text_split_halves_the_tokens_capped_at_max_completion_length(tokenizer):
    split = text_tokenizer(tokenizer)
    short = split.split_text({"text": "abcdef"}, 0)  # 6 characters + eos: the last 3 tokens are the response
    assert tokenizer.decode(short["prompt_ids"]) == "abcd" and tokenizer.decode(short["real_ids"]) == "ef<|end|>"
    text = "sort: 3 1 2 4 5 6 -> 1 2 3 4 5 6"
    long = split.split_text({"text": text}, 0)
    assert len(long["real_ids"]) == 8  # half would be 17: capped at max_completion_length
    whole = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    assert long["prompt_ids"] + long["real_ids"] == whole  # exactly the tokens SFT trains on for this text
    ended = split.split_text({"text": "abcdef<|end|>"}, 0)  # a text that ends with eos gets no second one
    assert ended["prompt_ids"] + ended["real_ids"] == tokenizer("abcdef<|end|>")["input_ids"]
    with pytest.raises(DataFormatError, match="Row 3, column 'text': expected a non-empty string"):
        split.split_text({"text": "  "}, 3)


def test_response_template_splits_after_its_last_occurrence(tokenizer):
    split = text_tokenizer(tokenizer, response_template="A:")
    assert split.split_text({"text": "Q: x A: y\nQ: z A: w"}, 0) == {"prompt": "Q: x A: y\nQ: z A:", "real": " w"}
    paper = text_tokenizer(tokenizer, response_template="paper")
    row = {"text": "### Instruction: sort 3 1\n\n### Response: 1 3"}
    assert paper.split_text(row, 0) == {"prompt": "### Instruction: sort 3 1\n\n### Response: ", "real": "1 3"}
    with pytest.raises(DataFormatError, match=r"Row 2, column 'text': the response template 'A:' does not occur"):
        split.split_text({"text": "no marker"}, 2)
    with pytest.raises(DataFormatError, match="nothing follows the last 'A:'"):
        split.split_text({"text": "Q: x A: "}, 0)


def test_pretokenized_rows_split_at_their_completion_mask_or_labels(tokenizer):
    split = text_tokenizer(tokenizer)
    ids = tokenizer("abcdef")["input_ids"]
    out = split.split_tokens({"input_ids": ids, "completion_mask": [0, 0, 1, 1, 1, 0]}, 0)
    assert out["prompt_ids"] == ids[:2] and out["real_ids"] == ids[2:5]  # the trailing unmarked token is dropped
    out = split.split_tokens({"input_ids": ids, "labels": [-100, -100, -100] + ids[3:]}, 0)
    assert out["prompt_ids"] == ids[:3] and out["real_ids"] == ids[3:]
    with pytest.raises(DataFormatError, match="not one run"):
        split.split_tokens({"input_ids": ids, "completion_mask": [0, 1, 0, 1, 1, 1]}, 0)
    with pytest.raises(DataFormatError, match="leaving no prompt"):
        split.split_tokens({"input_ids": ids, "completion_mask": [1] * 6}, 0)
    with pytest.raises(DataFormatError, match="5 values for 6 input_ids"):
        split.split_tokens({"input_ids": ids, "completion_mask": [0, 0, 1, 1, 1]}, 0)


def test_sharegpt_conversations_become_messages_with_chat_roles():
    row = {"conversations": [{"from": "human", "value": "sort: 3 1 2"}, {"from": "gpt", "value": "1 2 3"}]}
    assert normalize_row(row, "sharegpt", 0) == {"prompt": USER, "real": ANSWER[0]}
    with pytest.raises(DataFormatError, match="Row 0, column 'conversations'"):
        normalize_row({"conversations": "text"}, "sharegpt", 0)


def test_formatting_func_output_is_text_or_a_conversation():
    rows = Dataset.from_list([{"q": "sort: 3 1 2", "a": "1 2 3", "tools": None}] * 2)
    text = apply_formatting_func(rows, lambda row: f"{row['q']} -> {row['a']}")
    assert text.column_names == ["text"] and text[0] == {"text": "sort: 3 1 2 -> 1 2 3"}
    messages = apply_formatting_func(rows, lambda row: [user(row["q"]), assistant(row["a"])])
    assert messages.column_names == ["tools", "messages"] and messages[0]["messages"][1]["content"] == "1 2 3"
    streamed = apply_formatting_func(rows.to_iterable_dataset(), lambda row: row["q"], text_field="content")
    assert list(streamed) == [{"content": "sort: 3 1 2"}] * 2
    with pytest.raises(DataFormatError, match="must return a string .* or a list of messages .*got dict"):
        apply_formatting_func(rows, lambda row: {"prompt": row["q"]})
    with pytest.raises(DataFormatError, match="Row 1: `formatting_func` returned int where row 0 gave a string"):
        apply_formatting_func(rows, lambda row, seen=[]: seen.append(1) or ("x" if len(seen) < 3 else 1))


def test_text_rows_train_through_the_trainer_and_read_as_sft_rows(tmp_path, tokenizer, caplog):
    rows = [{"text": f"sort: {i} 3 1 -> 1 3 {i}"} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="tspin_trl.data"):
        trainer = tspin_trainer(tmp_path, tokenizer, rows, eval_rows=rows[:2], max_length=20)
    announced = [r.getMessage() for r in caplog.records if "Plain-text rows (column 'text')" in r.getMessage()]
    assert len(announced) == 1 and "set `response_template`" in announced[0]  # the rule, once, and how to change it
    dataset = trainer.train_dataset
    assert dataset.column_names == ["input_ids", "completion_mask", "prompt_ids", "real_ids"]
    item = dataset[1]
    # the prompt, then the real response cut at the end to max_length=20 (its eos falls off), as training cuts it
    assert tokenizer.decode(item["input_ids"]) == "sort: 1 3 1 -> 1 3 1" and len(item["input_ids"]) == 20
    assert item["completion_mask"] == [0] * len(item["prompt_ids"]) + [1] * (20 - len(item["prompt_ids"]))
    assert tokenizer.decode(item["real_ids"]).endswith("<|end|>")  # T-SPIN's own field is the whole response
    assert dataset["real_ids"] == [row["real_ids"] for row in dataset] and dataset[0:2]["prompt_ids"] == [
        dataset[0]["prompt_ids"],
        dataset[1]["prompt_ids"],
    ]
    assert dataset.to_dataset().column_names == dataset.column_names and dataset.num_rows == 4
    with pytest.raises(KeyError, match="Column 'labels' not in the dataset"):
        dataset["labels"]


def test_sharegpt_errors_name_the_conversations_column():
    row = {"conversations": [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "hi"}]}
    with pytest.raises(DataFormatError, match="Row 0, column 'conversations': the last message must be the assistant"):
        normalize_row(row, "sharegpt", 0)
