"""Content-addressed, checksummed on-disk store of proto-synthetic responses.

An entry is `<key>.jsonl` (one JSON list of token ids per line, in prompt order) and `<key>.json` (its SHA-256, the
number of responses, and the fields the key was made from). The key hashes everything that decides the responses:
the model's identity and a fingerprint of its weights, the tokenizer and its chat template, the prompt token ids and
every sampling setting. A file whose checksum or length does not match is reported and ignored, never used.
"""

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase


logger = logging.getLogger(__name__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: str, content: str) -> None:
    """Write a file under a temporary name and rename it: a file that exists is complete."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(content)
    os.replace(path + ".tmp", path)


def write_checked_jsonl(data_path: str, meta_path: str, rows: Sequence[Any], meta: dict[str, Any]) -> None:
    """Write `rows` as JSONL, then a JSON sidecar with `meta`, their SHA-256 and count (written last: it marks the
    pair complete)."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(data_path, text)
    atomic_write(meta_path, json.dumps({**meta, "sha256": _sha256(text.encode()), "count": len(rows)}, indent=2))


def read_checked_jsonl(data_path: str, meta_path: str) -> tuple[list[Any], dict[str, Any]] | None:
    """The rows and sidecar written by [`write_checked_jsonl`]; `None` when absent or, with a warning, when the
    checksum or count does not match (a truncated or corrupted file is never used)."""
    if not (os.path.isfile(data_path) and os.path.isfile(meta_path)):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        with open(data_path, "rb") as f:
            raw = f.read()
        if _sha256(raw) != meta["sha256"]:
            raise ValueError("checksum mismatch")
        rows = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        if len(rows) != meta["count"]:
            raise ValueError(f"{len(rows)} rows, {meta['count']} expected")
    except (ValueError, KeyError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        logger.warning("Ignoring %s (%s).", data_path, error)
        return None
    return rows, meta


def model_fingerprint(model: torch.nn.Module, sample: int = 256) -> dict[str, Any]:
    """Identity of a model: name/path, revision, and a hash of every parameter's shape and first/last values.

    Sampling the ends of each tensor keeps this fast for large models while telling apart checkpoints and random
    initialisations. Parameters already partitioned by DeepSpeed ZeRO-3 contribute their name and full shape only.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        shape = tuple(getattr(param, "ds_shape", param.shape))
        digest.update(f"{name}:{shape}".encode())
        if getattr(param, "ds_numel", None) is None and param.numel() > 0:
            flat = param.detach().reshape(-1)
            ends = torch.cat([flat[:sample], flat[-sample:]]).float().cpu()
            digest.update(ends.numpy().tobytes())
    config = getattr(model, "config", None)
    return {
        "name_or_path": getattr(config, "_name_or_path", None),
        "revision": getattr(config, "_commit_hash", None),
        "weights": digest.hexdigest(),
    }


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the vocabulary, special tokens and chat template."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": tokenizer.all_special_tokens,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
    }
    return _sha256(json.dumps(payload, sort_keys=True, default=str).encode())


def proto_cache_key(
    model_identity: dict[str, Any],
    tokenizer_identity: str,
    prompts: Sequence[list[int]],
    sampling: dict[str, Any],
    seed: int,
) -> tuple[str, dict[str, Any]]:
    """The cache key and the fields it was made from."""
    fields = {
        "model": model_identity,
        "tokenizer": tokenizer_identity,
        "prompts": _sha256(json.dumps(list(prompts)).encode()),
        "num_prompts": len(prompts),
        "sampling": sampling,
        "seed": seed,
    }
    return _sha256(json.dumps(fields, sort_keys=True, default=str).encode())[:32], fields


class ProtoCache:
    """Proto-synthetic responses on disk, keyed by [`proto_cache_key`].

    Args:
        directory (`str`):
            Folder of the cache; created on first write. Delete it (or single `<key>.*` files) to clear the cache.
    """

    def __init__(self, directory: str):
        self.directory = directory

    def paths(self, key: str) -> tuple[str, str]:
        return os.path.join(self.directory, f"{key}.jsonl"), os.path.join(self.directory, f"{key}.json")

    def load(self, key: str, expected: int) -> list[list[int]] | None:
        """The cached responses, or `None` when absent, corrupted or of the wrong length (then regenerated)."""
        entry = read_checked_jsonl(*self.paths(key))
        if entry is None or len(entry[0]) != expected:
            return None
        return entry[0]

    def save(self, key: str, responses: Sequence[list[int]], fields: dict[str, Any]) -> str:
        """Write an entry atomically; returns the path of its data file."""
        data_path, meta_path = self.paths(key)
        write_checked_jsonl(data_path, meta_path, responses, {"key_fields": fields})
        return data_path
