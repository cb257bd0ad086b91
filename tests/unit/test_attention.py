"""The packed layout's attention: FlexAttention `BlockMask` vs the dense SDPA mask vs unpacked rows, and the fallbacks.

FlexAttention has no backward pass on CPU (torch <= 2.13 refuses `requires_grad` inputs there), so the trainer never
picks it on CPU. These tests run its eager reference implementation on CPU: log-probs under `no_grad`, and
gradients with torch's CPU guard lifted (the math reference differentiates fine; only the guard refuses).
"""

import copy
import logging

import pytest
import torch
import torch.nn.attention.flex_attention as torch_flex
from datasets import Dataset

from tests.support import make_config
from tspin_trl import TSPINConfig, TSPINTrainer
from tspin_trl.attention import (
    SDPA_OR_FLEX,
    _install_sdpa_or_flex,
    dense_block_mask,
    packed_attention_backend,
    packed_mask_mod,
)
from tspin_trl.demo.presets import build_tiny_model


def varied_rows(n: int = 4) -> list[dict]:
    """Prompts of different lengths, responses of different lengths: every batch has padding."""
    rows = []
    for i in range(n):
        prompt = "sort: " + " ".join(str((i * 7 + k * 3) % 10) for k in range(2 + 2 * i))
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": "1 2 3"[: 1 + 2 * (i % 3)]}],
                "synthetic": [{"role": "assistant", "content": "9 8 7 6"[: 7 - 2 * i]}],
                "proto": [{"role": "assistant", "content": "0" * (1 + 3 * i)}],
            }
        )
    return rows


MODELS = {
    "mha": {},
    # 6 query heads over 2 key/value heads: grouped-query attention with a head count that is not a power of two
    # (as Qwen2-0.5B's 14/2), where the key/values are repeated instead of using the GQA kernel
    "gqa": {"hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 2},
}


def trainers(tmp_path, tokenizer, model_kwargs) -> dict[str, TSPINTrainer]:
    """The same weights in the three layouts: unpacked rows, packed with the dense mask, packed with FlexAttention."""
    model = build_tiny_model(tokenizer, **model_kwargs)
    dataset = Dataset.from_list(varied_rows())
    out = {}
    for name, share_prompt in (("unpacked", False), ("dense", True), ("flex", True)):
        out[name] = TSPINTrainer(
            model=copy.deepcopy(model),
            args=make_config(tmp_path / name, share_prompt=share_prompt),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    # The trainer resolves "flex" to "dense" on CPU (no backward there); install it by hand to compare the kernels
    _install_sdpa_or_flex(out["flex"].model)
    out["flex"].packed_attention = "flex"
    assert out["dense"].packed_attention == "dense" and out["unpacked"].packed_attention is None
    return out


def batch_of(trainer, num_roles: int) -> dict:
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    if num_roles == 2:
        examples = [{k: v for k, v in e.items() if k != "proto_ids"} for e in examples]
    return trainer.data_collator(examples)


def test_mask_mod_is_the_dense_mask():
    segment_ids = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 3, -1, -1], [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]])
    from_mask_mod = torch_flex.create_mask(packed_mask_mod(segment_ids), 2, None, 10, 10, device="cpu")
    dense = dense_block_mask(segment_ids)
    assert torch.equal(from_mask_mod, dense)
    # a response never sees another response; every row attends to something
    assert not dense[0, 0, 5, 2] and dense[0, 0, 5, 1] and dense[0, 0, 6, 5] and dense.any(-1).all()
    additive = dense_block_mask(segment_ids, torch.float32)
    assert torch.equal(additive == 0, dense)


@pytest.mark.parametrize("model_kind", list(MODELS))
@pytest.mark.parametrize("num_roles", [2, 3])
def test_logps_are_equal_in_every_layout(tmp_path, tokenizer, model_kind, num_roles):
    logps = {}
    for name, trainer in trainers(tmp_path, tokenizer, MODELS[model_kind]).items():
        batch = batch_of(trainer, num_roles)
        assert ("segment_ids" in batch) == (name != "unpacked")
        with torch.no_grad():
            logps[name] = trainer.response_logps(trainer.model, batch)
    assert logps["flex"].shape == (num_roles, 4)
    torch.testing.assert_close(logps["flex"], logps["dense"], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(logps["flex"], logps["unpacked"], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("model_kind", list(MODELS))
def test_gradients_are_equal_in_every_layout(tmp_path, tokenizer, model_kind, monkeypatch):
    monkeypatch.setattr(torch_flex, "_validate_device", lambda *tensors: None)  # torch's CPU guard only
    gradients = {}
    for name, trainer in trainers(tmp_path, tokenizer, MODELS[model_kind]).items():
        assert trainer.beta == 0.1  # the rows bring their own synthetic responses: iteration 0 has the proto term
        batch = batch_of(trainer, 3)
        trainer.compute_loss(trainer.model, batch).backward()
        gradients[name] = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    for name in gradients["dense"]:
        torch.testing.assert_close(gradients["flex"][name], gradients["dense"][name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gradients["flex"][name], gradients["unpacked"][name], rtol=1e-4, atol=1e-5)


def test_flex_on_an_sdpa_model_keeps_sdpa_for_generation(tokenizer):
    model = build_tiny_model(tokenizer)
    prompt = torch.tensor([[5, 6, 7, 8]])
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False)
    # resolution only looks at the device type: a CUDA device object needs no GPU
    assert packed_attention_backend(model, "flex", torch.device("cuda")) == "flex"
    assert model.config._attn_implementation == SDPA_OR_FLEX
    assert torch.equal(model.generate(prompt, max_new_tokens=5, do_sample=False), expected)


@pytest.mark.parametrize(
    "requested, implementation, device, expected, message",
    [
        ("flex", "sdpa", "cpu", "dense", "no backward pass on cpu"),
        ("flex", "eager", "cuda", "dense", "'eager' attention implementation cannot take a BlockMask"),
        ("auto", "sdpa", "cuda", "dense", None),  # GPU default unchanged until FlexAttention is measured faster
        ("auto", "sdpa", "cpu", "dense", None),
        ("dense", "sdpa", "cuda", "dense", None),
        ("auto", "flex_attention", "cuda", "flex", None),
        ("auto", "flex_attention", "cpu", None, "does not take the block attention mask"),
    ],
)
def test_backend_resolution_and_fallbacks(tokenizer, caplog, requested, implementation, device, expected, message):
    model = build_tiny_model(tokenizer, attn_implementation=implementation)
    with caplog.at_level(logging.WARNING, logger="tspin_trl.attention"):
        assert packed_attention_backend(model, requested, torch.device(device)) == expected
    lines = [r.getMessage() for r in caplog.records if r.name == "tspin_trl.attention"]
    if message is None:
        assert lines == []
    else:
        assert len(lines) == 1 and message in lines[0]


def test_flex_falls_back_for_unsupported_models_and_dropout(tokenizer, caplog):
    model = build_tiny_model(tokenizer, attention_dropout=0.1)
    with caplog.at_level(logging.WARNING, logger="tspin_trl.attention"):
        assert packed_attention_backend(model, "flex", torch.device("cuda"), dropout=True) == "dense"
        assert packed_attention_backend(model, "flex", torch.device("cuda"), dropout=False) == "flex"
    assert "attention dropout" in caplog.records[0].getMessage() and len(caplog.records) == 1
    model = build_tiny_model(tokenizer)
    type(model)._supports_flex_attn, original = False, type(model)._supports_flex_attn
    try:
        assert packed_attention_backend(model, "flex", torch.device("cuda")) == "dense"
    finally:
        type(model)._supports_flex_attn = original
    assert "does not support FlexAttention" in caplog.records[-1].getMessage()
    with pytest.raises(ValueError, match="packed_attention"):
        packed_attention_backend(model, "varlen", torch.device("cuda"))


def test_prompt_learning_peft_turns_the_packed_layout_off(tokenizer, caplog):
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(
        build_tiny_model(tokenizer), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    )
    with caplog.at_level(logging.WARNING, logger="tspin_trl.attention"):
        assert packed_attention_backend(model, "flex", torch.device("cuda")) is None
    assert "prompt-learning" in caplog.records[0].getMessage()


def test_trainer_falls_back_to_the_dense_mask_on_cpu(tmp_path, tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="tspin_trl.attention"):
        trainer = TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=make_config(tmp_path, share_prompt=True, packed_attention="flex"),
            train_dataset=Dataset.from_list(varied_rows()),
            processing_class=tokenizer,
        )
    assert trainer.share_prompt and trainer.packed_attention == "dense"
    assert trainer.model.config._attn_implementation == "sdpa"
    assert [r.getMessage() for r in caplog.records if r.name == "tspin_trl.attention"][0].startswith(
        "packed_attention='flex' falls back to the dense mask"
    )
    with pytest.raises(ValueError, match="packed_attention"):
        TSPINConfig(str(tmp_path / "bad"), use_cpu=True, packed_attention="varlen")
