"""Multi-turn tool-use completions (`multi_turn_completions`): refused by default with the opt-in named, and with
`"last_assistant"` the turns before the last assistant message join the prompt, templated by a real chat template
that renders tools (Qwen2.5's, as TRL ships it in `trl/chat_templates/`)."""

import logging
from importlib.resources import files

import pytest
from datasets import Dataset
from helpers import make_config

from tspin_trl import TSPINTrainer
from tspin_trl.data import DataFormatError, TripletTokenizer, normalize_row
from tspin_trl.demo import build_char_tokenizer, build_tiny_model


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def tool_call(city):
    return {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}],
    }


def tool_result(text):
    return {"role": "tool", "content": text}


def agent_trace(city, weather, answer):
    """A completion as agent traces store it: the tool call, its result, the final answer."""
    return [tool_call(city), tool_result(weather), assistant(answer)]


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
    """The character-level tokenizer with Qwen2.5's chat template (tools, `tool_calls`, `tool` turns) and its turn
    markers as special tokens, `<|im_end|>` ending a turn as in Qwen."""
    tokenizer = build_char_tokenizer(model_max_length=2048)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = (files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    return tokenizer


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
