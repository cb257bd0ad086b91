"""A fixed-seed fingerprint of what self-play writes and trains, to check that a restructuring changes no behaviour.

Runs a few tiny self-play runs in-process on the CPU (each with a fresh proto cache) and prints, or writes with
`--out`, one JSON object: per run, the sha256 of every file under `output_dir/self_play/iteration_*/` and
`output_dir/self_play/evaluate/` (the responses each iteration trained on, and those of a dataset passed to
`evaluate()`), of the per-iteration records and scores, and of the final parameters (bitwise, in `named_parameters`
order). Two versions of the code behave the same on these runs when their fingerprints are equal:

    python tests/support/fingerprint.py --out before.json      # on the old code
    python tests/support/fingerprint.py --compare before.json  # on the new code: exit 1 and the differences if any

Run-varying fields are left out of the digests, and only those: the timings of every generation pass in an
iteration file's sidecar (`generation.<pass>.seconds`, `.tokens_per_second`), and, in the per-iteration records and
logs, every field whose name ends in `seconds`, `runtime` or `per_second`.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset


VARYING_GENERATION_FIELDS = ("seconds", "tokens_per_second")
VARYING_SUFFIXES = ("seconds", "runtime", "per_second")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _without_varying(record: Any) -> Any:
    if isinstance(record, dict):
        return {
            key: _without_varying(value)
            for key, value in record.items()
            if not (isinstance(key, str) and key.endswith(VARYING_SUFFIXES))
        }
    if isinstance(record, list):
        return [_without_varying(value) for value in record]
    return record


def _meta_digest(path: Path) -> str:
    """A sidecar's digest without the timings of its generation passes."""
    meta = json.loads(path.read_text())
    for stats in (meta.get("generation") or {}).values():
        for key in VARYING_GENERATION_FIELDS:
            stats.pop(key, None)
    return _sha(_canonical(meta))


def _jsonl_digest(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return _sha(_canonical(_without_varying(rows)))


def parameters_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def folder_digests(output_dir: Path) -> dict[str, str]:
    root = output_dir / "self_play"
    out = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or not relative.startswith(("iteration_", "evaluate/")):
            continue
        out[relative] = _meta_digest(path) if path.name.endswith(".meta.json") else _sha(path.read_bytes())
    for name in ("iterations.jsonl", "scores.jsonl"):
        if (root / name).is_file():
            out[name] = _jsonl_digest(root / name)
    return out


def sorting_score(texts: list[str], rows: list[dict]) -> float:
    from tspin_trl.demo import check_sorting

    return sum(check_sorting(row["prompt"], text) for text, row in zip(texts, rows, strict=True)) / len(rows)


def eval_rows() -> list[dict]:
    from tests.support import sorting_rows

    return sorting_rows(4, offset=100)


RUNS: dict[str, dict[str, Any]] = {
    "tspin_3_iterations": {"num_iterations": 3},
    "spin_mix_previous": {"objective": "spin", "mix_previous_iteration": True, "num_iterations": 3},
    "tspin_ref": {"objective": "tspin_ref", "num_iterations": 2},
    # with every per-iteration schedule; on the tiny model prompt selection skips some prompts (as in test_schedules)
    "prompt_selection": {
        "num_iterations": 3,
        "seed": 3,
        "learning_rate_schedule": [1.0, 0.5, 0.2],
        "alpha_schedule": [1.0, 1.2, 1.0],
        "beta_schedule": [0.0, 0.1, 0.2],
        "prompt_selection_threshold": 15.0,
        "prompt_selection_min_share": 0.5,
    },
    "eval_and_scorer": {"num_iterations": 2, "eval": True},
}


def run_one(name: str, workdir: Path) -> dict[str, Any]:
    from tests.support import self_play_trainer
    from tspin_trl.demo import build_char_tokenizer, build_tiny_model

    settings = dict(RUNS[name])
    with_eval = settings.pop("eval", False)
    os.environ["TSPIN_TRL_CACHE"] = str(workdir / f"{name}_proto_cache")  # a fresh proto cache per run
    output_dir = workdir / name
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_model(tokenizer)
    extra: dict[str, Any] = {}
    if with_eval:
        extra = {
            "eval_dataset": Dataset.from_list(eval_rows()),
            "scorer": sorting_score,
            "scorer_dataset": Dataset.from_list(eval_rows()),
        }
    trainer = self_play_trainer(output_dir, tokenizer, model=model, **extra, **settings)
    result: dict[str, Any] = {}
    if with_eval:  # a raw dataset passed to `evaluate()` before training and after it
        result["evaluate_before"] = trainer.evaluate(Dataset.from_list(eval_rows()))["eval_loss"]
    trainer.train()
    if with_eval:
        result["evaluate_after"] = trainer.evaluate(Dataset.from_list(eval_rows()))["eval_loss"]
    result["files"] = folder_digests(output_dir)
    result["parameters"] = parameters_digest(trainer.model)
    if name == "prompt_selection":
        kept = {}
        for iteration in (1, 2):
            path = output_dir / f"self_play/iteration_{iteration}/train.jsonl"
            kept[str(iteration)] = sum(json.loads(line)["selected"] for line in path.read_text().splitlines())
        assert any(0 < n < 8 for n in kept.values()), f"prompt selection skipped no prompt: {kept} of 8 kept"
        result["kept"] = kept
    result["evaluate"] = {k: float(v).hex() for k, v in result.items() if k.startswith("evaluate_")}
    for key in [k for k in result if k.startswith("evaluate_")]:
        del result[key]
    return result


def fingerprint(names: list[str]) -> dict[str, Any]:
    torch.set_num_threads(1)  # one thread: the same reduction order on every machine load
    with tempfile.TemporaryDirectory(prefix="tspin_fingerprint_") as tmp:
        return {name: run_one(name, Path(tmp)) for name in names}


def differences(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}/")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the fingerprint here (JSON)")
    parser.add_argument("--compare", help="a fingerprint to compare with; exit 1 when they differ")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    result = fingerprint([name for name in args.runs.split(",") if name])
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        before = {name: before[name] for name in result if name in before}
        found = differences(before, result)
        print("\n".join(found) if found else f"identical: {len(result)} runs", file=sys.stderr)
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
