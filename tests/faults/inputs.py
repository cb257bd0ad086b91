"""Cases: training datasets (formats, columns, values, the dataset's own responses) and evaluation datasets."""

from __future__ import annotations

from collections.abc import Callable

from datasets import Dataset, IterableDataset

from tspin_trl import TSPINTrainer
from tspin_trl.demo import build_char_tokenizer, build_tiny_model

from .harness import (
    DEFECT,
    WARNED,
    Verdict,
    baseline,
    case,
    config,
    expect_error,
    make_trainer,
    raw_trainer,
    run_and_judge,
    sorting_rows,
)
from .harness import add as _add


DATA = "datasets"
EVAL = "eval datasets"


def data_case(
    name, action, rows_factory, *keywords, quick=False, finding=None, expect_ok=False, raw=False, **overrides
):
    """`rows_factory()` as the training data: trained on (`expect_ok`), or refused with `keywords` in the message.
    `raw`: given to the trainer exactly as it is (a list, `None`, a dict), not wrapped in a `Dataset`."""

    def run(ctx):
        rows = rows_factory()
        if expect_ok:
            return run_and_judge(ctx, None, rows=rows, **overrides)
        if raw:
            return expect_error(lambda: raw_trainer(ctx.out, rows, **overrides).train(), *keywords)
        return expect_error(lambda: make_trainer(ctx.out, rows=rows, **overrides).train(), *keywords)

    _add(name, DATA, action, run, quick=quick, finding=finding)


def _rows_with(change: Callable[[list[dict]], list[dict]], conversational: bool = True):
    return lambda: Dataset.from_list(change(sorting_rows(8, conversational)))


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


data_case(
    "data_missing_columns",
    "columns 'question'/'answer'",
    lambda: Dataset.from_list([{"question": "q", "answer": "a"}] * 4),
    "columns",
    "prompt",
    quick=True,
)
data_case(
    "data_empty",
    "an empty Dataset with the right columns",
    lambda: Dataset.from_list(sorting_rows(2)).select([]),
    "empty",
)
data_case("data_none_dataset", "train_dataset=None", lambda: None, "train_dataset", raw=True)
data_case(
    "data_python_list",
    "a Python list of rows instead of a Dataset",
    lambda: sorting_rows(8),
    "Dataset.from_list",
    quick=True,
    finding="7",
    raw=True,
)
data_case(
    "data_dict_of_lists",
    "a dict of columns instead of a Dataset",
    lambda: {"prompt": ["a"], "completion": ["b"]},
    "Dataset",
    raw=True,
)
data_case(
    "data_none_completion",
    "one completion is None",
    _rows_with(lambda r: r[:3] + [{"prompt": r[3]["prompt"], "completion": None}] + r[4:]),
    "row 3",
    "completion",
)
data_case(
    "data_mixed_prompts",
    "plain-text and conversational prompts mixed (an IterableDataset)",
    lambda: IterableDataset.from_generator(lambda: iter(sorting_rows(4, False) + sorting_rows(4))),
    "mix",
)
data_case(
    "data_int_completion",
    "completions are integers",
    lambda: Dataset.from_list([{"prompt": "sort: 2 1\n", "completion": 12}] * 4),
    "completion",
    "string",
)
data_case(
    "data_int_prompt",
    "prompts are integers",
    lambda: Dataset.from_list([{"prompt": 5, "completion": "x"}] * 4),
    "prompt",
)
data_case(
    "data_empty_response",
    "empty completions",
    _rows_with(lambda r: [x | {"completion": ""} for x in r], conversational=False),
    "empty",
    quick=True,
)
data_case(
    "data_blank_prompt",
    "whitespace-only prompts",
    _rows_with(lambda r: [x | {"prompt": "   "} for x in r], conversational=False),
    "prompt",
    "empty",
)
data_case(
    "data_huge_prompt",
    "prompts of 5000 characters with max_length=64 (truncation_mode='keep_end': cut from the left)",
    _rows_with(lambda r: [x | {"prompt": "sort: " + "1 " * 2500 + "\n"} for x in r], conversational=False),
    expect_ok=True,
    quick=True,
)
data_case(
    "data_huge_prompt_keep_start",
    "prompts of 5000 characters with max_length=64 and truncation_mode='keep_start' (every row dropped)",
    _rows_with(lambda r: [x | {"prompt": "sort: " + "1 " * 2500 + "\n"} for x in r], conversational=False),
    "No row",
    "max_prompt_length",
    truncation_mode="keep_start",
)
data_case(
    "data_image_column",
    "an 'images' column (vision-language data)",
    _rows_with(lambda r: [x | {"images": [None]} for x in r]),
    "images",
    "not supported",
)
data_case(
    "data_huge_prompt_truncated",
    "prompts of 5000 characters with max_prompt_length=32",
    _rows_with(lambda r: [x | {"prompt": "sort: " + "1 " * 2500 + "\n"} for x in r], conversational=False),
    expect_ok=True,
    max_prompt_length=32,
)
data_case(
    "data_message_no_content",
    "a message without 'content'",
    _rows_with(lambda r: [x | {"prompt": [{"role": "user", "text": "hi"}]} for x in r]),
    "content",
)
data_case(
    "data_multimodal_content",
    "message content is a list (multimodal)",
    _rows_with(lambda r: [x | {"prompt": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]} for x in r]),
    "content",
    "string",
)
data_case(
    "data_completion_two_turns",
    "a completion with two assistant messages",
    _rows_with(lambda r: [x | {"completion": x["completion"] * 2} for x in r]),
    "one assistant message",
)
data_case(
    "data_messages_end_with_user",
    "'messages' rows ending with a user turn",
    lambda: Dataset.from_list(
        [
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            }
        ]
        * 4
    ),
    "last message",
    "assistant",
)
data_case(
    "data_messages_and_prompt_completion",
    "both a 'messages' column and 'prompt'/'completion' columns, holding different conversations",
    _rows_with(
        lambda r: [
            x | {"messages": _user(f"other question {i}") + _assistant("other answer")} for i, x in enumerate(r)
        ]
    ),
    "messages",
    "prompt",
    finding="20",
)
data_case(
    "data_empty_user_turn",
    "a chat prompt whose user turn is empty ('')",
    _rows_with(lambda r: [x | {"prompt": _user("")} for x in r]),
    "prompt",
    "empty",
    finding="20",
)
data_case(
    "data_prompt_only_assistant",
    "a chat prompt holding only an assistant turn (no user turn)",
    _rows_with(lambda r: [x | {"prompt": _assistant("sort: 1 2")} for x in r]),
    "prompt",
    "user",
    finding="20",
)
data_case(
    "data_partial_synthetic",
    "a 'synthetic' column empty in half the rows",
    _rows_with(
        lambda r: [x | {"synthetic": "1 2 3" if i % 2 else None} for i, x in enumerate(r)], conversational=False
    ),
    "synthetic",
    "rows",
)
data_case(
    "data_own_synthetic_empty_strings",
    "a 'synthetic' column of empty strings",
    _rows_with(lambda r: [x | {"synthetic": ""} for x in r], conversational=False),
    "synthetic",
    "empty",
    finding="20",
)
data_case(
    "data_full_synthetic",
    "a complete 'synthetic' column",
    _rows_with(lambda r: [x | {"synthetic": "1 2 3"} for x in r], conversational=False),
    expect_ok=True,
)
data_case("data_one_row", "a dataset of one row", lambda: Dataset.from_list(sorting_rows(1)), expect_ok=True)
data_case(
    "data_extra_columns",
    "extra unrelated columns",
    _rows_with(lambda r: [x | {"id": i, "meta": {"a": 1}} for i, x in enumerate(r)]),
    expect_ok=True,
)
data_case(
    "data_unknown_characters",
    "prompts of characters outside the vocabulary (unk tokens)",
    _rows_with(lambda r: [x | {"prompt": "排序: 3 1 2\n"} for x in r], conversational=False),
    expect_ok=True,
)


@case(DATA, "conversational rows and a tokenizer without a chat template")
def data_tokenizer_without_template(ctx):
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = None
    return expect_error(lambda: make_trainer(ctx.out, tokenizer=tokenizer).train(), "chat template")


@case(DATA, "an IterableDataset of the same rows (results compared with the Dataset run)", quick=True)
def data_iterable(ctx):
    rows = sorting_rows(8)
    iterable = IterableDataset.from_generator(lambda: iter(rows))
    return run_and_judge(ctx, baseline(), rows=iterable)


@case(DATA, "scorer_dataset without a 'prompt' column")
def data_scorer_dataset_no_prompt(ctx):
    def call():
        tokenizer = build_char_tokenizer()
        return TSPINTrainer(
            model=build_tiny_model(tokenizer),
            args=config(ctx.out),
            train_dataset=Dataset.from_list(sorting_rows(4)),
            processing_class=tokenizer,
            scorer=lambda responses, rows: 0.0,
            scorer_dataset=Dataset.from_list([{"question": "x"}]),
        )

    return expect_error(call, "scorer_dataset", "prompt")


# ---- evaluation datasets ------------------------------------------------------------------------------------------------


def eval_case(name, action, eval_factory, *keywords, expect_ok=False, quick=False, finding=None, **overrides):
    def run(ctx):
        eval_dataset = eval_factory()
        if expect_ok:
            return run_and_judge(ctx, None, eval_dataset=eval_dataset, **overrides)
        return expect_error(lambda: make_trainer(ctx.out, eval_dataset=eval_dataset, **overrides), *keywords)

    _add(name, EVAL, action, run, quick=quick, finding=finding)


def _eval():
    return Dataset.from_list(sorting_rows(4))


eval_case(
    "eval_key_traversal",
    "eval_dataset={'../../x': ...}",
    lambda: {"../../x": _eval()},
    "../../x",
    "file names",
    quick=True,
    finding="7",
)
eval_case("eval_key_slash", "eval_dataset={'a/b': ...}", lambda: {"a/b": _eval()}, "a/b")
eval_case("eval_key_empty", "eval_dataset={'': ...}", lambda: {"": _eval()}, "file names")
eval_case("eval_key_hidden", "eval_dataset={'.hidden': ...}", lambda: {".hidden": _eval()}, ".hidden")
eval_case("eval_key_absolute", "eval_dataset={'/etc/x': ...}", lambda: {"/etc/x": _eval()}, "/etc/x")
eval_case("eval_key_int", "eval_dataset={1: ...} (an integer key)", lambda: {1: _eval()}, "1")
eval_case(
    "eval_value_list", "eval_dataset={'a': [rows]} (a list)", lambda: {"a": sorting_rows(4)}, "Dataset.from_list"
)
eval_case("eval_value_empty", "eval_dataset={'a': empty Dataset}", lambda: {"a": _eval().select([])}, "empty")
eval_case(
    "eval_value_bad_columns",
    "eval_dataset={'a': Dataset with columns q/a}",
    lambda: {"a": Dataset.from_list([{"q": "x", "a": "y"}])},
    "columns",
)
eval_case(
    "eval_two_splits",
    "eval_dataset={'easy': ..., 'hard': ...} with evaluation every 4 steps",
    lambda: {"easy": _eval(), "hard": _eval()},
    expect_ok=True,
    eval_strategy="steps",
    eval_steps=4,
)
eval_case(
    "eval_empty_dict_with_strategy",
    "eval_dataset={} with eval_strategy='steps'",
    lambda: {},
    "eval_dataset",
    eval_strategy="steps",
    eval_steps=4,
)


# ---- issue 32: data files given to the command line, responses longer than max_length ---------------------------------


def _data_file(ctx, name: str) -> str:
    """A damaged data file in the case's folder: empty, a .jsonl.gz cut in the middle, or not text."""
    import gzip
    import json

    rows = "".join(json.dumps({"prompt": f"p{i}", "completion": "c" * 40}) + "\n" for i in range(500)).encode()
    compressed = gzip.compress(rows)
    content = {"empty.jsonl": b"", "cut.jsonl.gz": compressed[: len(compressed) // 2]}.get(name, bytes(range(256)) * 4)
    path = ctx.tmp / name
    path.write_bytes(content)
    return str(path)


for _name, _flag, _what, _keyword in [
    ("empty.jsonl", "--dataset_name", "a 0-byte .jsonl", "empty"),
    ("empty.jsonl", "--eval_dataset_name", "a 0-byte .jsonl", "empty"),
    ("cut.jsonl.gz", "--dataset_name", "a .jsonl.gz cut in the middle", "cut short"),
    ("binary.jsonl", "--dataset_name", "a .jsonl that is not text", "UTF-8"),
]:

    def _load(ctx, name=_name, flag=_flag, keyword=_keyword):
        from tspin_trl.scripts.sources import load_named_dataset

        path = _data_file(ctx, name)
        return expect_error(lambda: load_named_dataset(path, flag=flag), path, flag, keyword)

    _add(
        f"data_file_{_name.split('.')[0]}_{_flag.strip('-')}",
        DATA,
        f"{_what} given to {_flag} (the command line's loader)",
        _load,
        quick=_name == "cut.jsonl.gz",
        finding="32",
    )


@case(DATA, "real responses longer than max_length leaves after their prompt (cut by the collator)", finding="32")
def data_response_longer_than_max_length(ctx):
    rows = sorting_rows(8)
    for row in rows[:2]:
        row["completion"] = [{"role": "assistant", "content": "0 1 2 3 4 5 6 7 8 9 " * 6}]
    verdict = run_and_judge(ctx, None, rows=Dataset.from_list(rows))
    said = [line for line in ctx.warnings_text().splitlines() if "longer than max_length" in line]
    if verdict.outcome == DEFECT:
        return verdict
    return Verdict(WARNED, said[0], verdict.detail) if said else Verdict(DEFECT, "responses cut without a word")


def _evaluate_without_sets(name):
    def run(ctx):
        trainer = make_trainer(ctx.out)
        return expect_error(lambda: trainer.evaluate(eval_dataset=name), "eval_dataset", *([name] if name else []))

    return run


_add(
    "evaluate_without_eval_set",
    EVAL,
    "evaluate() on a trainer given no evaluation set",
    _evaluate_without_sets(None),
    finding="32",
)
_add(
    "evaluate_unknown_name_without_eval_set",
    EVAL,
    "evaluate(eval_dataset='nosuch') on a trainer given no evaluation set",
    _evaluate_without_sets("nosuch"),
    finding="32",
)
