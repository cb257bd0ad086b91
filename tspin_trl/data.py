"""Recognising dataset formats, templating, tokenizing and validating rows into response triplets.

Every supported row is first normalised to `prompt`, `real` and the optional `synthetic` / `proto` responses (plus the
row's `tools` and `chat_template_kwargs`), then tokenized once. Conversational rows are templated with TRL's own
`apply_chat_template` (tools, per-row template kwargs, the common-prefix rule for templates whose generation prompt is
not a prefix of the conversation), and preference rows without a `prompt` have it extracted with TRL's
`maybe_extract_prompt`. The prompt is tokenized exactly as generation will see it, and each response is tokenized as
the continuation of that prompt, ending at the first end-of-sequence token.

SFT's data forms are accepted too: plain text (one column, `text` by default) is split into prompt and real response by
a stated rule (after the last occurrence of a response template, or by default the second half of the tokens, at most
`max_completion_length` of them), pre-tokenized rows by their completion mask, ShareGPT `conversations` are converted
to messages with TRL's `maybe_convert_to_chatml`, and a `formatting_func`'s output follows the text rule (a string) or
is a conversation (a list of messages).
"""

import functools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from trl.data_utils import apply_chat_template, maybe_convert_to_chatml, maybe_extract_prompt


logger = logging.getLogger(__name__)

# Column names of each recognised format, checked in this order.
FORMATS: dict[str, tuple[str, ...]] = {
    "spin": ("real", "generated"),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen"),
    "implicit_preference": ("chosen", "rejected"),
    "sharegpt": ("conversations",),
}
# SFT's forms, recognised apart from FORMATS: pre-tokenized rows (`input_ids`, before every other format, as SFT reads
# them) and plain text (the `dataset_text_field` column, when no other format matches).
TOKENIZED_MASK_COLUMNS = ("completion_mask", "labels")
# `response_template` presets: "paper" ends the paper's prompt template, `### Instruction: {prompt}\n\n### Response: `
RESPONSE_TEMPLATE_PRESETS = {"paper": "### Response: "}
# ShareGPT's role names (TRL's `maybe_convert_to_chatml` renames the keys only)
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}
OPTIONAL_RESPONSE_COLUMNS = ("synthetic", "proto")
RESPONSE_ROLES = ("real", "synthetic", "proto")
# Columns TRL's vision-language trainers read; T-SPIN generates and scores text only.
IMAGE_COLUMNS = ("image", "images")
SUPPORTED_FORMATS_TEXT = (
    "'prompt' + 'completion' (standard or conversational), 'messages' (the last assistant turn is the real "
    "response), SPIN's 'real' + 'generated' message lists, DPO's 'prompt' + 'chosen' (chosen is the real response), "
    "DPO's implicit-prompt 'chosen' + 'rejected' (the prompt is their shared first turns), ShareGPT's "
    "'conversations' (from/value), plain text ('text' or `dataset_text_field`, split into prompt and response by "
    "`response_template` or the default rule, see docs/data_formats.md), or pre-tokenized 'input_ids' with a "
    "'completion_mask' (or 'labels', -100 on the prompt). Optional columns: "
    "'synthetic' and 'proto' (already generated responses), 'tools' (function schemas for the chat template) and "
    "'chat_template_kwargs' (a dict per row)"
)
# Where the prompt and the real response of each format come from, for error messages.
_PROMPT_COLUMN = {
    "messages": "messages",
    "spin": "real",
    "implicit_preference": "chosen",
    "sharegpt": "conversations",
    "text": "text",
    "tokenized": "input_ids",
}
_REAL_COLUMN = {
    "messages": "messages",
    "spin": "real",
    "prompt_completion": "completion",
    "sharegpt": "conversations",
    "text": "text",
    "tokenized": "input_ids",
}
# `multi_turn_completions`: what to do with a conversational response of several turns (see `split_multi_turn`).
MULTI_TURN_COMPLETIONS = ("error", "last_assistant")
_MULTI_TURN_HINT = (
    " Or set `multi_turn_completions='last_assistant'` (`--multi_turn_completions last_assistant`) to train on such "
    "rows: the turns before the last assistant message then move into the prompt (see docs/data_formats.md)."
)


class DataFormatError(ValueError):
    """A dataset row or column does not match any supported T-SPIN format."""


def detect_format(column_names: Sequence[str], text_field: str = "text") -> str:
    """Return the name of the dataset format from its columns, or raise a [`DataFormatError`] naming the fix.

    Pre-tokenized rows (`input_ids`) come first, as SFT reads them, and need a completion mask; plain text
    (`text_field`) is recognised when no other format matches."""
    columns = set(column_names)
    for column in IMAGE_COLUMNS:
        if column in columns:
            raise DataFormatError(
                f"The dataset has an '{column}' column: vision-language (image) data is not supported. T-SPIN trains "
                "text-only causal language models (it samples and scores text responses). Supported: "
                f"{SUPPORTED_FORMATS_TEXT}. Drop the '{column}' column to train on the text alone."
            )
    if "input_ids" in columns:
        if not any(column in columns for column in TOKENIZED_MASK_COLUMNS):
            raise DataFormatError(
                f"The dataset is pre-tokenized ({sorted(columns)}) but has no 'completion_mask' (1 on the response "
                "tokens) or 'labels' (-100 on the prompt tokens), so where the prompt ends is unknown: T-SPIN "
                "generates its own responses from the prompt, so it must know it. Add a 'completion_mask' column, or "
                "pass the untokenized rows (prompt/completion, messages, or text split by `response_template` or the "
                "default rule, see docs/data_formats.md)."
            )
        return "tokenized"
    matches = [name for name, required in FORMATS.items() if set(required) <= columns]
    if not matches and text_field in columns:
        return "text"
    real_columns = {_REAL_COLUMN.get(name, "chosen") for name in matches}
    if len(real_columns) > 1:  # e.g. 'messages' and 'prompt' + 'completion': which is the real response?
        described = " and ".join(" + ".join(f"'{c}'" for c in FORMATS[name]) for name in matches)
        raise DataFormatError(
            f"The dataset has the columns of several formats ({described}), so the real response could be in "
            f"{sorted(real_columns)}. Keep the columns of one format: drop the others with "
            "`dataset.remove_columns([...])`."
        )
    if matches:
        return matches[0]  # DPO's prompt + chosen + rejected: the explicit prompt
    raise DataFormatError(
        f"Cannot recognise the dataset format from its columns {sorted(columns)}. T-SPIN accepts: "
        f"{SUPPORTED_FORMATS_TEXT}. Rename your columns to one of these."
    )


def _is_message_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(m, dict) for m in value)


def _check_messages(messages: list, column: str, index: int) -> None:
    """Each message needs a role and text content; an assistant message may carry `tool_calls` instead of content."""
    for message in messages:
        if "role" not in message:
            raise DataFormatError(
                f"Row {index}, column '{column}': every message needs a 'role' key, got {message!r}."
            )
        content = message.get("content")
        if message["role"] == "assistant" and message.get("tool_calls") and content is None:
            continue  # a tool call: the chat template renders `tool_calls`
        if "content" not in message:
            raise DataFormatError(
                f"Row {index}, column '{column}': every message needs 'role' and 'content' keys (or, for an "
                f"assistant tool call, 'tool_calls'), got {message!r}."
            )
        if isinstance(content, list):
            kinds = sorted(
                {str(part.get("type")) for part in content if isinstance(part, dict) and part.get("type") != "text"}
            )
            if kinds:
                raise DataFormatError(
                    f"Row {index}, column '{column}': a {message['role']} message has multimodal content (parts of "
                    f"type {kinds}). T-SPIN trains text-only causal language models: images, audio and video are not "
                    "supported. Use text-only messages whose 'content' is a string."
                )
        if not isinstance(content, str):
            raise DataFormatError(
                f"Row {index}, column '{column}': message content must be a string, got "
                f"{type(content).__name__} ({content!r}). Structured content is not supported: flatten it to text."
            )


def _response(value: Any, column: str, index: int, conversational: bool) -> str | dict[str, Any]:
    """A response as its text (standard data) or as one assistant message (conversational data; a string becomes one).

    An assistant message may be a tool call (`tool_calls` and no content)."""
    if not conversational:
        if not isinstance(value, str):
            raise DataFormatError(
                f"Row {index}, column '{column}': the prompt is plain text, so the response must be a string too, "
                f"got {type(value).__name__}."
            )
        if not value.strip():
            raise DataFormatError(f"Row {index}, column '{column}': the response is empty.")
        return value
    if isinstance(value, str):
        value = [{"role": "assistant", "content": value}]
    if not _is_message_list(value):
        raise DataFormatError(
            f"Row {index}, column '{column}': expected a list with one assistant message or a string, got "
            f"{type(value).__name__}."
        )
    _check_messages(value, column, index)
    if len(value) != 1 or value[0]["role"] != "assistant":
        several_turns = len(value) > 1 and value[-1]["role"] == "assistant"
        raise DataFormatError(
            f"Row {index}, column '{column}': a conversational response must be a list with exactly one assistant "
            f"message (text or a tool call), got roles {[m['role'] for m in value]}. T-SPIN compares one generated "
            "assistant turn with the real one; put earlier turns (tool results included) in the prompt."
            + (_MULTI_TURN_HINT if several_turns else "")
        )
    message = value[0]
    if not (message.get("content") or "").strip() and not message.get("tool_calls"):
        raise DataFormatError(f"Row {index}, column '{column}': the response is empty.")
    return message


def _row_options(row: dict[str, Any], index: int) -> dict[str, Any]:
    """The row's `tools` (a JSON string is decoded, as TRL does) and `chat_template_kwargs`, where given."""
    options = {}
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"Row {index}, column 'tools': a string must be a JSON list of function schemas ({error})."
            ) from None
    if tools:
        if not isinstance(tools, list):
            raise DataFormatError(
                f"Row {index}, column 'tools': expected a list of function schemas (or its JSON string), got "
                f"{type(tools).__name__}."
            )
        options["tools"] = tools
    kwargs = row.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise DataFormatError(
                f"Row {index}, column 'chat_template_kwargs': expected a dict of keyword arguments for the chat "
                f"template, got {type(kwargs).__name__}."
            )
        if kwargs:
            options["chat_template_kwargs"] = kwargs
    return options


def _extract_prompt(row: dict[str, Any], data_format: str, index: int) -> dict[str, Any]:
    """DPO's preference rows as `prompt`/`chosen`, the prompt extracted by TRL's `maybe_extract_prompt` when it is
    implicit: no `prompt` column, or a prompt of the other kind (text / messages) than `chosen`."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    example = {"chosen": chosen} | ({"prompt": row["prompt"]} if data_format == "preference" else {})
    implicit = data_format == "implicit_preference" or (
        row.get("prompt") is not None and _is_message_list(row["prompt"]) != _is_message_list(chosen)
    )
    if not implicit:
        return example  # `rejected` is not used: it is not a sample of the policy
    both_text = isinstance(chosen, str) and isinstance(rejected, str) and chosen and rejected
    if not (both_text or (_is_message_list(chosen) and _is_message_list(rejected))):
        raise DataFormatError(
            f"Row {index}, columns 'chosen'/'rejected': to extract the implicit prompt (as TRL does), both must be "
            "non-empty strings or both lists of messages that share their first turns. Otherwise add a 'prompt' "
            "column of the same kind as 'chosen'."
        )
    example = maybe_extract_prompt(example | {"rejected": rejected})
    if not example["prompt"]:
        raise DataFormatError(
            f"Row {index}, columns 'chosen'/'rejected': they share no first turns, so there is no implicit prompt to "
            "extract. Add a 'prompt' column."
        )
    return example


def _check_prompt_turns(prompt: list[dict[str, Any]], column: str, index: int) -> None:
    """A conversational prompt asks something: it has a user turn, and no empty one."""
    roles = [message["role"] for message in prompt]
    if "user" not in roles:
        raise DataFormatError(
            f"Row {index}, column '{column}': the prompt has no user message (roles {roles}): the model would answer "
            "nothing. Put the question in a user turn before the response, or drop the row."
        )
    for position, message in enumerate(prompt):
        content = message.get("content")
        if message["role"] == "user" and isinstance(content, str) and not content.strip():
            raise DataFormatError(
                f"Row {index}, column '{column}': user message {position} of the prompt is empty. Fill it or drop the "
                "row."
            )


def _without_none(value: Any) -> Any:
    # `datasets` gives every dict (message, tool call, arguments) every key of its column, absent ones as None: two
    # columns holding the same turns may differ in those, so compare what is set
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


def split_multi_turn(value: Any, column: str, index: int) -> tuple[list[dict[str, Any]], Any]:
    """A conversational response of several turns as (the turns before its last message, `[last message]`), for
    `multi_turn_completions="last_assistant"`; anything else (one message, a string) as `([], value)` unchanged.

    The last message must be the assistant's: it is the response trained on."""
    if not _is_message_list(value) or len(value) < 2:
        return [], value
    _check_messages(value, column, index)
    if value[-1]["role"] != "assistant":
        raise DataFormatError(
            f"Row {index}, column '{column}': with multi_turn_completions='last_assistant' a response of several "
            f"turns must end with an assistant message (the one trained on), got roles {[m['role'] for m in value]}. "
            "End it with the assistant's answer, or drop the row."
        )
    return value[:-1], value[-1:]


def _move_earlier_turns(
    prompt: list[dict[str, Any]], real: Any, given: dict[str, Any], real_column: str, index: int
) -> tuple[list[dict[str, Any]], Any, dict[str, Any], int]:
    """`multi_turn_completions="last_assistant"`: the real response's turns before its last assistant message join
    the prompt. Given synthetic/proto responses must continue that prompt: the same earlier turns, then their own
    last message. Returns the prompt, the real response, the given responses and the number of turns moved."""
    earlier, real = split_multi_turn(real, real_column, index)
    kept = {}
    for column, value in given.items():
        lead, last = split_multi_turn(value, column, index)
        if _without_none(lead) != _without_none(earlier):
            raise DataFormatError(
                f"Row {index}, column '{column}': with multi_turn_completions='last_assistant' this row's prompt is "
                f"its prompt plus the {len(earlier)} turn(s) of '{real_column}' before its last assistant message, "
                f"so a given {column} response must continue that prompt: the same {len(earlier)} earlier turn(s), "
                f"then one assistant message (it has {len(lead)} earlier turn(s), not the same). Give it those turns, "
                "or drop the column (the responses are then generated from the new prompt)."
            )
        kept[column] = last
    return prompt + earlier, real, kept, len(earlier)


def sharegpt_to_messages(row: dict[str, Any], index: int) -> dict[str, Any]:
    """A ShareGPT row (`conversations` of `from`/`value` turns) as a `messages` row, converted by TRL's
    `maybe_convert_to_chatml`; ShareGPT's role names `human` and `gpt` become `user` and `assistant`."""
    conversations = row["conversations"]
    if not _is_message_list(conversations):
        raise DataFormatError(
            f"Row {index}, column 'conversations': expected a non-empty list of turns ({{'from': ..., 'value': ...}})."
        )
    converted = maybe_convert_to_chatml({"conversations": [dict(turn) for turn in conversations]})
    for message in converted["messages"]:
        message["role"] = SHAREGPT_ROLES.get(message.get("role"), message.get("role"))
    return {key: value for key, value in row.items() if key != "conversations"} | converted


def normalize_row(
    row: dict[str, Any],
    data_format: str,
    index: int,
    multi_turn_completions: str = "error",
    splitter: "TripletTokenizer | None" = None,
) -> dict[str, Any]:
    """Map a row of any supported format to `{"prompt", "real", "synthetic"?, "proto"?, "tools"?,
    "chat_template_kwargs"?, "moved_turns"?}`.

    `prompt` is a string or a list of messages; responses are strings (standard data) or one assistant message each
    (conversational data). A conversational response of several turns (e.g. a tool call, its result and the answer)
    is an error, unless `multi_turn_completions="last_assistant"`: the turns before its last assistant message then
    move into the prompt, and `moved_turns` gives their number (rows with none have no such key).
    Plain-text and pre-tokenized rows are split by `splitter` ([`TripletTokenizer.split_text`],
    [`TripletTokenizer.split_tokens`]); a split on tokens also returns them (`prompt_ids`, `real_ids`).
    """
    if multi_turn_completions not in MULTI_TURN_COMPLETIONS:
        raise ValueError(
            f"multi_turn_completions={multi_turn_completions!r} is invalid: use one of {list(MULTI_TURN_COMPLETIONS)}."
        )
    synthetic = None
    split = {}
    source = data_format  # what errors name: ShareGPT rows are checked as the messages they become
    if data_format == "sharegpt":
        row, data_format = sharegpt_to_messages(row, index), "messages"
    if data_format in ("text", "tokenized"):
        if splitter is None:
            raise ValueError(f"Rows of the {data_format!r} format are split into prompt and response by a tokenizer.")
        split = splitter.split_text(row, index) if data_format == "text" else splitter.split_tokens(row, index)
        prompt, real = split["prompt"], split["real"]
    elif data_format == "messages":
        messages, column = row["messages"], _PROMPT_COLUMN[source]
        if not _is_message_list(messages):
            raise DataFormatError(f"Row {index}, column '{column}': expected a non-empty list of messages.")
        _check_messages(messages, column, index)
        if messages[-1]["role"] != "assistant":
            raise DataFormatError(
                f"Row {index}, column '{column}': the last message must be the assistant's (the real response), got "
                f"role {messages[-1]['role']!r}."
            )
        prompt, real = messages[:-1], messages[-1:]
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
    elif data_format == "prompt_completion":
        prompt, real = row["prompt"], row["completion"]
    else:  # preference, implicit_preference
        example = _extract_prompt(row, data_format, index)
        prompt, real = example["prompt"], example["chosen"]

    conversational = not isinstance(prompt, str)
    text_field = splitter.text_field if splitter is not None else "text"
    prompt_column = text_field if data_format == "text" else _PROMPT_COLUMN.get(source, "prompt")
    if conversational:
        if not _is_message_list(prompt):
            raise DataFormatError(
                f"Row {index}, column '{prompt_column}': the prompt must be a string or a non-empty list of messages, "
                f"got {prompt!r}."
            )
        _check_messages(prompt, prompt_column, index)
        _check_prompt_turns(prompt, prompt_column, index)
    elif not prompt.strip():
        raise DataFormatError(f"Row {index}, column '{prompt_column}': the prompt is empty.")

    real_column = text_field if data_format == "text" else _REAL_COLUMN.get(source, "chosen")
    if real is None:
        raise DataFormatError(f"Row {index}, column '{real_column}': the real response is missing.")
    given = {column: row[column] for column in OPTIONAL_RESPONSE_COLUMNS if row.get(column) is not None}
    moved = 0
    if conversational and multi_turn_completions == "last_assistant":
        prompt, real, given, moved = _move_earlier_turns(prompt, real, given, real_column, index)
    out = {"prompt": prompt, "real": _response(real, real_column, index, conversational)}
    out.update({key: split[key] for key in ("prompt_ids", "real_ids") if key in split})
    if synthetic is not None:
        out["synthetic"] = _response(synthetic, "generated", index, conversational)
    for column, value in given.items():
        out[column] = _response(value, column, index, conversational)
    if moved:
        out["moved_turns"] = moved
    options = _row_options(row, index)
    if options and not conversational:
        raise DataFormatError(
            f"Row {index}: {sorted(options)} apply to conversational rows (they go to the chat template), but this "
            "row's prompt is plain text. Use lists of messages, or drop the column."
        )
    return out | options


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

    Conversational rows go through TRL's [`~trl.apply_chat_template`] with the row's `tools` and
    `chat_template_kwargs`: the prompt gets the generation prompt (or continues a final assistant message), and where a
    template renders the prompt alone differently from the start of the whole conversation, the prompt is their common
    prefix (as TRL does; generation then continues from that prefix too).

    Over-long prompts: a prompt longer than `max_prompt_length` keeps its last (`truncation_mode="keep_end"`) or first
    (`"keep_start"`) tokens. A prompt that then leaves no room for a response within `max_length` is, with
    `"keep_start"`, dropped (as `DPOTrainer` drops it); with `"keep_end"`, cut from the left to
    `max_length - max_completion_length` tokens so that a full-length generated response fits (dropped when
    `max_completion_length` is not below `max_length`).

    Plain text (SFT's language-modeling rows) is split into prompt and real response by [`split_text`]: after the last
    occurrence of `response_template`, or by default on tokens, the response being the text's second half (at most
    `max_completion_length` tokens, the eos token appended as SFT appends it); pre-tokenized rows by their completion
    mask ([`split_tokens`]).

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Tokenizer with a chat template for conversational data.
        max_length (`int` or `None`):
            Maximum prompt + response length.
        max_prompt_length (`int` or `None`):
            Prompts longer than this are truncated per `truncation_mode`.
        truncation_mode (`str`):
            `"keep_end"` or `"keep_start"`.
        eos_ids (`list[int]`):
            Token ids that end a response.
        max_completion_length (`int`, *optional*):
            Room a `"keep_end"` cut leaves for a generated response; without it, `"keep_end"` drops prompts with no
            room too. It also caps the response of the default text split.
        multi_turn_completions (`str`, *optional*, defaults to `"error"`):
            What [`tokenize_dataset`] does with a conversational response of several turns: `"error"` refuses it,
            `"last_assistant"` moves the turns before its last assistant message into the prompt (see
            [`normalize_row`]).
        response_template (`str`, *optional*):
            Plain text: the response is the text after the last occurrence of this string (the prompt ends with it).
            `"paper"` is the paper's template (`"### Response: "`). `None`: the default split on tokens.
        text_field (`str`, *optional*, defaults to `"text"`):
            The column of plain-text rows.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int | None,
        max_prompt_length: int | None,
        truncation_mode: str,
        eos_ids: list[int],
        max_completion_length: int | None = None,
        multi_turn_completions: str = "error",
        response_template: str | None = None,
        text_field: str = "text",
    ):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.truncation_mode = truncation_mode
        self.eos_ids = eos_ids
        self.max_completion_length = max_completion_length
        self.multi_turn_completions = multi_turn_completions
        self.response_template = RESPONSE_TEMPLATE_PRESETS.get(response_template, response_template)
        self.text_field = text_field
        self._warned_prefix = False
        self.announced_text_rule = False

    @property
    def text_rule(self) -> str:
        """The rule that splits plain text into prompt and real response, in words."""
        if self.response_template is not None:
            return (
                f"the response is the text after the last occurrence of response_template={self.response_template!r}"
                " (the prompt ends with it)"
            )
        cap = (
            ""
            if self.max_completion_length is None
            else f", at most max_completion_length={self.max_completion_length}"
        )
        return (
            f"the response is the second half of the text's tokens (the eos token appended{cap}), the prompt the "
            "tokens before it"
        )

    def split_text(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        """A plain-text row as its prompt and real response, by [`text_rule`]: `{"prompt", "real"}`, and the token ids
        (`prompt_ids`, `real_ids`) when the split is on tokens."""
        field = self.text_field
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(
                f"Row {index}, column '{field}': expected a non-empty string, got {type(text).__name__} ({text!r})."
            )
        if self.response_template is not None:
            at = text.rfind(self.response_template)
            if at < 0:
                raise DataFormatError(
                    f"Row {index}, column '{field}': the response template {self.response_template!r} does not occur "
                    f"in the text (starting {text[:60]!r}), so its response is unknown. Fix the row, drop it, or set "
                    "`response_template` to the string that precedes the response in every row."
                )
            cut = at + len(self.response_template)
            if not text[cut:].strip():
                raise DataFormatError(
                    f"Row {index}, column '{field}': nothing follows the last {self.response_template!r}: the "
                    "response is empty."
                )
            return {"prompt": text[:cut], "real": text[cut:]}
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        eos = self.tokenizer.eos_token
        if eos is not None and not text.endswith(eos):  # as SFT appends it to language-modeling text
            ids = ids + [self.tokenizer.eos_token_id]
        if len(ids) < 2:
            raise DataFormatError(
                f"Row {index}, column '{field}': the text is one token ({text!r}): nothing is left for a prompt and a "
                "response. Drop the row."
            )
        size = len(ids) // 2
        if self.max_completion_length is not None:
            size = min(size, self.max_completion_length)
        return self._split_ids(ids, len(ids) - size)

    def split_tokens(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        """A pre-tokenized row as its prompt and real response: the response is the run of tokens its
        `completion_mask` marks (or its `labels` that are not -100), the prompt every token before it. Tokens after
        the response (a chat template's newline after the end of turn) are dropped; a mask with several runs is an
        error."""
        ids = row["input_ids"]
        if not (isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids)):
            raise DataFormatError(f"Row {index}, column 'input_ids': expected a non-empty list of token ids.")
        column = next((c for c in TOKENIZED_MASK_COLUMNS if row.get(c) is not None), None)
        if column is None:
            raise DataFormatError(
                f"Row {index}: its 'completion_mask' (or 'labels') is empty, so where the prompt ends is unknown."
            )
        mask = row[column] if column == "completion_mask" else [label != -100 for label in row[column]]
        if len(mask) != len(ids):
            raise DataFormatError(
                f"Row {index}, column '{column}': {len(mask)} values for {len(ids)} input_ids; give one per token."
            )
        marked = [position for position, bit in enumerate(mask) if bit]
        if not marked or marked[0] == 0:
            raise DataFormatError(
                f"Row {index}, column '{column}': "
                + (
                    "no token is marked as the response."
                    if not marked
                    else "the response starts at the first token, leaving no prompt to generate from."
                )
            )
        start, end = marked[0], marked[-1] + 1
        if len(marked) != end - start:
            raise DataFormatError(
                f"Row {index}, column '{column}': the response tokens are not one run (the mask has gaps, e.g. "
                "several assistant turns). T-SPIN's real response is the end of the sequence: mark only the last "
                "response."
            )
        return self._split_ids(ids[:end], start)

    def _split_ids(self, ids: list[int], start: int) -> dict[str, Any]:
        prompt_ids, real_ids = list(ids[:start]), cut_at_eos(list(ids[start:]), self.eos_ids)
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=False)
        return {"prompt": decode(prompt_ids), "real": decode(real_ids), "prompt_ids": prompt_ids, "real_ids": real_ids}

    def _template(self, example: dict[str, Any], options: dict[str, Any], index: int) -> dict[str, str]:
        if "chat_template_kwargs" in options:
            example = example | {"chat_template_kwargs": options["chat_template_kwargs"]}
        try:
            return apply_chat_template(example, self.tokenizer, tools=options.get("tools"))
        except Exception as error:  # the user's template and data: name the row
            raise DataFormatError(
                f"Row {index}: the chat template failed on this row ({type(error).__name__}: {error})."
            ) from error

    def prompt_text(self, prompt: str | list[dict[str, Any]], index: int = 0, **options: Any) -> str:
        """The prompt alone, with the generation prompt (`options`: the row's `tools` / `chat_template_kwargs`)."""
        if isinstance(prompt, str):
            return prompt
        return self._template({"prompt": prompt}, options, index)["prompt"]

    def render(self, row: dict[str, Any], index: int) -> tuple[str, dict[str, str]]:
        """The prompt text and the text of each response that follows it (through the chat template if any)."""
        prompt = row["prompt"]
        responses = {role: row[role] for role in RESPONSE_ROLES if role in row}
        if isinstance(prompt, str):
            return prompt, responses
        options = {key: row[key] for key in ("tools", "chat_template_kwargs") if key in row}
        full = {}
        prompts = []
        for role, message in responses.items():
            message = message if isinstance(message, dict) else {"role": "assistant", "content": message}
            rendered = self._template({"prompt": prompt, "completion": [message]}, options, index)
            prompts.append(rendered["prompt"])
            full[role] = rendered["prompt"] + rendered["completion"]
        # Each is the common prefix of the generation prompt and one conversation: the shortest is common to all
        text = min(prompts, key=len)
        if not self._warned_prefix:
            generation_prompt = self.prompt_text(prompt, index, **options)
            if generation_prompt != text:
                self._warned_prefix = True
                logger.warning(
                    "The chat template renders the prompt with its generation prompt differently from the start of "
                    "the prompt + response (first seen in row %d): prompts are cut to their common prefix, as TRL's "
                    "`apply_chat_template` does, so training and generation continue from %r instead of %r. This "
                    "warning is shown once; it likely applies to every row.",
                    index,
                    text[-40:],
                    generation_prompt[-40:],
                )
        return text, {role: conversation[len(text) :] for role, conversation in full.items()}

    def fit_prompt(self, ids: list[int]) -> tuple[list[int] | None, int]:
        """The prompt ids truncated per `max_prompt_length` / `truncation_mode` (`None` when the row has no room for
        a response and is dropped), and the number of tokens cut."""
        length = len(ids)
        keep_end = self.truncation_mode == "keep_end"
        if self.max_prompt_length is not None and len(ids) > self.max_prompt_length:
            ids = ids[-self.max_prompt_length :] if keep_end else ids[: self.max_prompt_length]
        if self.max_length is not None and len(ids) >= self.max_length:
            room = self.max_completion_length
            if not keep_end or room is None or room >= self.max_length:
                return None, length - len(ids)
            ids = ids[-(self.max_length - room) :]
        return ids, length - len(ids)

    def encode_prompt(self, prompt: str | list[dict[str, Any]], index: int, **options: Any) -> tuple[str, list[int]]:
        """A prompt alone (e.g. a scorer's), templated with the generation prompt and fitted; one with no room for a
        response is an error here."""
        text = self.prompt_text(prompt, index, **options)
        ids, _ = self.fit_prompt(self._encode_prompt_text(text, isinstance(prompt, str)))
        if ids is None:
            raise DataFormatError(
                f"Row {index}: the prompt leaves no room for a response within max_length={self.max_length}. Raise "
                "`max_length`, set `max_prompt_length` to truncate prompts, or filter out long prompts."
            )
        return text, ids

    def _encode_prompt_text(self, text: str, standard: bool) -> list[int]:
        # Chat templates already contain any special tokens; plain-text prompts get the tokenizer's usual ones.
        return self.tokenizer(text, add_special_tokens=standard)["input_ids"]

    def encode_response(self, text: str, standard: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if standard and self.tokenizer.eos_token_id is not None:
            ids = ids + [self.tokenizer.eos_token_id]
        return cut_at_eos(ids, self.eos_ids)

    def encode(self, row: dict[str, Any], index: int) -> tuple[dict[str, Any] | None, int]:
        """The tokenized example (`None` when it has no room for a response) and the number of prompt tokens cut."""
        standard = isinstance(row["prompt"], str)
        prompt_text, response_texts = self.render(row, index)
        # a split on tokens (pre-tokenized rows, the default text split) keeps its tokens
        given_ids = row.get("prompt_ids")
        prompt_ids, cut = self.fit_prompt(
            self._encode_prompt_text(prompt_text, standard) if given_ids is None else given_ids
        )
        if prompt_ids is None:
            return None, cut
        real = row["real"]
        real_text = real if isinstance(real, str) else real.get("content") or response_texts["real"]
        out = {"prompt_text": prompt_text, "prompt_ids": prompt_ids, "real_text": real_text}
        for role, text in response_texts.items():
            out[f"{role}_ids"] = self.encode_response(text, standard)
        if "real_ids" in row:
            out["real_ids"] = row["real_ids"]
        return out, cut

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any] | None:
        return self.encode(row, index)[0]


def check_columns(dataset: Dataset | IterableDataset, name: str, text_field: str = "text") -> str:
    """Validate the columns of a dataset before any compute and return its format (`text_field`: the plain-text
    column, see [`detect_format`])."""
    column_names = dataset.column_names
    if column_names is None:  # IterableDataset of unknown features
        column_names = list(next(iter(dataset)).keys())
    data_format = detect_format(column_names, text_field)
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise DataFormatError(f"The {name} dataset is empty.")
    if "rejected" in column_names:
        warn_unused_rejected(name, data_format)
    return data_format


_WARNED_REJECTED: set[str] = set()


def warn_unused_rejected(name: str, data_format: str) -> None:
    """Say once per dataset name that DPO's `rejected` column trains nothing, and what `rewards/rejected` and
    `logps/rejected` hold in this trainer (DPO's metric names, kept for DPO dashboards)."""
    if name in _WARNED_REJECTED or not _on_main_process():
        return
    _WARNED_REJECTED.add(name)
    use = (
        "used only to find the prompt that 'chosen' and 'rejected' share"
        if data_format == "implicit_preference"
        else "not used"
    )
    logger.warning(
        "The %s dataset has a 'rejected' column, %s: T-SPIN trains 'chosen' (the real response) against responses "
        "sampled from the policy itself at every iteration. In the logs, `rewards/rejected` and `logps/rejected` "
        "(DPO's names) hold those samples of the policy (the same as `rewards/synthetic` and `logps/synthetic`), not "
        "your rejected responses. Drop the column to silence this warning.",
        name,
        use,
    )


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


def _on_main_process() -> bool:
    """Whether this process should log dataset-wide warnings (every process tokenizes the same data)."""
    return not PartialState._shared_state or PartialState().is_main_process


def _rows_text(indices: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return shown + (f", ... ({len(indices) - limit} more)" if len(indices) > limit else "")


def _rows_with_cut_responses(examples: list[dict[str, Any]], max_length: int | None) -> dict[int, list[str]]:
    """The source rows whose given responses (real, and synthetic or proto when the dataset brings them) do not fit in
    `max_length` after their prompt (the collator cuts them), with the roles cut."""
    if max_length is None:
        return {}
    long = {}
    for example in examples:
        room = max_length - len(example["prompt_ids"])
        roles = [role for role in RESPONSE_ROLES if len(example.get(f"{role}_ids") or ()) > room]
        if roles:
            long[example["row_index"]] = roles
    return long


def tokenize_dataset(
    dataset: Dataset | IterableDataset,
    data_format: str,
    triplet_tokenizer: TripletTokenizer,
    name: str,
    mix_previous: bool = False,
) -> "TripletDataset":
    """Validate, normalise and tokenize every row of a dataset of `data_format` (from [`check_columns`]).

    Rows whose prompt leaves no room for a response (see [`TripletTokenizer`]) are dropped with one warning giving
    their count; the result records which source rows it kept (`row_indices`) and dropped (`dropped_row_indices`).
    A dataset where no row is left is an error. With `multi_turn_completions="last_assistant"` (on the
    `triplet_tokenizer`), one warning gives the number of rows whose earlier response turns moved into the prompt.
    """
    rule = triplet_tokenizer.multi_turn_completions
    rows = [normalize_row(row, data_format, index, rule, triplet_tokenizer) for index, row in enumerate(dataset)]
    if not rows:
        raise DataFormatError(f"The {name} dataset is empty.")
    if data_format == "text" and not triplet_tokenizer.announced_text_rule and _on_main_process():
        # once per trainer; the default rule is a choice made for the user, so it is a warning
        triplet_tokenizer.announced_text_rule = True
        default = triplet_tokenizer.response_template is None
        (logger.warning if default else logger.info)(
            "Plain-text rows (column '%s') are split into a prompt and a real response: %s. Self-play generates the "
            "synthetic and proto-synthetic responses from the prompt part, and T-SPIN trains on the response part "
            "only. %s, or pass prompt/completion rows (docs/data_formats.md).%s",
            triplet_tokenizer.text_field,
            triplet_tokenizer.text_rule,
            "To split after a marker instead, set `response_template` (e.g. '### Response:', or 'paper' for the "
            "paper's template)"
            if default
            else "Change it with `response_template`",
            " This warning is shown once." if default else "",
        )
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
    examples, dropped, cut = [], [], []
    for index, row in enumerate(rows):
        example, tokens_cut = triplet_tokenizer.encode(row, index)
        if example is None:
            dropped.append(index)
            continue
        if tokens_cut:
            cut.append(index)
        examples.append(example | {"row_index": index})
    tt = triplet_tokenizer
    if not examples:
        raise DataFormatError(
            f"No row of the {name} dataset is left: all {len(rows)} prompts leave no room for a response within "
            f"max_length={tt.max_length} (truncation_mode={tt.truncation_mode!r}). Raise `max_length`, set "
            "`max_prompt_length` to truncate prompts, or use truncation_mode='keep_end' to cut prompts from the left."
        )
    if _on_main_process():
        moved = [index for index, row in enumerate(rows) if row.get("moved_turns")]
        if moved:
            logger.warning(
                "multi_turn_completions=%r: in %d of %d rows of the %s dataset (rows %s) the response had several "
                "turns; the turns before its last assistant message (%d in all) were moved into the prompt, and the "
                "last assistant message is the real response. Synthetic and proto responses are sampled from that "
                "longer prompt.",
                rule,
                len(moved),
                len(rows),
                name,
                _rows_text(moved),
                sum(rows[index]["moved_turns"] for index in moved),
            )
        if dropped:
            logger.warning(
                "Dropped %d of %d rows of the %s dataset (rows %s): their prompt leaves no room for a response within "
                "max_length=%s (truncation_mode=%r drops such rows, as DPOTrainer does). To keep them, raise "
                "`max_length`, set `max_prompt_length`, or use truncation_mode='keep_end' to cut long prompts from "
                "the left.",
                len(dropped),
                len(rows),
                name,
                _rows_text(dropped),
                tt.max_length,
                tt.truncation_mode,
            )
        if cut:
            logger.warning(
                "Truncated the prompts of %d of %d rows of the %s dataset (rows %s) to fit max_prompt_length=%s / "
                "max_length=%s (truncation_mode=%r).",
                len(cut),
                len(rows),
                name,
                _rows_text(cut),
                tt.max_prompt_length,
                tt.max_length,
                tt.truncation_mode,
            )
        long = _rows_with_cut_responses(examples, tt.max_length)
        if long:
            logger.warning(
                "The given responses (%s) of %d of %d rows of the %s dataset (rows %s) are longer than max_length=%s "
                "leaves after their prompt: they are cut to fit, and their last tokens (the eos token with them) are "
                "not trained on. Raise `max_length`, set `max_prompt_length` to leave responses more room, or filter "
                "out long rows.",
                ", ".join(sorted({role for roles in long.values() for role in roles})),
                len(long),
                len(rows),
                name,
                _rows_text(sorted(long)),
                tt.max_length,
            )
    return TripletDataset(examples, mix_previous=mix_previous, num_source_rows=len(rows), max_length=tt.max_length)


def apply_formatting_func(
    dataset: Dataset | IterableDataset, formatting_func: Callable[[dict[str, Any]], Any], text_field: str = "text"
) -> Dataset | IterableDataset:
    """Each row replaced by `formatting_func(row)`, as `SFTTrainer` applies its `formatting_func`: a string becomes a
    plain-text row (column `text_field`, split into prompt and response by the text rule), a list of messages a
    `messages` row (the last assistant turn is the real response; the row's `tools` and `chat_template_kwargs` are
    kept). The first row's output decides which; every row must give the same kind."""
    first = formatting_func(next(iter(dataset)))
    if isinstance(first, str):
        column, keep, check = text_field, (), lambda value: isinstance(value, str)
    elif _is_message_list(first):
        column, keep, check = "messages", ("tools", "chat_template_kwargs"), _is_message_list
    else:
        raise DataFormatError(
            f"`formatting_func` must return a string (plain text, split into prompt and response by the text rule) or "
            f"a list of messages (a conversation), got {type(first).__name__} ({first!r:.80})."
        )

    def format_row(row: dict[str, Any], index: int) -> dict[str, Any]:
        value = formatting_func(row)
        if not check(value):
            raise DataFormatError(
                f"Row {index}: `formatting_func` returned {type(value).__name__} where row 0 gave "
                f"{'a string' if column == text_field else 'a list of messages'}; return the same kind for every row."
            )
        return {column: value}

    columns = dataset.column_names or list(next(iter(dataset)).keys())
    return dataset.map(format_row, with_indices=True, remove_columns=[c for c in columns if c not in keep])


class TripletDataset(torch.utils.data.Dataset):
    """Tokenized triplets whose synthetic/proto responses and reference log-probs self-play replaces in place.

    The trainer's dataloader holds this object, so what [`SelfPlayCallback`] writes at an epoch start is what that
    epoch trains on. `include_proto` drops the proto response from the examples when the historical term is off.
    Items are readable before training: a response self-play has not sampled yet (synthetic, proto) is absent from
    the item (the collator refuses a training batch without synthetic responses).

    With `mix_previous=True` (SPIN's data mixing) the dataset has two rows per prompt: row `i < N` is the current
    iteration's triplet, row `N + i` the same prompt with the previous iteration's synthetic response
    (`previous_synthetic_ids`, and its reference log-prob `ref_previous_synthetic_logps`), or the current one again
    where there is no previous iteration. The length never changes, so the trainer's step count holds for every
    iteration.

    With prompt selection (`served`, see [`~tspin_trl.self_play.selection.PromptSelection`]), row `i` (and `N + i`)
    serves example `served[i]`: a skipped prompt's rows serve kept prompts, and the length stays the same.

    `row_indices` gives, for each example, the index of its row in the source dataset; `dropped_row_indices` the rows
    dropped for lack of room (see [`tokenize_dataset`]).

    It reads as a `datasets.Dataset` does (`len`, `column_names`, `num_rows`, `[i]`, `[i:j]`, `["column"]`, iteration;
    `to_dataset()` gives a real one): each item has, besides T-SPIN's own fields (`prompt_ids`, `real_ids`, and the
    `synthetic_ids`, `proto_ids`, `ref_<role>_logps` self-play fills in), SFT's view of the example: `input_ids`, the
    prompt followed by the real response as training sees it (cut to `max_length`), and `completion_mask`, 1 on the
    response tokens.
    """

    def __init__(
        self,
        examples: list[dict[str, Any]],
        mix_previous: bool = False,
        num_source_rows: int | None = None,
        max_length: int | None = None,
    ):
        self.examples = examples
        self.include_proto = True
        self.mix_previous = mix_previous
        self.num_source_rows = len(examples) if num_source_rows is None else num_source_rows
        self.max_length = max_length
        self.served: list[int] | None = None
        self._given = [dict(example) for example in examples]  # shallow: self-play never changes a value in place

    def restore_given(self) -> None:
        """Put back the examples as the dataset brought them, dropping or undoing every column self-play filled in
        (a new `train()` on the same trainer starts from them)."""
        for example, given in zip(self.examples, self._given, strict=True):
            example.clear()
            example.update(given)
        self.served = None

    def serve(self, served: list[int] | None) -> None:
        """Make row `i` (and `N + i` with `mix_previous`) serve example `served[i]`; `None`: every row its own."""
        if served is not None and (
            len(served) != len(self.examples) or not all(0 <= i < len(self.examples) for i in served)
        ):
            raise ValueError(f"`served` must map each of the {len(self.examples)} rows to an example index.")
        self.served = served

    def __len__(self) -> int:
        return len(self.examples) * (2 if self.mix_previous else 1)

    def __getitem__(self, index: int | slice | str) -> Any:
        if isinstance(index, str):  # a column, as `datasets.Dataset["column"]`
            if index not in self.column_names:
                raise KeyError(f"Column {index!r} not in the dataset. Current columns are {self.column_names}.")
            return [item[index] for item in self]
        if isinstance(index, slice):  # a batch, as `datasets.Dataset[i:j]`: columns of lists
            items = [self[i] for i in range(*index.indices(len(self)))]
            return {name: [item[name] for item in items] for name in (items[0] if items else {})}
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} is out of range for a dataset of {len(self)} examples.")
        index %= len(self)
        previous = index >= len(self.examples)
        row = index - len(self.examples) if previous else index
        example = self.examples[row if self.served is None else self.served[row]]
        prompt_ids = example["prompt_ids"]
        real_ids = example["real_ids"][
            : None if self.max_length is None else max(self.max_length - len(prompt_ids), 0)
        ]
        item = {
            "input_ids": prompt_ids + real_ids,  # SFT's view; the collator reads T-SPIN's fields below
            "completion_mask": [0] * len(prompt_ids) + [1] * len(real_ids),
            "prompt_ids": prompt_ids,
            "real_ids": example["real_ids"],
        }
        synthetic = "previous_synthetic" if previous and "previous_synthetic_ids" in example else "synthetic"
        roles = ("real", "synthetic", "proto") if self.include_proto else ("real", "synthetic")
        sources = {"real": "real", "synthetic": synthetic, "proto": "proto"}
        for role in roles[1:]:
            if f"{sources[role]}_ids" in example:
                item[f"{role}_ids"] = example[f"{sources[role]}_ids"]
        for role in roles:
            key = f"ref_{sources[role]}_logps"
            if key in example:
                item[f"ref_{role}_logps"] = example[key]
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    @property
    def column_names(self) -> list[str]:
        """The fields of an item, as `datasets.Dataset.column_names` (they grow as self-play fills responses in)."""
        return list(self[0]) if len(self) else []

    @property
    def num_rows(self) -> int:
        return len(self)

    def to_dataset(self) -> Dataset:
        """The items as a `datasets.Dataset` (a snapshot: self-play's later responses are not in it)."""
        return Dataset.from_list(list(self))

    @property
    def row_indices(self) -> list[int]:
        """Index of each example's row in the source dataset."""
        return [example.get("row_index", i) for i, example in enumerate(self.examples)]

    @property
    def dropped_row_indices(self) -> list[int]:
        """Source rows dropped because their prompt left no room for a response."""
        kept = set(self.row_indices)
        return [i for i in range(self.num_source_rows) if i not in kept]

    def has(self, role: str) -> bool:
        return all(f"{role}_ids" in example for example in self.examples)

    def column(self, key: str) -> list[Any]:
        return [example.get(key) for example in self.examples]

    def set_column(self, key: str, values: Sequence[Any]) -> None:
        if len(values) != len(self.examples):
            raise ValueError(f"Got {len(values)} values for {len(self.examples)} examples.")
        for example, value in zip(self.examples, values, strict=True):
            example[key] = value
