"""Dataset formats TRL's `DPOTrainer` accepts, written as a TRL user's code: implicit prompts, tool-call conversations
with a `tools` column, per-row `chat_template_kwargs`, refused images, over-long prompts, and prepared datasets read
before `train()`. Where TRL tokenizes the same rows, the tokens are checked against `DPOTrainer`'s own."""

import json
import logging

import pytest
import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tests.support import make_config
from tspin_trl import TSPINTrainer
from tspin_trl.data import DataFormatError
from tspin_trl.demo import build_char_tokenizer, build_tiny_model


# A chat template for the character-level tokenizer that renders `tools`, assistant `tool_calls`, `tool` messages
# and a `brief` keyword argument (passed per row through `chat_template_kwargs`).
TOOL_TEMPLATE = (
    "{%- if tools -%}<|system|>tools:{% for tool in tools %}{{ tool['function']['name'] }};{% endfor %}<|end|>"
    "{%- endif -%}"
    "{%- if brief -%}<|system|>Be brief.<|end|>{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}"
    "{%- if message.tool_calls -%}{%- for call in message.tool_calls -%}"
    "call {{ call['function']['name'] }}({{ call['function']['arguments'] | tojson }})"
    "{%- endfor -%}{%- else -%}{{ message['content'] }}{%- endif -%}"
    "<|end|>{% endgeneration %}"
    "{%- elif message['role'] == 'tool' -%}<|user|>result: {{ message['content'] }}<|end|>"
    "{%- else -%}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
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


@pytest.fixture
def tool_tokenizer():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = TOOL_TEMPLATE
    return tokenizer


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


# ---- implicit prompts -------------------------------------------------------------------------------------------


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


# ---- tool calls, tools and chat_template_kwargs ------------------------------------------------------------------


TOOL_ROWS = [
    {  # the real response is a tool call
        "prompt": [user("Weather in Paris?")],
        "chosen": [tool_call("Paris")],
        "rejected": [assistant("Sunny.")],
        "tools": [WEATHER_TOOL],
        "chat_template_kwargs": {"brief": True},
    },
    {  # the prompt holds a tool call and its result; the real response answers from it
        "prompt": [user("Weather in Rome?"), tool_call("Rome"), {"role": "tool", "content": "rain"}],
        "chosen": [assistant("It rains.")],
        "rejected": [assistant("No idea.")],
        "tools": [WEATHER_TOOL],
        "chat_template_kwargs": {"brief": False},
    },
]


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


def test_self_play_trains_on_tool_call_data(tmp_path, tool_tokenizer):
    """Implicit prompts, tool-call responses, `tools` and `chat_template_kwargs` in one run: the policy samples its
    synthetic responses from the templated prompts and trains."""
    rows = [
        {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}
        | {"tools": row["tools"], "chat_template_kwargs": row["chat_template_kwargs"]}
        for row in TOOL_ROWS
    ] * 2
    trainer = tspin_trainer(tmp_path, tool_tokenizer, rows, max_length=160, per_device_train_batch_size=2)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    assert all("synthetic_ids" in trainer.train_dataset[i] for i in range(len(rows)))
    assert any(not torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(loss == loss for loss in losses)


# ---- unsupported: images ------------------------------------------------------------------------------------------


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


# ---- over-long prompts ----------------------------------------------------------------------------------------------


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


# ---- prepared datasets before train() -------------------------------------------------------------------------------


def test_prepared_datasets_are_readable_before_training(tmp_path, tokenizer):
    rows = [{"prompt": [user(f"sort: {i} 1")], "completion": [assistant(f"1 {i}")]} for i in range(3)]
    trainer = tspin_trainer(tmp_path, tokenizer, rows, eval_rows=rows[:2])
    assert len(trainer.train_dataset) == 3 and len(trainer.eval_dataset) == 2
    item = trainer.train_dataset[0]
    assert set(item) == {"prompt_ids", "real_ids"}  # not sampled yet: absent, not an error
    assert tokenizer.decode(item["real_ids"]) == "1 0<|end|>"
    assert set(trainer.eval_dataset[1]) == {"prompt_ids", "real_ids"}
    with pytest.raises(ValueError, match="The batch has no synthetic responses: self-play has not sampled them yet"):
        trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
