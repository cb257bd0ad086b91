"""Cases: the proto cache (entries damaged or forged, another model's entry, its key, its folder)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from tspin_trl.demo import build_char_tokenizer, build_tiny_model

from .harness import (
    DEFECT,
    SURVIVED,
    TEMPLATES,
    Ctx,
    Verdict,
    add,
    baseline,
    case,
    error_text,
    expect_error,
    make_trainer,
    run_and_judge,
    template,
)


CACHE = "proto cache"


def _entry(ctx: Ctx) -> tuple[Path, Path]:
    data = next(ctx.cache.glob("*.jsonl"))
    return data, data.with_suffix(".json")


def _forge_entry(ctx: Ctx, change: Callable[[list], list]) -> None:
    data, meta = _entry(ctx)
    rows = change([json.loads(line) for line in data.read_text().splitlines()])
    text = "".join(json.dumps(row) + "\n" for row in rows)
    data.write_text(text)
    record = json.loads(meta.read_text())
    from tspin_trl.checked_io import sha256_hex

    record.update(sha256=sha256_hex(text.encode()), count=len(rows))
    meta.write_text(json.dumps(record))


CACHE_CORRUPTIONS = [
    (
        "checksum_wrong",
        "one byte of the data changed, sidecar untouched",
        lambda c: _entry(c)[0].write_text(_entry(c)[0].read_text().replace("]", " ]", 1)),
        False,
    ),
    (
        "truncated",
        "data truncated by 10 bytes",
        lambda c: _entry(c)[0].write_text(_entry(c)[0].read_text()[:-10]),
        False,
    ),
    ("meta_list", "sidecar replaced by a JSON list", lambda c: _entry(c)[1].write_text("[1, 2]"), True),
    ("meta_garbage", "sidecar replaced by binary garbage", lambda c: _entry(c)[1].write_bytes(os.urandom(50)), False),
    ("meta_missing", "sidecar deleted", lambda c: _entry(c)[1].unlink(), False),
    (
        "oov_ids",
        "ids 10**6 (out of vocabulary), checksum recomputed",
        lambda c: _forge_entry(c, lambda r: [[10**6]] + r[1:]),
        True,
    ),
    ("negative_ids", "ids -1, checksum recomputed", lambda c: _forge_entry(c, lambda r: [[-1]] + r[1:]), False),
    ("float_ids", "ids 1.5, checksum recomputed", lambda c: _forge_entry(c, lambda r: [[1.5]] + r[1:]), False),
    (
        "empty_response",
        "one response is an empty list (generation never makes one), checksum recomputed",
        lambda c: _forge_entry(c, lambda r: [[]] + r[1:]),
        False,
    ),
    (
        "string_ids",
        "a response is the string 'abc', checksum recomputed",
        lambda c: _forge_entry(c, lambda r: ["abc"] + r[1:]),
        False,
    ),
    (
        "nested_ids",
        "a response is [[1, 2]], checksum recomputed",
        lambda c: _forge_entry(c, lambda r: [[[1, 2]]] + r[1:]),
        False,
    ),
    (
        "bool_ids",
        "a response is [true, false], checksum recomputed",
        lambda c: _forge_entry(c, lambda r: [[True, False]] + r[1:]),
        False,
    ),
    (
        "fewer_rows",
        "7 of 8 responses, checksum and count recomputed",
        lambda c: _forge_entry(c, lambda r: r[:7]),
        False,
    ),
    ("empty_data", "data file emptied, checksum and count recomputed", lambda c: _forge_entry(c, lambda r: []), False),
]


def _copy_cached(ctx: Ctx) -> None:
    shutil.copytree(template("cached", TEMPLATES["cached"]) / "cache", ctx.cache)


def cache_case(corrupt: Callable[[Ctx], None]) -> Callable[[Ctx], Verdict]:
    def run(ctx):
        _copy_cached(ctx)
        corrupt(ctx)
        return run_and_judge(ctx, baseline(num_iterations=1), num_iterations=1)

    return run


for _label, _action, _corrupt, _quick in CACHE_CORRUPTIONS:
    add(
        f"cache_{_label}",
        CACHE,
        f"proto cache entry: {_action}; a new run with the same model and data",
        cache_case(_corrupt),
        quick=_quick,
        finding="20" if _label == "empty_response" else "6",
    )


@case(CACHE, "proto cache entry of another model renamed to this run's key (checksum and count right)", finding="6")
def cache_entry_of_another_key(ctx):
    cached = template("cached", TEMPLATES["cached"]) / "cache"
    mine = next(cached.glob("*.jsonl"))  # the entry this run would use
    # another model's entry, for the same prompts and settings
    tokenizer = build_char_tokenizer()
    os.environ["TSPIN_TRL_CACHE"] = str(ctx.tmp / "theirs")
    make_trainer(
        ctx.tmp / "other", model=build_tiny_model(tokenizer, seed=5), tokenizer=tokenizer, num_iterations=1
    ).train()
    os.environ["TSPIN_TRL_CACHE"] = str(ctx.cache)
    theirs = next((ctx.tmp / "theirs").glob("*.jsonl"))
    ctx.cache.mkdir()
    shutil.copy(theirs, ctx.cache / mine.name)
    shutil.copy(theirs.with_suffix(".json"), ctx.cache / mine.with_suffix(".json").name)
    return run_and_judge(ctx, baseline(num_iterations=1), num_iterations=1)


@case(CACHE, "a model differing from the cached one in one weight in the middle of a tensor", quick=True, finding="7")
def cache_fingerprint_middle_weight(ctx):
    _copy_cached(ctx)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer)
    with torch.no_grad():
        weight = model.model.layers[0].mlp.up_proj.weight
        weight.view(-1)[weight.numel() // 2] += 1e-3
    try:
        trainer = make_trainer(ctx.out, model=model, tokenizer=tokenizer, num_iterations=1)
        trainer.train()
    except Exception as error:  # noqa: BLE001
        return Verdict(DEFECT, f"crashed: {error_text(error)}")
    if "proto/train" not in trainer.self_play.generation_stats:
        return Verdict(DEFECT, "silent wrong result: the other model's cached proto responses were used")
    return Verdict(
        SURVIVED,
        "cache miss: proto responses sampled from this model",
        "generation passes: " + ", ".join(sorted(trainer.self_play.generation_stats)),
    )


@case(CACHE, "use_proto_cache=False (result vs the cached run)")
def cache_off(ctx):
    return run_and_judge(ctx, baseline(), use_proto_cache=False)


@case(CACHE, "proto_cache_dir points at a regular file")
def cache_dir_is_file(ctx):
    ctx.tmp.joinpath("afile").write_text("x")
    target = str(ctx.tmp / "afile")
    return expect_error(lambda: make_trainer(ctx.out, proto_cache_dir=target).train(), target)


@case(CACHE, "a second run with generation_batch_size=8 after one with 4 filled the cache (vs an empty cache)")
def cache_batch_size_dependence(ctx):
    shutil.copytree(template("completed", TEMPLATES["completed"]) / "cache", ctx.cache)
    return run_and_judge(
        ctx,
        baseline(generation_batch_size=8),
        generation_batch_size=8,
        note="the proto responses a run trains on must not depend on what is cached",
    )
