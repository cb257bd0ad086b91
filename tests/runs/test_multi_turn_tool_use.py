"""A self-play run on agent traces with `multi_turn_completions="last_assistant"`: it trains, and it is the run of the
same conversations written in the `messages` format (whose prompt is everything before the last message): the same
prompts, the same sampled proto/synthetic responses, the same losses and weights. Templated by Qwen2.5's chat
template as TRL ships it."""

import torch
from datasets import Dataset

from tests.support import make_config
from tests.support.tools import WEATHER_TOOL, agent_trace, build_qwen_tokenizer, user
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model


ROWS = [
    {
        "prompt": [user(f"Weather in {city}?")],
        "completion": agent_trace(city, weather, f"It is {weather}."),
        "tools": [WEATHER_TOOL],
    }
    for city, weather in [("Rome", "rain"), ("Oslo", "snow"), ("Lima", "fog"), ("Nice", "sun")]
]


def run(output_dir, rows, **config):
    tokenizer = build_qwen_tokenizer()
    trainer = TSPINTrainer(
        model=build_tiny_model(tokenizer, max_position_embeddings=1024),
        args=make_config(
            output_dir, max_length=1024, max_completion_length=8, per_device_train_batch_size=2, **config
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer, tokenizer


def test_agent_traces_train_as_their_messages_rows(tmp_path):
    trainer, tokenizer = run(tmp_path / "traces", ROWS, multi_turn_completions="last_assistant")
    as_messages = [{"messages": row["prompt"] + row["completion"], "tools": row["tools"]} for row in ROWS]
    reference, _ = run(tmp_path / "messages", as_messages)

    examples, expected = trainer.train_dataset.examples, reference.train_dataset.examples
    for key in ("prompt_ids", "real_ids", "proto_ids", "synthetic_ids"):
        assert [example[key] for example in examples] == [example[key] for example in expected], key
    prompt = tokenizer.decode(examples[0]["prompt_ids"])
    assert prompt.endswith("<tool_response>\nrain\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(examples[0]["real_ids"]) == "It is rain.<|im_end|>"

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and losses == [entry["loss"] for entry in reference.state.log_history if "loss" in entry]
    initial = build_tiny_model(tokenizer, max_position_embeddings=1024)
    trained = dict(trainer.model.named_parameters())
    assert any(not torch.equal(p, trained[name]) for name, p in initial.named_parameters())
    for name, p in reference.model.named_parameters():
        assert torch.equal(p, trained[name]), name
