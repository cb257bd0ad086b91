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
        """The cached responses, or `None` when absent, corrupted or of the wrong length."""
        data_path, meta_path = self.paths(key)
        if not (os.path.isfile(data_path) and os.path.isfile(meta_path)):
            return None
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            with open(data_path, "rb") as f:
                raw = f.read()
            if _sha256(raw) != meta["sha256"]:
                raise ValueError("checksum mismatch")
            responses = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
            if len(responses) != expected or meta.get("count") != expected:
                raise ValueError(f"{len(responses)} responses for {expected} prompts")
        except (ValueError, KeyError, json.JSONDecodeError, UnicodeDecodeError) as error:
            logger.warning(
                "Ignoring corrupted proto-synthetic cache entry %s (%s); regenerating it.", data_path, error
            )
            return None
        return responses

    def save(self, key: str, responses: Sequence[list[int]], fields: dict[str, Any]) -> str:
        """Write an entry atomically; returns the path of its data file."""
        os.makedirs(self.directory, exist_ok=True)
        data_path, meta_path = self.paths(key)
        raw = "".join(json.dumps(ids) + "\n" for ids in responses).encode()
        for path, content in ((data_path, raw), (meta_path, None)):
            if content is None:
                content = json.dumps({"sha256": _sha256(raw), "count": len(responses), "key_fields": fields}).encode()
            with open(path + ".tmp", "wb") as f:
                f.write(content)
            os.replace(path + ".tmp", path)
        return data_path
