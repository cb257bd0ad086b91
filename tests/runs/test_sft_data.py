"""An SFT user's data and metrics through whole self-play runs: plain text split by the stated rule trains (self-play
generates from the prompt part), SFT's `mean_token_accuracy` and `num_tokens` are logged for training and evaluation
and select the best checkpoint, and ShareGPT and pre-tokenized rows train."""

import json

from datasets import Dataset

from tests.support import self_play_trainer, sorting_rows


def text_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"text": f"sort: {i % 10} 3 1 -> " + " ".join(sorted(f"{i % 10}31"))} for i in range(offset, offset + n)]


def test_plain_text_trains_by_its_split_and_logs_sft_metrics(tmp_path, tokenizer):
    trainer = self_play_trainer(
        tmp_path,
        tokenizer,
        text_rows(4),
        eval_dataset=Dataset.from_list(text_rows(2, offset=4)),
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        metric_for_best_model="eval_mean_token_accuracy",
        load_best_model_at_end=True,
    )
    prompts = {tokenizer.decode(item["prompt_ids"]) for item in trainer.train_dataset}
    tokens_per_epoch = sum(len(item["input_ids"]) for item in trainer.train_dataset)
    trainer.train()

    # iteration 1's synthetic responses were generated from the prompt part of each text
    rows = [json.loads(line) for line in (tmp_path / "self_play/iteration_1/train.jsonl").open()]
    assert {row["prompt"] for row in rows} == prompts and all(row["synthetic"] for row in rows)
    train_lines = [h for h in trainer.state.log_history if "loss" in h and "mean_token_accuracy" in h]
    eval_lines = [h for h in trainer.state.log_history if "eval_mean_token_accuracy" in h]
    assert len(train_lines) == 4 and len(eval_lines) == 4  # 2 iterations x 2 steps, an evaluation after each
    assert all(0 <= h["mean_token_accuracy"] <= 1 for h in train_lines)
    # SFT's count: prompt + real-response tokens trained on, cumulated (2 epochs over the same 4 examples)
    assert [h["num_tokens"] for h in train_lines][1::2] == [tokens_per_epoch, 2 * tokens_per_epoch]
    # transformers read it from evaluate()'s metrics to pick the best checkpoint
    assert trainer.state.best_metric in {h["eval_mean_token_accuracy"] for h in eval_lines}
    assert trainer.state.best_model_checkpoint is not None


def test_sharegpt_and_pretokenized_rows_train(tmp_path, tokenizer):
    sharegpt = [
        {"conversations": [{"from": "human", "value": row["prompt"][0]["content"]}, {"from": "gpt", "value": answer}]}
        for row in sorting_rows(4)
        for answer in [row["completion"][0]["content"]]
    ]
    trainer = self_play_trainer(tmp_path / "sharegpt", tokenizer, sharegpt, num_iterations=1)
    assert tokenizer.decode(trainer.train_dataset[0]["prompt_ids"]).endswith("<|assistant|>")
    assert trainer.train().global_step == 2

    pretokenized = []
    for row in sorting_rows(4, conversational=False):
        prompt, completion = (
            tokenizer(row["prompt"])["input_ids"],
            tokenizer(row["completion"] + "<|end|>")["input_ids"],
        )
        pretokenized.append(
            {"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)}
        )
    trainer = self_play_trainer(tmp_path / "tokens", tokenizer, pretokenized, num_iterations=1)
    assert trainer.train_dataset[0]["input_ids"] == pretokenized[0]["input_ids"]
    assert trainer.train().global_step == 2
