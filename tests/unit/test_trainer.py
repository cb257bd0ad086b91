"""`tspin_trl/trainer.py` without training: the forward pass (the shared-prompt layout gives the same log-probs and
loss; CPO and DPO as special cases), construction-time checks and warnings, and the settings `train()` re-checks
before its first step."""

import copy

import pytest
import torch
from datasets import Dataset

from tests.support import make_config, self_play_trainer, sorting_rows
from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model


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
