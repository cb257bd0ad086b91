"""`tspin_trl/trainer.py` without training: the forward pass (the shared-prompt layout gives the same log-probs and
loss; CPO and DPO as special cases), construction-time checks and warnings, and the settings `train()` re-checks
before its first step; SFT's arguments, config fields and `mean_token_accuracy`."""

import copy

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from tests.support import make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.demo import build_char_tokenizer, build_tiny_model


def test_shared_prompt_layout_gives_the_same_logps_and_loss(tmp_path, model, tokenizer):
    rows = [r | {"synthetic": "9 9 9", "proto": "0 0 1 2"} for r in sorting_rows(4, conversational=True)]
    dataset = Dataset.from_list(rows)
    results = {}
    for share_prompt in (True, False):
        trainer = TSPINTrainer(
            model=copy.deepcopy(model),
            args=make_config(tmp_path / str(share_prompt), share_prompt=share_prompt),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        assert trainer.beta == 0.1  # the rows bring their own synthetic responses: iteration 0 has the proto term
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        assert ("segment_ids" in batch) == share_prompt
        with torch.no_grad():
            results[share_prompt] = (
                trainer.response_logps(trainer.model, batch),
                trainer.compute_loss(trainer.model, batch),
            )
        # the packed rows hold fewer tokens than three padded copies of each prompt
        results[f"tokens_{share_prompt}"] = batch["attention_mask"].sum().item()
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-5, atol=1e-5)
    assert results["tokens_True"] < results["tokens_False"]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_shared_prompt_layout_with_each_attention_backend(tmp_path, tokenizer, attn_implementation):
    rows = [r | {"synthetic": "9 9 9", "proto": "0 0 1 2"} for r in sorting_rows(4, conversational=True)]
    logps = {}
    for share_prompt in (True, False):
        model = build_tiny_model(tokenizer, attn_implementation=attn_implementation)
        trainer = TSPINTrainer(
            model=model,
            args=make_config(tmp_path / str(share_prompt), share_prompt=share_prompt),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        with torch.no_grad():
            logps[share_prompt] = trainer.response_logps(trainer.model, batch)
    torch.testing.assert_close(logps[True], logps[False], rtol=1e-5, atol=1e-4)


def test_beta_zero_equals_cpo_sigmoid(tmp_path, tokenizer):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    model = build_tiny_model(tokenizer)
    rows = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "9 9 9\n"} for r in sorting_rows(4, False)]
    cpo_args = CPOConfig(
        output_dir=str(tmp_path / "cpo"),
        beta=0.7,
        cpo_alpha=0.0,
        loss_type="sigmoid",
        report_to=[],
        use_cpu=True,
        bf16=False,
        max_length=64,
        per_device_train_batch_size=4,
        gradient_checkpointing=False,
    )
    cpo = CPOTrainer(
        model=copy.deepcopy(model), args=cpo_args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    batch = next(iter(cpo.get_train_dataloader()))
    with torch.no_grad():
        cpo_loss, _ = cpo.get_batch_loss_metrics(cpo.model, batch)

    ours = TSPINTrainer(
        model=copy.deepcopy(model),
        args=make_config(tmp_path / "ours", alpha=0.7, beta=0.0),
        train_dataset=Dataset.from_list(sorting_rows(4, False)),
        processing_class=tokenizer,
    )
    concatenated = cpo.concatenated_inputs(batch, padding_value=tokenizer.pad_token_id, device=torch.device("cpu"))
    inputs = {
        "input_ids": concatenated["concatenated_input_ids"],
        "attention_mask": concatenated["concatenated_attention_mask"],
        "completion_mask": (concatenated["concatenated_labels"] != -100).long(),
        "response_lengths": (concatenated["concatenated_labels"] != -100).sum(1).view(2, 4).t(),
        "synthetic_equals_real": torch.zeros(4, dtype=torch.bool),
    }
    with torch.no_grad():
        our_loss = ours.compute_loss(ours.model, inputs)
    torch.testing.assert_close(our_loss, cpo_loss, rtol=1e-5, atol=1e-5)


def test_spin_objective_equals_dpo_with_initial_reference(tmp_path, tokenizer):
    from trl import DPOConfig, DPOTrainer

    from tspin_trl.demo import save_tiny_preset

    path = save_tiny_preset(tmp_path / "tiny")
    rows = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "9 9 9"} for r in sorting_rows(4, False)]
    dpo_args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        beta=0.1,
        loss_type="sigmoid",
        report_to=[],
        use_cpu=True,
        bf16=False,
        max_length=64,
        per_device_train_batch_size=4,
        gradient_checkpointing=False,
    )
    dpo = DPOTrainer(model=str(path), args=dpo_args, train_dataset=Dataset.from_list(rows))
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the (initial) reference
        for param in dpo.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    batch = next(iter(dpo.get_train_dataloader()))
    with torch.no_grad():
        dpo_loss = dpo.compute_loss(dpo.model, batch)

    ours = TSPINTrainer(
        model=dpo.model,
        args=make_config(tmp_path / "ours", objective="spin", alpha=0.1),
        train_dataset=Dataset.from_list(sorting_rows(4, False)),
        processing_class=dpo.processing_class,
    )
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
    inputs["response_lengths"] = batch["completion_mask"].sum(1).view(2, 4).t()
    inputs["synthetic_equals_real"] = torch.zeros(4, dtype=torch.bool)
    with torch.no_grad():
        ref_logps = ours.response_logps(dpo.ref_model, inputs)
        inputs["ref_real_logps"], inputs["ref_synthetic_logps"] = ref_logps
        our_loss = ours.compute_loss(ours.model, inputs)
    assert dpo_loss.item() != pytest.approx(0.6931, abs=1e-3)  # the policy really differs from the reference
    torch.testing.assert_close(our_loss, dpo_loss, rtol=1e-5, atol=1e-5)


def test_generation_lengths_training_cannot_use_are_warned(tmp_path, tokenizer, caplog):
    with caplog.at_level("WARNING"):
        self_play_trainer(tmp_path, tokenizer, max_length=40, max_completion_length=200)
    assert "would be generated and then cut before training" in caplog.text


def test_a_python_list_as_the_dataset_is_a_clear_error(tmp_path, tokenizer):
    with pytest.raises(TypeError, match=r"Dataset.from_list\(rows\)"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path),
            train_dataset=sorting_rows(4),
            processing_class=tokenizer,
        )


@pytest.mark.parametrize(
    "field, value",
    [("seed", 7), ("per_device_train_batch_size", 4), ("output_dir", "elsewhere"), ("report_to", ["tensorboard"])],
)
def test_what_transformers_fixes_at_construction_cannot_change_afterwards(tmp_path, tokenizer, field, value):
    trainer = self_play_trainer(tmp_path, tokenizer)
    setattr(trainer.args, field, value)
    with pytest.raises(ValueError, match=f"changed after the trainer was built: {field} "):
        trainer.train()


def test_schedules_are_checked_again_when_train_starts(tmp_path, tokenizer):
    trainer = self_play_trainer(tmp_path, tokenizer, alpha_schedule=[1.0, 2.0])
    trainer.args.num_iterations = 3  # changed after construction: the schedule no longer has one value per iteration
    with pytest.raises(ValueError, match="alpha_schedule=.* it has 2 values for num_iterations=3"):
        trainer.train()


def test_trainer_args_replaced_by_plain_training_arguments_is_refused_as_such(tmp_path, tokenizer):
    from transformers import TrainingArguments

    trainer = self_play_trainer(tmp_path, tokenizer)
    trainer.args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    with pytest.raises(
        TypeError, match=r"`trainer.args` was replaced by a TrainingArguments .* needs its TSPINConfig"
    ):
        trainer.train()
    assert trainer.state.global_step == 0


# ---- SFT's arguments, config fields and metrics -------------------------------------------------------------------


def lm_warmed(model, tokenizer, texts: list[str], steps: int = 2):
    """The model after a few plain next-token steps on `texts` (torch only), so that some, not all, of its argmax
    predictions are right and token accuracy is a number worth comparing."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model


@pytest.mark.parametrize("share_prompt", [True, False])
def test_mean_token_accuracy_is_the_argmax_accuracy_on_the_real_responses(tmp_path, model, tokenizer, share_prompt):
    rows = [r | {"synthetic": "9 9 9", "proto": "0 1"} for r in sorting_rows(4, conversational=False)]
    model = lm_warmed(model, tokenizer, [r["prompt"] + r["completion"] for r in rows])
    trainer = TSPINTrainer(
        model=model,
        args=make_config(tmp_path, share_prompt=share_prompt),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch)
    logged = trainer.metrics.flush("eval")["mean_token_accuracy"]
    correct = total = 0
    with torch.no_grad():  # the full logits of prompt + real response, which the fused head never builds
        for item in trainer.train_dataset:
            ids = torch.tensor(item["input_ids"])
            predicted = trainer.model(input_ids=ids[None]).logits[0, :-1].argmax(-1)
            real = torch.tensor(item["completion_mask"][1:], dtype=torch.bool)
            correct += (predicted == ids[1:])[real].sum().item()
            total += real.sum().item()
    assert 0 < correct < total and logged == pytest.approx(correct / total)


def test_sft_arguments_are_converted_or_refused_with_the_fix(tmp_path, model, tokenizer):
    from transformers import TrainingArguments
    from trl import DPOConfig

    dataset = Dataset.from_list(sorting_rows(4))
    trainer = TSPINTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, learning_rate=1e-3),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    assert type(trainer.args) is TSPINConfig and trainer.args.learning_rate == 1e-3
    with pytest.raises(ValueError, match="TSPINTrainer takes no `compute_loss_func`: .* override `compute_loss`"):
        TSPINTrainer(model=model, train_dataset=dataset, processing_class=tokenizer, compute_loss_func=lambda *a: 0)
    with pytest.raises(TypeError, match="got DPOConfig"):
        TSPINTrainer(model=model, args=DPOConfig(str(tmp_path), use_cpu=True), train_dataset=dataset)


def test_chat_template_path_and_eos_token_are_applied_as_sft_applies_them(tmp_path, tokenizer):
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|end|>{% endfor %}"
                        "{% if add_generation_prompt %}[assistant] {% endif %}")  # fmt: skip
    model = build_tiny_model(tokenizer)
    trainer = TSPINTrainer(
        model=model,
        args=make_config(tmp_path / "out", chat_template_path=str(template), eos_token="<|user|>"),
        train_dataset=Dataset.from_list(sorting_rows(2)),
        processing_class=tokenizer,
    )
    assert tokenizer.decode(trainer.train_dataset[0]["prompt_ids"]).startswith("[user] sort: ")
    user_id = tokenizer.convert_tokens_to_ids("<|user|>")
    assert tokenizer.eos_token == "<|user|>" and model.generation_config.eos_token_id[0] == user_id
    assert user_id in trainer.eos_token_ids  # responses and generation end at it

    source = build_char_tokenizer()  # a tokenizer to clone from: its template, eos and one more special token
    source.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    source.chat_template = template.read_text()
    source.save_pretrained(tmp_path / "source")
    clone_into = build_char_tokenizer()
    trainer = TSPINTrainer(
        model=build_tiny_model(clone_into),
        args=make_config(tmp_path / "out2", chat_template_path=str(tmp_path / "source")),
        train_dataset=Dataset.from_list(sorting_rows(2)),
        processing_class=clone_into,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    assert clone_into.chat_template == template.read_text() and "<|tool|>" in clone_into.get_vocab()
    embeddings = trainer.model.get_input_embeddings()
    assert embeddings.weight.shape[0] == len(clone_into)  # resized (to a multiple of 64)
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad and "lora_" not in name]
    assert trainable and all("trainable_tokens" in name for name in trainable)  # the added tokens' embeddings, as SFT
    with pytest.raises(ValueError, match=r"`eos_token='<\|nope\|>'` is not in the vocabulary"):
        TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path / "out3", eos_token="<|nope|>"),
            train_dataset=Dataset.from_list(sorting_rows(2)),
            processing_class=tokenizer,
        )


def test_formatting_func_formats_the_training_and_evaluation_sets(tmp_path, model, tokenizer):
    rows = [{"question": f"sort: {i} 1", "answer": f"1 {i}"} for i in range(2, 6)]
    trainer = TSPINTrainer(
        model=model,
        args=make_config(tmp_path, response_template=" => "),
        train_dataset=Dataset.from_list(rows),
        eval_dataset={"held_out": Dataset.from_list(rows[:2])},
        processing_class=tokenizer,
        formatting_func=lambda row: f"{row['question']} => {row['answer']}",
    )
    for dataset in (trainer.train_dataset, trainer.eval_dataset["held_out"]):
        assert tokenizer.decode(dataset[0]["prompt_ids"]) == "sort: 2 1 => "
        assert tokenizer.decode(dataset[0]["real_ids"]) == "1 2<|end|>"
