"""Cases: the files of `output_dir/self_play/` damaged, forged or swapped (iteration files, logs, records), and the
chunks a killed generation pass left behind."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tspin_trl.checked_io import json_digest, sha256_hex

from .harness import (
    CHECKPOINT_EVERY_STEP,
    DEFECT,
    SURVIVED,
    TEMPLATES,
    WARNED,
    Ctx,
    Verdict,
    add,
    baseline,
    case,
    classify_error,
    completed,
    error_text,
    expect_error,
    judge_run,
    make_trainer,
    read_rows,
    run_and_judge,
    sorting_rows,
)
from .workers import start_worker


FILES = "files in self_play/"
CHUNKS = "generation chunks"


def _forge(data: Path, rows: list, meta_update: dict | None = None) -> None:
    """Rewrite an iteration file with `rows` and a sidecar whose checksum and count match (a forged file)."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    data.write_text(text)
    meta_path = data.with_name(data.name.replace(".jsonl", ".meta.json"))
    meta = json.loads(meta_path.read_text())
    meta.update(sha256=sha256_hex(text.encode()), count=len(rows), **(meta_update or {}))
    meta_path.write_text(json.dumps(meta))


def corrupt_then_resume(corrupt: Callable[[Ctx], None], *keywords: str) -> Callable[[Ctx], Verdict]:
    """Interrupted inside iteration 1, the iteration-1 file damaged, resumed: must stop and name the way out."""

    def run(ctx):
        ctx.use("interrupted")
        corrupt(ctx)
        return expect_error(
            lambda: make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP).train(resume_from_checkpoint=True), *keywords
        )

    return run


def _forge_rows(change: Callable[[dict], Any]) -> Callable[[Ctx], None]:
    return lambda c: _forge(c.iteration_file(), [change(r) for r in read_rows(c.iteration_file())])


ITER_CORRUPTIONS = [
    (
        "truncated",
        "iteration-1 responses truncated by 20 bytes",
        lambda c: c.iteration_file().write_text(c.iteration_file().read_text()[:-20]),
        True,
        "4",
    ),
    ("deleted", "iteration-1 responses deleted", lambda c: c.iteration_file().unlink(), False, "6"),
    (
        "meta_list",
        "iteration-1 sidecar replaced by a JSON list",
        lambda c: c.iteration_meta().write_text("[1, 2]"),
        False,
        "6",
    ),
    (
        "meta_garbage",
        "iteration-1 sidecar is binary garbage",
        lambda c: c.iteration_meta().write_bytes(os.urandom(64)),
        False,
        "6",
    ),
    (
        "oov_ids",
        "iteration-1 synthetic ids out of the vocabulary, checksum recomputed",
        _forge_rows(lambda r: r | {"synthetic_ids": [10**6]}),
        True,
        "6",
    ),
    (
        "float_ids",
        "iteration-1 synthetic ids are floats, checksum recomputed",
        _forge_rows(lambda r: r | {"synthetic_ids": [1.5, 2.0]}),
        False,
        "6",
    ),
    (
        "negative_ids",
        "iteration-1 proto ids negative, checksum recomputed",
        _forge_rows(lambda r: r | {"proto_ids": [-1]}),
        False,
        "6",
    ),
    (
        "empty_ids",
        "iteration-1 synthetic ids are empty lists (generation never makes one), checksum recomputed",
        _forge_rows(lambda r: r | {"synthetic_ids": []}),
        False,
        "20",
    ),
    (
        "rows_not_objects",
        "iteration-1 rows replaced by lists, checksum recomputed",
        _forge_rows(lambda r: [1, 2]),
        False,
        "6",
    ),
    (
        "fewer_rows",
        "iteration-1 file with 7 of 8 rows, checksum and count recomputed",
        lambda c: _forge(c.iteration_file(), read_rows(c.iteration_file())[:7]),
        False,
        "6",
    ),
    (
        "foreign_identity",
        "iteration-1 file stamped with another run's identity, checksum right",
        lambda c: _forge(c.iteration_file(), read_rows(c.iteration_file()), {"identity": "0" * 64}),
        False,
        "6",
    ),
    (
        "other_iteration",
        "iteration-0 file copied over iteration 1 (its checksum is right)",
        lambda c: [
            shutil.copy(c.iteration_file(0), c.iteration_file(1)),
            shutil.copy(c.iteration_meta(0), c.iteration_meta(1)),
        ],
        False,
        "6",
    ),
]
for _label, _action, _corrupt, _quick, _finding in ITER_CORRUPTIONS:
    add(
        f"iteration_file_{_label}",
        FILES,
        f"interrupted at step 6 (inside iteration 1), {_action}, resume_from_checkpoint=True",
        corrupt_then_resume(_corrupt, "iteration 1", "resume from the checkpoint"),
        quick=_quick,
        finding=_finding,
    )


@case(FILES, "iteration-1 file truncated, resumed from checkpoint-4 (the iteration's start)", finding="4")
def iteration_file_truncated_resume_at_start(ctx):
    ctx.use("interrupted")
    data = ctx.iteration_file()
    data.write_text(data.read_text()[:-20])
    return run_and_judge(ctx, baseline(), resume=str(ctx.checkpoint(4)), **CHECKPOINT_EVERY_STEP)


@case(FILES, "interrupted at step 3 (iteration 0), iteration-0 file truncated, resumed: iteration 0 has begun")
def iteration0_file_truncated_mid_iteration(ctx):
    ctx.use("interrupted3")
    data = ctx.iteration_file(0)
    data.write_text(data.read_text()[:-20])
    return expect_error(
        lambda: make_trainer(ctx.out, **CHECKPOINT_EVERY_STEP).train(resume_from_checkpoint=True),
        "iteration 0",
        "resume from the checkpoint",
    )


TEMPLATES["completed_ref"] = lambda folder: completed(folder, objective="tspin_ref", num_iterations=1)


@case(FILES, "finished run (tspin_ref), iteration-0 ref log-probs set to NaN with checksum right, rerun identical")
def iteration_file_nan_logps(ctx):
    ctx.use("completed_ref")
    data = ctx.iteration_file(0)
    _forge(data, [r | {"ref_real_logps": float("nan")} for r in read_rows(data)])
    return run_and_judge(
        ctx, baseline(objective="tspin_ref", num_iterations=1), objective="tspin_ref", num_iterations=1
    )


def _try_json(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


@case(
    FILES,
    "interrupted at step 6, logs.jsonl ends with a truncated line, resumed (every step logged once)",
    finding="7",
)
def logs_truncated_then_resume(ctx):
    ctx.use("interrupted")
    logs = Path(ctx.folder.logs_path)
    with open(logs, "a") as f:
        f.write('{"loss": 0.5, "st')
    verdict = run_and_judge(ctx, baseline(), resume=True, **CHECKPOINT_EVERY_STEP)
    steps = [r.get("step") for r in map(_try_json, logs.read_text().splitlines()) if r and "loss" in r]
    if verdict.outcome != DEFECT and len(steps) != len(set(steps)):
        return Verdict(DEFECT, f"steps logged twice after the resume: {steps}")
    verdict.detail += f"; loss lines for steps {steps}"
    return verdict


@case(FILES, "iterations.jsonl and scores.jsonl replaced by binary garbage, resumed")
def records_garbage_then_resume(ctx):
    ctx.use("interrupted")
    Path(ctx.folder.iterations_path).write_bytes(os.urandom(300))
    Path(ctx.folder.scores_path).write_bytes(os.urandom(300))
    return run_and_judge(ctx, baseline(), resume=True, **CHECKPOINT_EVERY_STEP)


@case(FILES, "tspin-plot on a finished run whose logs.jsonl ends with a truncated line", finding="7")
def plot_truncated_logs(ctx):
    ctx.use("completed")
    with open(ctx.folder.logs_path, "a") as f:
        f.write('{"loss": 0.5, "st')
    from tspin_trl.plot import plot_run

    try:
        written = plot_run(str(ctx.out))
    except Exception as error:  # noqa: BLE001
        return Verdict(DEFECT, f"crashed: {error_text(error)}")
    if not written:
        return Verdict(DEFECT, "no figure written")
    text = ctx.warnings_text()
    return Verdict(WARNED if text else SURVIVED, text.splitlines()[0] if text else f"{len(written)} files written")


# ---- chunk stores (a generation pass killed midway) -------------------------------------------------------------------

# The file names of `tspin_trl.generation.ChunkStore` inside a chunk folder.
MANIFEST, FIRST_CHUNK = "manifest.json", "chunk_00000.jsonl"


def _killed_mid_iteration1(folder: Path) -> None:
    """A worker SIGKILLed after writing the first chunk of iteration 1's generation (step 4, checkpoint-4 saved)."""
    ctx = Ctx(folder, [])
    run = start_worker(ctx, fault={"kind": "kill_after_chunk_write", "n": 3}, overrides=CHECKPOINT_EVERY_STEP)
    result = run.wait()
    if not result.get("killed"):
        raise RuntimeError(f"the worker was not killed: {result}")


TEMPLATES["killed_iter1"] = _killed_mid_iteration1


def _rewrite_manifest(directory: Path) -> None:
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["chunks"] = {
        k: sha256_hex((directory / f"chunk_{int(k):05d}.jsonl").read_bytes()) for k in manifest["chunks"]
    }
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    (directory / MANIFEST).write_text(json.dumps({**body, "sha256": json_digest(body)}))


def _rewrite_first_chunk(directory: Path, response: Callable[[list], list]) -> None:
    lines = (directory / FIRST_CHUNK).read_text().splitlines()
    (directory / FIRST_CHUNK).write_text(
        "".join(json.dumps([json.loads(line)[0], response(json.loads(line)[1])]) + "\n" for line in lines)
    )


CHUNK_CORRUPTIONS = [
    ("intact", "left as the killed run left them", lambda d: None, True),
    (
        "manifest_garbage",
        "manifest.json replaced by '{not json'",
        lambda d: (d / MANIFEST).write_text("{not json"),
        False,
    ),
    ("manifest_list", "manifest.json replaced by a JSON list", lambda d: (d / MANIFEST).write_text("[1]"), False),
    (
        "chunk_forged_length",
        "chunk 0 forged: right prompts, empty responses, manifest not updated",
        lambda d: _rewrite_first_chunk(d, lambda ids: []),
        True,
    ),
    (
        "chunk_empty_manifest_fixed",
        "chunk 0 responses emptied, manifest checksums recomputed",
        lambda d: [_rewrite_first_chunk(d, lambda ids: []), _rewrite_manifest(d)],
        False,
    ),
    (
        "chunk_oov_manifest_fixed",
        "chunk 0 ids out of vocabulary, manifest checksums recomputed",
        lambda d: [_rewrite_first_chunk(d, lambda ids: [10**6]), _rewrite_manifest(d)],
        False,
    ),
    (
        "chunk_garbage",
        "chunk 0 replaced by binary garbage",
        lambda d: (d / FIRST_CHUNK).write_bytes(os.urandom(100)),
        False,
    ),
    (
        "chunk_wrong_prompts",
        "chunk 0 holds other prompt indices, manifest recomputed",
        lambda d: [
            (d / FIRST_CHUNK).write_text("".join(json.dumps([99 + i, [10]]) + "\n" for i in range(4))),
            _rewrite_manifest(d),
        ],
        False,
    ),
    (
        "manifest_other_key",
        "manifest.json of another pass (other key, checksum right)",
        lambda d: (d / MANIFEST).write_text(
            json.dumps({"key": "x", "chunks": {}, "sha256": json_digest({"key": "x", "chunks": {}})})
        ),
        False,
    ),
]


def chunk_case(corrupt: Callable[[Path], None]) -> Callable[[Ctx], Verdict]:
    def run(ctx):
        ctx.use("killed_iter1")
        directory = Path(ctx.folder.generation_chunks_dir(1, "train"))
        if not (directory / FIRST_CHUNK).exists():
            return Verdict(DEFECT, f"the killed run left no chunk in {directory}")
        corrupt(directory)
        return run_and_judge(ctx, baseline(), resume=True, **CHECKPOINT_EVERY_STEP)

    return run


for _label, _action, _corrupt, _quick in CHUNK_CORRUPTIONS:
    add(
        f"chunks_{_label}",
        CHUNKS,
        f"SIGKILL after iteration 1's first generation chunk; chunks {_action}; resume_from_checkpoint=True",
        chunk_case(_corrupt),
        quick=_quick,
        finding="20" if "empty" in _label else "6",
        timeout=150,
    )


# ---- issue 32: a forged prompt selection, credentials in the output folder ---------------------------------------------

SELECTING = {"prompt_selection_threshold": 10.0}


def _forged_selection(ctx):
    from tspin_trl.checked_io import read_checked_jsonl, write_checked_jsonl

    from .harness import StopAfter

    make_trainer(ctx.out, callbacks=[StopAfter(6)], **(CHECKPOINT_EVERY_STEP | SELECTING)).train()
    data_path, meta_path = ctx.folder.iteration_files(1, "train")
    rows, meta = read_checked_jsonl(data_path, meta_path)
    kept = [row["selected"] for row in rows]
    flip = kept.index(True) if sum(kept) > 1 else kept.index(False)
    rows[flip]["selected"] = not rows[flip]["selected"]
    write_checked_jsonl(data_path, meta_path, rows, meta)  # checksum, identity and count all right
    try:
        trainer = make_trainer(ctx.out, **(CHECKPOINT_EVERY_STEP | SELECTING))
        trainer.train(resume_from_checkpoint=True)
    except Exception as error:  # noqa: BLE001
        return classify_error(error, ("iteration 1",))
    verdict = judge_run(ctx, trainer, baseline(**SELECTING), note=f"row {flip}'s `selected` flipped")
    if verdict.outcome != DEFECT:
        return Verdict(DEFECT, f"a forged prompt selection (row {flip}) was trained on", verdict.detail)
    return verdict


add(
    "iteration_file_selection_forged",
    FILES,
    "interrupted at step 6 with prompt selection; iteration 1's file forged: a row's `selected` flag flipped against "
    "its stored margin (checksum recomputed); resume=True",
    _forged_selection,
    finding="32",
    timeout=150,
)


def _no_credentials(ctx):
    from datasets import Dataset

    from tspin_trl.demo import build_char_tokenizer, build_tiny_model

    tokens = ("hf_CampaignHubToken0123456789", "hf_CampaignModelToken0123456789")
    tokenizer = build_char_tokenizer()
    build_tiny_model(tokenizer).save_pretrained(ctx.tmp / "model")
    trainer = make_trainer(
        ctx.out,
        model=str(ctx.tmp / "model"),
        tokenizer=tokenizer,
        hub_token=tokens[0],
        model_init_kwargs={"token": tokens[1]},
        eval_dataset=Dataset.from_list(sorting_rows(2, offset=8)),
        eval_strategy="steps",
        eval_steps=4,
        **CHECKPOINT_EVERY_STEP,
    )
    trainer.train()
    trainer.save_model()
    written = [path for path in ctx.out.rglob("*") if path.is_file()]
    found = [
        f"{path.relative_to(ctx.out)}" for path in written for token in tokens if token.encode() in path.read_bytes()
    ]
    if found:
        return Verdict(DEFECT, f"a credential (hub_token or model_init_kwargs['token']) written to {found[:5]}")
    return Verdict(SURVIVED, f"no credential in the {len(written)} files of output_dir (training_args.bin included)")


add(
    "no_credential_in_output",
    FILES,
    "hub_token and model_init_kwargs={'token': ...} planted; every byte of output_dir searched after a run with "
    "checkpoints and evaluation",
    _no_credentials,
    quick=True,
    finding="32",
    timeout=150,
)
