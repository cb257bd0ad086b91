import copy
import os

import pytest
import torch
from datasets import Dataset
from helpers import make_config, sorting_rows
from peft import LoraConfig

from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_tiny_model


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_training_changes_every_parameter_and_logs_metrics(tmp_path, model, tokenizer, sorting_dataset):
    before = snapshot(model)
    trainer = TSPINTrainer(
        model=model,
        args=make_config(tmp_path, beta_first_iteration=0.1),
        train_dataset=sorting_dataset,
        processing_class=tokenizer,
    )
    assert trainer.ref_model is None  # no reference model (the attribute exists for code written against DPOTrainer)
    trainer.train()
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"
    logs = [h for h in trainer.state.log_history if "loss" in h]
    for key in (
        "logps/real",
        "logps/synthetic",
        "logps/proto",
        "rewards/real",
        "rewards/synthetic",
        "rewards/proto",
        "advantage/current",
        "advantage/historical",
        "advantage/current_accuracy",
        "advantage/historical_accuracy",
        "loss/current",
        "loss/historical",
        "rewards/disagreement",
        "beta",
    ):
        assert key in logs[0], key
    # reference-free: the reward is alpha * logp, so reward and likelihood orders always agree
    assert all(h["rewards/disagreement"] == 0 for h in logs)
    assert logs[0]["rewards/real"] == pytest.approx(logs[0]["logps/real"])


def test_beta_zero_skips_proto_rows(tmp_path, model, tokenizer, sorting_dataset):
    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=sorting_dataset, processing_class=tokenizer
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all("logps/proto" not in h and h["beta"] == 0 for h in logs)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["response_lengths"].shape == (2, 2)  # real + synthetic only


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


def test_lora_trains_the_adapter_only(tmp_path, model, tokenizer, sorting_dataset):
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = TSPINTrainer(
        model=model,
        args=make_config(tmp_path, beta_first_iteration=0.1),
        train_dataset=sorting_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    before = snapshot(trainer.model)
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    lora = {n for n in before if "lora_" in n}
    assert lora and changed == {n for n in lora if "lora_B" in n or "lora_A" in n}


@pytest.mark.parametrize(
    "rows",
    [
        sorting_rows(4, conversational=True),
        sorting_rows(4, conversational=False),
        [{"messages": r["prompt"] + r["completion"]} for r in sorting_rows(4)],
        [
            {
                "real": r["prompt"] + r["completion"],
                "generated": r["prompt"] + [{"role": "assistant", "content": "9 9"}],
            }
            for r in sorting_rows(4)
        ],
        [
            {"prompt": r["prompt"], "chosen": r["completion"], "rejected": [{"role": "assistant", "content": "0"}]}
            for r in sorting_rows(4)
        ],
        [r | {"synthetic": "9 9 9", "proto": "0 0"} for r in sorting_rows(4, conversational=False)],
    ],
    ids=["prompt_completion", "standard_text", "messages", "spin", "dpo", "pregenerated"],
)
def test_every_format_trains(tmp_path, model, tokenizer, rows):
    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()
    assert trainer.state.global_step == 1
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))


def test_pregenerated_synthetic_uses_beta_from_the_start(tmp_path, model, tokenizer):
    rows = [r | {"synthetic": "9 9 9", "proto": "0 0"} for r in sorting_rows(4, conversational=False)]
    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()
    assert trainer.self_play.generate_calls == 0
    assert trainer.state.log_history[0]["beta"] == pytest.approx(0.1) and "logps/proto" in trainer.state.log_history[0]


def test_model_card_cites_the_paper(tmp_path, model, tokenizer, sorting_dataset):
    trainer = TSPINTrainer(
        model=model, args=make_config(tmp_path), train_dataset=sorting_dataset, processing_class=tokenizer
    )
    trainer.create_model_card(model_name="tiny")
    card = open(os.path.join(tmp_path, "README.md")).read()
    assert "2601.08198" in card and "Triplets Better Than Pairs" in card and "@inproceedings{wang2025triplets" in card


def test_model_from_a_path_string(tmp_path, sorting_dataset):
    from tspin_trl.demo import save_tiny_preset

    path = save_tiny_preset(tmp_path / "tiny")
    trainer = TSPINTrainer(model=str(path), args=make_config(tmp_path / "out"), train_dataset=sorting_dataset)
    assert trainer.processing_class.decode(trainer.processing_class("a b")["input_ids"]) == "a b"
    trainer.train()


# ---- equivalence with independent implementations ----------------------------------------------------------------


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
