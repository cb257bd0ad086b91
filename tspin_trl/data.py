"""Recognising dataset formats, templating, tokenizing and validating rows into response triplets.

Every supported row is first normalised to `prompt`, `real` and the optional `synthetic` / `proto` responses, then
tokenized once. The prompt is tokenized with the generation prompt, exactly as generation will see it, and each
response is tokenized as the continuation of those prompt tokens, ending at the first end-of-sequence token.
"""

from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase


# Column names of each recognised format, checked in this order.
FORMATS: dict[str, tuple[str, ...]] = {
    "spin": ("real", "generated"),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen"),
}
OPTIONAL_RESPONSE_COLUMNS = ("synthetic", "proto")
RESPONSE_ROLES = ("real", "synthetic", "proto")


class DataFormatError(ValueError):
    """A dataset row or column does not match any supported T-SPIN format."""


def detect_format(column_names: Sequence[str]) -> str:
    """Return the name of the dataset format from its columns, or raise a [`DataFormatError`] naming the fix."""
    columns = set(column_names)
    for name, required in FORMATS.items():
        if set(required) <= columns:
            return name
    raise DataFormatError(
        f"Cannot recognise the dataset format from its columns {sorted(columns)}. T-SPIN accepts: "
        "'prompt' + 'completion' (standard or conversational), 'messages' (the last assistant turn is the real "
        "response), SPIN's 'real' + 'generated' message lists, or DPO's 'prompt' + 'chosen' (chosen is the real "
        "response). Optional columns 'synthetic' and 'proto' hold already generated responses. Rename your columns "
        "to one of these."
    )


def _is_message_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(m, dict) for m in value)


def _check_messages(messages: list, column: str, index: int) -> None:
    for message in messages:
        if "role" not in message or "content" not in message:
            raise DataFormatError(
                f"Row {index}, column '{column}': every message needs 'role' and 'content' keys, got {message!r}."
            )
        if not isinstance(message["content"], str):
            raise DataFormatError(
                f"Row {index}, column '{column}': message content must be a string, got "
                f"{type(message['content']).__name__} ({message['content']!r}). Multimodal or structured content is "
                "not supported: flatten it to text."
            )


def _response_text(value: Any, column: str, index: int, conversational: bool) -> str:
    """A response given as text or as a list holding one assistant message, returned as its text."""
    if conversational:
        if isinstance(value, str):
            text = value
        elif _is_message_list(value):
            _check_messages(value, column, index)
            if len(value) != 1 or value[0]["role"] != "assistant":
                raise DataFormatError(
                    f"Row {index}, column '{column}': a conversational response must be a list with exactly one "
                    f"assistant message, got roles {[m['role'] for m in value]}."
                )
            text = value[0]["content"]
        else:
            raise DataFormatError(
                f"Row {index}, column '{column}': expected a list with one assistant message or a string, got "
                f"{type(value).__name__}."
            )
    else:
        if not isinstance(value, str):
            raise DataFormatError(
                f"Row {index}, column '{column}': the prompt is plain text, so the response must be a string too, "
                f"got {type(value).__name__}."
            )
        text = value
    if not text.strip():
        raise DataFormatError(f"Row {index}, column '{column}': the response is empty.")
    return text


def normalize_row(row: dict[str, Any], data_format: str, index: int) -> dict[str, Any]:
    """Map a row of any supported format to `{"prompt", "real", "synthetic"?, "proto"?}`.

    `prompt` is a string or a list of messages; responses are strings.
    """
    if data_format == "messages":
        messages = row["messages"]
        if not _is_message_list(messages):
            raise DataFormatError(f"Row {index}, column 'messages': expected a non-empty list of messages.")
        _check_messages(messages, "messages", index)
        if messages[-1]["role"] != "assistant":
            raise DataFormatError(
                f"Row {index}, column 'messages': the last message must be the assistant's (the real response), got "
                f"role {messages[-1]['role']!r}."
            )
        prompt, real = messages[:-1], messages[-1:]
        synthetic = None
    elif data_format == "spin":
        for column in ("real", "generated"):
            if not _is_message_list(row[column]):
                raise DataFormatError(f"Row {index}, column '{column}': expected a non-empty list of messages.")
            _check_messages(row[column], column, index)
        prompt, real, synthetic = row["real"][:-1], row["real"][-1:], row["generated"][-1:]
        if real[0]["role"] != "assistant" or synthetic[0]["role"] != "assistant":
            raise DataFormatError(
                f"Row {index}: in SPIN format, 'real' and 'generated' must end with an assistant turn."
            )
    else:  # prompt_completion, preference
        prompt = row["prompt"]
        real = row["completion" if data_format == "prompt_completion" else "chosen"]
        synthetic = None

    conversational = not isinstance(prompt, str)
    prompt_column = "messages" if data_format == "messages" else "real" if data_format == "spin" else "prompt"
    if conversational:
        if not _is_message_list(prompt):
            raise DataFormatError(
                f"Row {index}, column '{prompt_column}': the prompt must be a string or a non-empty list of messages, "
                f"got {prompt!r}."
            )
        _check_messages(prompt, prompt_column, index)
    elif not prompt.strip():
        raise DataFormatError(f"Row {index}, column '{prompt_column}': the prompt is empty.")

    real_column = {"messages": "messages", "spin": "real", "prompt_completion": "completion"}.get(
        data_format, "chosen"
    )
    if real is None:
        raise DataFormatError(f"Row {index}, column '{real_column}': the real response is missing.")
    out = {"prompt": prompt, "real": _response_text(real, real_column, index, conversational)}
    if synthetic is not None:
        out["synthetic"] = _response_text(synthetic, "generated", index, conversational)
    for column in OPTIONAL_RESPONSE_COLUMNS:
        if row.get(column) is not None:
            out[column] = _response_text(row[column], column, index, conversational)
    return out


def eos_token_ids(tokenizer: PreTrainedTokenizerBase, generation_config: Any = None) -> list[int]:
    """All token ids that end a response: the tokenizer's eos and the model's generation eos ids."""
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    configured = getattr(generation_config, "eos_token_id", None)
    if configured is not None:
        ids += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(ids))


def cut_at_eos(ids: list[int], eos_ids: Sequence[int]) -> list[int]:
    """Keep tokens up to and including the first end-of-sequence token."""
    for position, token in enumerate(ids):
        if token in eos_ids:
            return ids[: position + 1]
    return ids


class TripletTokenizer:
    """Tokenizes normalised rows: the prompt as generation sees it, responses as its continuation.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Tokenizer with a chat template for conversational data.
        max_length (`int` or `None`):
            Maximum prompt + response length; a prompt that alone reaches it is an error.
        max_prompt_length (`int` or `None`):
            Prompts longer than this are truncated per `truncation_mode`.
        truncation_mode (`str`):
            `"keep_end"` or `"keep_start"`.
        eos_ids (`list[int]`):
            Token ids that end a response.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int | None,
        max_prompt_length: int | None,
        truncation_mode: str,
        eos_ids: list[int],
    ):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.truncation_mode = truncation_mode
        self.eos_ids = eos_ids

    def prompt_text(self, prompt: str | list[dict[str, str]]) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def response_text(self, prompt: str | list[dict[str, str]], prompt_text: str, response: str) -> str:
        """The text that follows the prompt when the response is appended (through the chat template if any)."""
        if isinstance(prompt, str):
            return response
        full = self.tokenizer.apply_chat_template(
            prompt + [{"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(prompt_text):
            raise DataFormatError(
                "The chat template renders the prompt with the generation prompt differently from the start of the "
                "prompt + assistant response, so the response cannot be tokenized as the continuation the model "
                "generates. Use a chat template whose `add_generation_prompt=True` output is a prefix of the "
                "rendered conversation."
            )
        return full[len(prompt_text) :]

    def encode_prompt(self, prompt: str | list[dict[str, str]], index: int) -> tuple[str, list[int]]:
        text = self.prompt_text(prompt)
        # Chat templates already contain any special tokens; plain-text prompts get the tokenizer's usual ones.
        ids = self.tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"]
        if self.max_prompt_length is not None and len(ids) > self.max_prompt_length:
            ids = (
                ids[-self.max_prompt_length :] if self.truncation_mode == "keep_end" else ids[: self.max_prompt_length]
            )
        if self.max_length is not None and len(ids) >= self.max_length:
            raise DataFormatError(
                f"Row {index}: the prompt is {len(ids)} tokens, which leaves no room for a response within "
                f"max_length={self.max_length}. Raise `max_length`, set `max_prompt_length` to truncate prompts, or "
                "filter out long prompts."
            )
        return text, ids

    def encode_response(self, prompt: str | list[dict[str, str]], prompt_text: str, response: str) -> list[int]:
        text = self.response_text(prompt, prompt_text, response)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if isinstance(prompt, str) and self.tokenizer.eos_token_id is not None:
            ids = ids + [self.tokenizer.eos_token_id]
        return cut_at_eos(ids, self.eos_ids)

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        prompt_text, prompt_ids = self.encode_prompt(row["prompt"], index)
        out = {"prompt_text": prompt_text, "prompt_ids": prompt_ids, "real_text": row["real"]}
        for role in RESPONSE_ROLES:
            if role in row:
                out[f"{role}_ids"] = self.encode_response(row["prompt"], prompt_text, row[role])
        return out


def check_columns(dataset: Dataset | IterableDataset, name: str) -> str:
    """Validate the columns of a dataset before any compute and return its format."""
    column_names = dataset.column_names
    if column_names is None:  # IterableDataset of unknown features
        column_names = list(next(iter(dataset)).keys())
    data_format = detect_format(column_names)
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise DataFormatError(f"The {name} dataset is empty.")
    return data_format


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, conversational: bool) -> None:
    """Raise early when the tokenizer cannot pad, end responses, or template conversational data."""
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise ValueError(
            "The tokenizer has neither a pad token nor an eos token. T-SPIN needs an eos token to end responses (and "
            "pads with it when there is no pad token): set `tokenizer.eos_token` (and optionally `tokenizer.pad_token`)."
        )
    if conversational and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "The dataset is conversational (lists of messages) but the tokenizer has no chat template. Set "
            "`tokenizer.chat_template`, or convert the dataset to plain-text prompt/completion strings."
        )


def tokenize_dataset(
    dataset: Dataset | IterableDataset,
    data_format: str,
    triplet_tokenizer: TripletTokenizer,
    name: str,
) -> list[dict[str, Any]]:
    """Validate, normalise and tokenize every row of a dataset of `data_format` (from [`check_columns`])."""
    rows = [normalize_row(row, data_format, index) for index, row in enumerate(dataset)]
    if not rows:
        raise DataFormatError(f"The {name} dataset is empty.")
    conversational = not isinstance(rows[0]["prompt"], str)
    if any((not isinstance(row["prompt"], str)) != conversational for row in rows):
        raise DataFormatError(f"The {name} dataset mixes plain-text and conversational prompts; use one kind.")
    check_tokenizer(triplet_tokenizer.tokenizer, conversational)
    for role in OPTIONAL_RESPONSE_COLUMNS:
        present = sum(role in row for row in rows)
        if 0 < present < len(rows):
            raise DataFormatError(
                f"Column '{role}' of the {name} dataset is empty in {len(rows) - present} of {len(rows)} rows: give "
                "every row a response or drop the column (it is then generated)."
            )
    return [triplet_tokenizer(row, index) for index, row in enumerate(rows)]


class TripletDataset(torch.utils.data.Dataset):
    """Tokenized triplets whose synthetic/proto responses and reference log-probs self-play replaces in place.

    The trainer's dataloader holds this object, so what [`SelfPlayCallback`] writes at an epoch start is what that
    epoch trains on. `include_proto` drops the proto response from the examples when the historical term is off.

    With `mix_previous=True` (SPIN's data mixing) the dataset has two rows per prompt: row `i < N` is the current
    iteration's triplet, row `N + i` the same prompt with the previous iteration's synthetic response
    (`previous_synthetic_ids`, and its reference log-prob `ref_previous_synthetic_logps`), or the current one again
    where there is no previous iteration. The length never changes, so the trainer's step count holds for every
    iteration.
    """

    def __init__(self, examples: list[dict[str, Any]], mix_previous: bool = False):
        self.examples = examples
        self.include_proto = True
        self.mix_previous = mix_previous
        self._given = [dict(example) for example in examples]  # shallow: self-play never changes a value in place

    def restore_given(self) -> None:
        """Put back the examples as the dataset brought them, dropping or undoing every column self-play filled in
        (a new `train()` on the same trainer starts from them)."""
        for example, given in zip(self.examples, self._given, strict=True):
            example.clear()
            example.update(given)

    def __len__(self) -> int:
        return len(self.examples) * (2 if self.mix_previous else 1)

    def __getitem__(self, index: int) -> dict[str, Any]:
        previous = index >= len(self.examples)
        example = self.examples[index - len(self.examples) if previous else index]
        if "synthetic_ids" not in example:
            raise RuntimeError(f"Example {index} has no synthetic response yet: self-play has not generated it.")
        item = {"prompt_ids": example["prompt_ids"], "real_ids": example["real_ids"]}
        synthetic = "previous_synthetic" if previous and "previous_synthetic_ids" in example else "synthetic"
        item["synthetic_ids"] = example[f"{synthetic}_ids"]
        if self.include_proto:
            item["proto_ids"] = example["proto_ids"]
        sources = {"real": "real", "synthetic": synthetic, "proto": "proto"}
        for role in ("real", "synthetic", "proto") if self.include_proto else ("real", "synthetic"):
            key = f"ref_{sources[role]}_logps"
            if key in example:
                item[f"ref_{role}_logps"] = example[key]
        return item

    def has(self, role: str) -> bool:
        return all(f"{role}_ids" in example for example in self.examples)

    def column(self, key: str) -> list[Any]:
        return [example.get(key) for example in self.examples]

    def set_column(self, key: str, values: Sequence[Any]) -> None:
        if len(values) != len(self.examples):
            raise ValueError(f"Got {len(values)} values for {len(self.examples)} examples.")
        for example, value in zip(self.examples, values, strict=True):
            example[key] = value
