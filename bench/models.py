"""Models built from configs (randomly initialised, nothing downloaded) and a tokenizer whose vocabulary matches them.

The tokenizer is a synthetic one-character-per-token tokenizer with exactly the model's vocabulary size, so random
token ids round-trip exactly through text (both trainers take text datasets) and every token id can occur.
"""

from __future__ import annotations

from typing import Any

import torch

from tspin_trl.demo import CHAR_SPECIAL_TOKENS, build_char_tokenizer


# Model presets, by name. `vocab_size` is also the tokenizer's size.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # ~0.1M parameters: the smoke tests.
    "tiny": dict(arch="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 vocab_size=512),
    # ~5.7M parameters (4.1M of them in the embedding and LM head): --quick runs on 2 CPU cores.
    "cpu-small": dict(arch="llama", hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=688, vocab_size=8000),
    # ~45M parameters (13M in the decoder layers): the CPU reference size; a step is compute-bound (matmuls and
    # the LM head's vocabulary-wide math), not overhead-bound.
    "cpu": dict(arch="llama", hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1376,
                vocab_size=32000),
    # ~92M parameters: the largest CPU point of the scaling runs.
    "cpu-large": dict(arch="llama", hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=2048, vocab_size=32000),
    # Qwen2.5-0.5B's shape (494M parameters, tied embeddings): the GPU check.
    "qwen2-0.5b": dict(arch="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
                       rope_theta=1_000_000.0, max_position_embeddings=32768),
}  # fmt: skip


def vocab_chars(count: int) -> list[str]:
    """`count` distinct single characters, none of them whitespace, from U+4E00 upwards (CJK, then beyond)."""
    chars, code = [], 0x4E00
    while len(chars) < count:
        if not (0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE):
            ch = chr(code)
            if not ch.isspace():
                chars.append(ch)
        code += 1
    return chars


def build_tokenizer(vocab_size: int, model_max_length: int = 4096):
    """A one-character-per-token tokenizer with exactly `vocab_size` tokens (8 special tokens, then characters).

    Any id decodes to one character (or a special token) and encodes back to the same id, so generated ids survive
    a decode/encode round trip and text lengths are token counts. Padding `<pad>` (0), end of sequence `<|end|>` (7).
    """
    return build_char_tokenizer(model_max_length, characters=vocab_chars(vocab_size - len(CHAR_SPECIAL_TOKENS)))


def build_model(preset: str, tokenizer, *, dtype=torch.float32, device="cpu", seed: int = 0, attn="sdpa"):
    """A randomly initialised causal LM of the given preset, in eval mode, on `device`."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(MODEL_PRESETS[preset])
    arch = spec.pop("arch")
    if spec["vocab_size"] != len(tokenizer):
        raise ValueError(f"preset {preset} has vocab_size {spec['vocab_size']}, tokenizer has {len(tokenizer)}")
    spec.setdefault("num_key_value_heads", spec["num_attention_heads"])
    spec.setdefault("max_position_embeddings", 4096)
    spec.setdefault("tie_word_embeddings", False)
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    config = config_cls(**spec, **ids, dtype=dtype)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls(config).to(dtype)
    for key, value in ids.items():
        setattr(model.generation_config, key, value)
    model.eval()
    return model


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def flop_parameter_count(model) -> int:
    """Parameters that do matmul work per token: all of them minus the input embedding, unless it is tied."""
    total = parameter_count(model)
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total if embed is head else total - embed.numel()


def save_pretrained(model, tokenizer, directory: str) -> str:
    """Save model + tokenizer, so DPOTrainer can load its reference model from the path (it reloads by name)."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load_pretrained(path: str, *, dtype=torch.float32, device="cpu", attn="sdpa"):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn)
    return model.to(device)
