"""Content-addressed, checksummed on-disk store of proto-synthetic responses.

An entry is `<key>.jsonl` (one JSON list of token ids per line, in prompt order) and `<key>.json` (its SHA-256, the
number of responses, and the fields the key was made from). The key hashes everything that decides the responses:
the model's identity and a fingerprint of its weights, the tokenizer and its chat template, the prompt token ids and
every sampling setting. A file whose checksum or length does not match is reported and ignored, never used.
"""

import contextlib
import glob
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .checked_io import json_digest, read_checked_jsonl, remove_stale_temporaries, valid_token_ids, write_checked_jsonl
from .locks import RunLock


logger = logging.getLogger(__name__)


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Identity of a model: name/path, revision, and a SHA-256 of every byte of every parameter (with its name, shape
    and dtype), so that two models that differ in any weight never share a fingerprint.

    Parameters partitioned by DeepSpeed ZeRO-3 are gathered one at a time (every process must call this). Hashing
    runs at memory speed: about 1 s per GB of weights on one CPU core (docs/reliability.md has the measurement).
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        with _gathered(param):
            tensor = param.detach()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            if tensor.numel() > 0:
                digest.update(tensor.contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
    config = getattr(model, "config", None)
    return {
        "name_or_path": getattr(config, "_name_or_path", None),
        "revision": getattr(config, "_commit_hash", None),
        "weights": digest.hexdigest(),
    }


def _gathered(param: torch.nn.Parameter):
    if getattr(param, "ds_id", None) is None:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([param], modifier_rank=None)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the vocabulary, special tokens and chat template."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": tokenizer.all_special_tokens,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
    }
    return json_digest(payload)


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
        "prompts": json_digest(list(prompts)),
        "num_prompts": len(prompts),
        "sampling": sampling,
        "seed": seed,
    }
    return json_digest(fields)[:32], fields


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

    def load(self, key: str, expected: int, vocab_size: int) -> list[list[int]] | None:
        """The cached responses, or `None` when absent or, with a warning, corrupted, of the wrong length, or holding
        anything but token ids of a `vocab_size` vocabulary (then regenerated)."""
        entry = read_checked_jsonl(*self.paths(key))
        if entry is None:
            return None
        responses, meta = entry
        if json_digest(meta.get("key_fields"))[:32] != key:
            logger.warning(
                "Ignoring the proto cache entry %s: its recorded fields do not hash to its key (a renamed or foreign "
                "entry). It will be regenerated.",
                self.paths(key)[0],
            )
            return None
        if len(responses) != expected or not all(valid_token_ids(ids, vocab_size) for ids in responses):
            logger.warning(
                "Ignoring the proto cache entry %s: %d responses for %d prompts, or token ids outside the vocabulary "
                "of %d tokens. It will be regenerated.",
                self.paths(key)[0],
                len(responses),
                expected,
                vocab_size,
            )
            return None
        return responses

    def save(self, key: str, responses: Sequence[list[int]], fields: dict[str, Any]) -> str:
        """Write an entry atomically; returns the path of its data file."""
        data_path, meta_path = self.paths(key)
        write_checked_jsonl(data_path, meta_path, responses, {"key_fields": fields})
        return data_path

    def _last_progress(self, key: str, lock_path: str) -> float:
        """When the holder of `key` last showed progress: its lock written, or a chunk (the manifest) saved."""
        times = []
        for path in (lock_path, os.path.join(self.chunks_dir(key), "manifest.json")):
            with contextlib.suppress(OSError):
                times.append(os.path.getmtime(path))
        return max(times, default=time.time())

    def _remove_temporaries(self, key: str) -> None:
        """The temporary files of a writer of `key` killed before its renames (its lock is held now: none runs)."""
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"{key}.*.tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        remove_stale_temporaries(self.chunks_dir(key))

    def chunks_dir(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.chunks")

    def claim(
        self, key: str, expected: int, vocab_size: int, poll_seconds: float = 5.0, stale_after: float = 1800.0
    ) -> list[list[int]] | RunLock:
        """Either the entry, or the right to generate it.

        When another live process is generating the same entry (its `<key>.lock` exists), wait for it to finish and
        return its responses instead of doing the same work twice; when that process died, take its lock over (its
        chunks are reused). A holder that shows no progress (neither its lock nor its chunks changed) for
        `stale_after` seconds is taken over too: it may be a process on another host that died, whose liveness cannot
        be checked from here. Returns the responses, or the held [`RunLock`] to release after [`save`].
        """
        lock = RunLock(
            os.path.join(self.directory, f"{key}.lock"),
            guards=f"generating the proto cache entry {key}",
            foreign_is_stale=True,
            conflict="Runs that share a proto cache wait for each other's entries instead of generating them twice.",
        )
        waited = False
        while True:
            cached = self.load(key, expected, vocab_size)
            if cached is not None:
                return cached
            try:
                lock.acquire()
                # the other writer may have finished between the load and the lock
                cached = self.load(key, expected, vocab_size)
                if cached is not None:
                    lock.release()
                    return cached
                self._remove_temporaries(key)
                return lock
            except RuntimeError as error:  # held by a live process
                if time.time() - self._last_progress(key, lock.path) > stale_after:
                    logger.warning(
                        "The proto cache entry %s has made no progress for %.0f s (lock %s): taking it over.",
                        key,
                        stale_after,
                        lock.path,
                    )
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(lock.path)
                    continue
                if not waited:
                    logger.warning(
                        "Waiting for another run to finish the proto cache entry %s (%s). If no run is generating it, "
                        "delete %s.",
                        key,
                        error,
                        lock.path,
                    )
                    waited = True
                time.sleep(poll_seconds)
