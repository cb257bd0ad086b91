"""Sharded, batched generation of responses from prompt token ids, checkpointed chunk by chunk."""

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from trl.models import unwrap_model_for_generation

from .checked_io import atomic_write, json_digest, sha256_hex, valid_token_ids
from .compat import quiet_checkpointing_renames
from .data import cut_at_eos
from .distributed import main_decides


logger = logging.getLogger(__name__)


@dataclass
class SamplingSettings:
    """Everything that decides what `generate` samples, besides the model and the prompts."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    generation_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, args: Any) -> "SamplingSettings":
        """The sampling of self-play's passes, from a [`TSPINConfig`]."""
        return cls(
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            generation_kwargs=dict(args.generation_kwargs or {}),
        )

    @classmethod
    def greedy(cls, max_new_tokens: int) -> "SamplingSettings":
        return cls(max_new_tokens=max_new_tokens, generation_kwargs={"do_sample": False})

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs = {
            "do_sample": True,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }
        kwargs.update(self.generation_kwargs)
        if not kwargs["do_sample"]:  # greedy: sampling knobs would only trigger warnings
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationStats:
    """What a generation pass produced; `seconds` and `generated_tokens` count only this run's `generate` calls."""

    num_prompts: int = 0
    num_tokens: int = 0
    num_eos: int = 0
    num_truncated: int = 0
    generated_tokens: int = 0
    generate_calls: int = 0
    reused_chunks: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}


def auto_generation_batch_size(model: torch.nn.Module, prompt_length: int, max_new_tokens: int) -> int:
    """Prompts per `generate` call: 32 on CPU; on a GPU, what half of the free memory holds in key/value cache."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return 32
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    bytes_per_value = torch.finfo(next(model.parameters()).dtype).bits // 8
    per_sequence = (
        2 * config.num_hidden_layers * kv_heads * head_dim * bytes_per_value * (prompt_length + max_new_tokens)
    )
    # Logits of the last position and activations also scale with the batch: count them as one more cache.
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(512, (free // 2) // (2 * per_sequence))))


class ChunkStore:
    """Completed generation chunks on disk, so a pass killed midway resumes at the first missing chunk.

    A chunk file is written under a temporary name and renamed, so a file that exists is complete; the manifest
    records the SHA-256 of every chunk and a checksum of itself. The `key` names everything the chunks depend on;
    chunks written under another key, with a wrong checksum, or holding anything but token ids of the vocabulary for
    the chunk's own prompts are discarded (with a warning) and generated again.

    Args:
        directory (`str`):
            Folder of the chunks.
        key (`str`):
            Identity of the generation pass.
        vocab_size (`int`, *optional*):
            Size of the vocabulary, to validate token ids.
    """

    def __init__(self, directory: str, key: str, vocab_size: int | None = None):
        self.directory = directory
        self.key = key
        self.vocab_size = vocab_size
        self.checksums: dict[str, str] = {}

    def _path(self, chunk: int) -> str:
        return os.path.join(self.directory, f"chunk_{chunk:05d}.jsonl")

    @property
    def _manifest_path(self) -> str:
        return os.path.join(self.directory, "manifest.json")

    def _read_manifest(self) -> dict[str, Any] | None:
        if not os.path.isfile(self._manifest_path):
            return None
        try:
            with open(self._manifest_path) as f:
                manifest = json.load(f)
            body = {k: v for k, v in manifest.items() if k != "sha256"}
            if manifest.get("sha256") != json_digest(body) or not isinstance(body.get("chunks"), dict):
                raise ValueError("checksum mismatch")
            return body
        except (OSError, ValueError, AttributeError) as error:
            logger.warning("Ignoring the corrupted chunk manifest %s (%s).", self._manifest_path, error)
            return None

    def _write_manifest(self) -> None:
        body = {"key": self.key, "chunks": self.checksums}
        atomic_write(self._manifest_path, json.dumps({**body, "sha256": json_digest(body)}))

    def load(self, chunks: Sequence[Sequence[int]]) -> dict[int, list[tuple[int, list[int]]]]:
        """The stored chunks that are intact and hold exactly the responses to their prompts (`chunks[i]` lists the
        prompt indices of chunk `i`)."""
        manifest = self._read_manifest()
        if manifest is None or manifest.get("key") != self.key:
            shutil.rmtree(self.directory, ignore_errors=True)
            manifest = {"chunks": {}}
        self.checksums = {}
        done = {}
        for chunk, indices in enumerate(chunks):
            path, expected = self._path(chunk), manifest["chunks"].get(str(chunk))
            if expected is None or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as f:
                    raw = f.read()
                if sha256_hex(raw) != expected:
                    raise ValueError("checksum mismatch")
                items = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
                if sorted(item[0] for item in items) != sorted(indices) or not all(
                    self.vocab_size is None or valid_token_ids(item[1], self.vocab_size) for item in items
                ):
                    raise ValueError("its responses do not match the chunk's prompts or the vocabulary")
            except (OSError, ValueError, TypeError, IndexError, UnicodeDecodeError) as error:
                logger.warning("Discarding generation chunk %s (%s); it is generated again.", path, error)
                continue
            self.checksums[str(chunk)] = expected
            done[chunk] = [(index, ids) for index, ids in items]
        self._write_manifest()
        return done

    def write(self, chunk: int, items: list[tuple[int, list[int]]]) -> None:
        text = "".join(json.dumps([index, ids]) + "\n" for index, ids in items)
        atomic_write(self._path(chunk), text)
        self.checksums[str(chunk)] = sha256_hex(text.encode())
        self._write_manifest()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def no_router_logits(model: torch.nn.Module) -> dict[str, bool]:
    """The keyword that keeps a Mixture-of-Experts model from returning its router logits in a forward that is not
    the training loss (`{}` for other models). With `output_router_logits=True` in its config (the usual way to train
    Mixtral with its load-balancing loss), `generate` would compute that loss at every decoding step, where the step's
    router logits and the whole attention mask differ in size (a crash once a batch has padding)."""
    return {"output_router_logits": False} if hasattr(model.config.get_text_config(), "output_router_logits") else {}


def _left_pad(prompts: list[list[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


class GenerationBackend(Protocol):
    """
    What turns a batch of prompt ids into completions. [`generate_responses`] does everything else (chunks,
    sharding, ordering, resume, eos cutting, statistics), identically for every backend.

    Implementations: [`HFGenerationBackend`] (`model.generate`) and `tspin_trl.vllm_backend.VLLMGenerationBackend`.
    """

    #: Added to the chunk store's key when not `None`, so chunks of one backend are not resumed by another.
    chunk_key: str | None

    def session(self, model: torch.nn.Module, accelerator: Accelerator) -> AbstractContextManager[None]:
        """Context of one generation pass: `generate` is only called inside it (weights are made current here)."""
        ...

    def default_batch_size(self, prompt_length: int, max_new_tokens: int) -> int:
        """Prompts per `generate` call and process when the user did not set `generation_batch_size`."""
        ...

    def generate(
        self, prompts: list[list[int]], sampling: SamplingSettings, *, seed: int, pad_token_id: int, eos_ids: list[int]
    ) -> list[list[int]]:
        """Completion ids of `prompts` (this process's share of one chunk); may run past an eos token."""
        ...

    def close(self) -> None:
        """Free what the backend holds (an engine, a connection); called when `train()` ends."""
        ...


class HFGenerationBackend:
    """`model.generate` on the trainer's model: unwrapped for the pass (ZeRO-3 parameters gathered), in eval mode."""

    chunk_key = None

    def __init__(self):
        self._model: torch.nn.Module | None = None

    @contextmanager
    def session(self, model: torch.nn.Module, accelerator: Accelerator) -> Iterator[None]:
        with quiet_checkpointing_renames(), unwrap_model_for_generation(model, accelerator) as unwrapped:
            was_training = unwrapped.training
            unwrapped.eval()
            self._model = unwrapped
            try:
                yield
            finally:
                self._model = None
                if was_training:
                    unwrapped.train()

    def default_batch_size(self, prompt_length: int, max_new_tokens: int) -> int:
        return auto_generation_batch_size(self._model, prompt_length, max_new_tokens)

    def generate(
        self, prompts: list[list[int]], sampling: SamplingSettings, *, seed: int, pad_token_id: int, eos_ids: list[int]
    ) -> list[list[int]]:
        input_ids, attention_mask = _left_pad(prompts, pad_token_id, next(self._model.parameters()).device)
        torch.manual_seed(seed)
        with torch.no_grad():
            output = self._model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pad_token_id=pad_token_id,
                eos_token_id=list(eos_ids),
                use_cache=True,
                **no_router_logits(self._model),
                **sampling.generate_kwargs(),
            )
        return output[:, input_ids.size(1) :].tolist()

    def close(self) -> None:
        pass


def generate_responses(
    model: torch.nn.Module,
    accelerator: Accelerator,
    prompts: Sequence[list[int]],
    *,
    sampling: SamplingSettings,
    pad_token_id: int,
    eos_ids: Sequence[int],
    batch_size: int | None = None,
    seed: int = 0,
    chunk_store: ChunkStore | None = None,
    description: str = "Generating",
    backend: GenerationBackend | None = None,
    show_progress: bool = True,
) -> tuple[list[list[int]], GenerationStats]:
    """
    Sample one response per prompt with the (possibly distributed) model; every process returns all responses.

    Prompts are sorted by length (so a batch pads little), split into chunks of `batch_size` prompts per process and
    spread over the processes. Every process makes the same number of `generate` calls (required under DeepSpeed
    ZeRO-3), results are gathered and put back in the original order. Each chunk is sampled under its own seed, and
    the global RNG state is restored afterwards, so training randomness does not depend on whether a pass ran.

    Args:
        model (`torch.nn.Module`):
            The model as the trainer holds it (DDP/DeepSpeed-wrapped or not); it is unwrapped for generation, with
            ZeRO-3 parameters gathered and gradient checkpointing off.
        accelerator ([`~accelerate.Accelerator`]):
            The trainer's accelerator.
        prompts (`Sequence[list[int]]`):
            Prompt token ids, exactly as training uses them.
        sampling ([`SamplingSettings`]):
            Sampling settings.
        pad_token_id (`int`):
            Token used for left padding.
        eos_ids (`Sequence[int]`):
            Tokens that end a response; a response keeps its first one.
        batch_size (`int`, *optional*):
            Prompts per `generate` call and process; automatic if unset (see [`auto_generation_batch_size`]).
        seed (`int`, *optional*, defaults to `0`):
            Base seed of the pass.
        chunk_store ([`ChunkStore`], *optional*):
            Where completed chunks are kept; chunks already there are not generated again.
        description (`str`, *optional*):
            Progress-bar label.
        backend ([`GenerationBackend`], *optional*):
            What generates each chunk: `model.generate` ([`HFGenerationBackend`]) if unset, or vLLM
            (`tspin_trl.vllm_backend`).
        show_progress (`bool`, *optional*, defaults to `True`):
            Whether the main process shows a progress bar (the trainer passes `not args.disable_tqdm`).

    Returns:
        `tuple[list[list[int]], GenerationStats]`: the responses' token ids in prompt order, and statistics.
    """
    start = time.perf_counter()
    world, rank = accelerator.num_processes, accelerator.process_index
    stats = GenerationStats(num_prompts=len(prompts))
    if not prompts:
        return [], stats
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    backend = backend if backend is not None else HFGenerationBackend()
    with backend.session(model, accelerator):
        if batch_size is None:
            batch_size = backend.default_batch_size(len(prompts[order[0]]), sampling.max_new_tokens)
        per_chunk = batch_size * world
        chunks = [order[s : s + per_chunk] for s in range(0, len(order), per_chunk)]

        done: dict[int, list[tuple[int, list[int]]]] = {}
        if chunk_store is not None:
            if backend.chunk_key is not None:
                chunk_store = ChunkStore(
                    chunk_store.directory, json.dumps([chunk_store.key, backend.chunk_key]), chunk_store.vocab_size
                )
            done = main_decides(accelerator, chunk_store.load, chunks)
        stats.reused_chunks = len(done)

        results: list[list[int] | None] = [None] * len(prompts)
        for items in done.values():
            for index, ids in items:
                results[index] = ids

        rng_state = torch.get_rng_state()
        cuda_rng_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        # `leave=False`: the bar goes when the pass ends, instead of breaking up the training bar it runs under
        progress = tqdm(
            total=len(chunks),
            desc=description,
            disable=not (show_progress and accelerator.is_main_process),
            initial=len(done),
            leave=False,
            dynamic_ncols=True,
        )
        try:
            for chunk_index, chunk in enumerate(chunks):
                if chunk_index in done:
                    continue
                mine = chunk[rank::world]
                # Every rank must call `generate`: a rank with nothing left repeats a prompt and drops the result.
                batch = [prompts[i] for i in mine] or [prompts[chunk[0]]]
                completions = backend.generate(
                    batch,
                    sampling,
                    seed=seed + chunk_index * world + rank,
                    pad_token_id=pad_token_id,
                    eos_ids=list(eos_ids),
                )
                stats.generate_calls += 1
                if len(completions) != len(batch):
                    raise RuntimeError(
                        f"The generation backend returned {len(completions)} sequences for {len(batch)} prompts: "
                        f"responses could not be paired with their prompts. Settings that make `generate` return "
                        f"several sequences per prompt (generation_kwargs {sampling.generation_kwargs}) are not "
                        "supported; self-play pairs each prompt with one response."
                    )
                completions = completions[: len(mine)]  # a process with nothing left generated for a repeated prompt
                local = [(index, cut_at_eos(ids, eos_ids)) for index, ids in zip(mine, completions, strict=True)]
                for _, ids in local:
                    stats.generated_tokens += len(ids)
                items = sorted(gather_object(local) if world > 1 else local)
                for index, ids in items:
                    results[index] = ids
                if chunk_store is not None and accelerator.is_main_process:
                    chunk_store.write(chunk_index, items)
                progress.update(1)
        finally:
            progress.close()
            torch.set_rng_state(rng_state)
            if cuda_rng_state is not None:
                torch.cuda.set_rng_state_all(cuda_rng_state)

    responses = [ids if ids is not None else [] for ids in results]
    eos_set = set(eos_ids)
    for ids in responses:
        stats.num_tokens += len(ids)
        if ids and ids[-1] in eos_set:
            stats.num_eos += 1
        elif len(ids) >= sampling.max_new_tokens:
            stats.num_truncated += 1
    if world > 1:
        totals = torch.tensor([stats.generated_tokens], dtype=torch.long, device=accelerator.device)
        stats.generated_tokens = int(accelerator.reduce(totals, reduction="sum").item())
    stats.seconds = time.perf_counter() - start if stats.generate_calls else 0.0
    return responses, stats


class PolicySampler:
    """
    Samples responses from the policy as it is at the time of the call: the one door through which self-play and
    scoring generate. It owns the generation backend of the running `train()` (started by [`open`], freed by
    [`close`]) and the settings every pass shares (padding, end-of-sequence ids, batch size).

    Args:
        accelerator ([`~accelerate.Accelerator`]):
            The trainer's accelerator.
        policy (`Callable[[], torch.nn.Module]`):
            Returns the model as the trainer holds it now (wrapped by DDP/DeepSpeed or not).
        backend_factory (`Callable[[], GenerationBackend]`):
            Builds the run's backend (`model.generate`, or a vLLM engine/connection), once per `train()`.
        pad_token_id (`int`), eos_ids (`list[int]`):
            Padding and end-of-sequence tokens.
        batch_size (`Callable[[], int | None]`, *optional*):
            Returns the prompts per `generate` call and process (automatic if it returns `None`), read at every pass:
            the run's `generation_batch_size` as it is then.
        guard (`Callable[[str], None]`, *optional*):
            Called before every pass with its description; raises when the policy must not be sampled (its weights are
            not finite). Collective: every process calls it.
        show_progress (`Callable[[], bool]`, *optional*):
            Returns whether passes show a progress bar, read at every pass (the run's `not disable_tqdm`); shown if
            unset.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        policy: Any,
        backend_factory: Any,
        pad_token_id: int,
        eos_ids: Sequence[int],
        batch_size: Callable[[], int | None] | None = None,
        guard: Any = None,
        show_progress: Callable[[], bool] | None = None,
    ):
        self.guard = guard
        self.show_progress = show_progress
        self.accelerator = accelerator
        self.policy = policy
        self.backend_factory = backend_factory
        self.pad_token_id = pad_token_id
        self.eos_ids = list(eos_ids)
        self.batch_size = batch_size
        self.backend: GenerationBackend | None = None

    def open(self) -> None:
        """Start the backend (a vLLM engine starts here), unless it runs already."""
        if self.backend is None:
            self.backend = self.backend_factory()

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    @property
    def backend_chunk_key(self) -> str | None:
        """What tells this run's backend apart in chunk and cache keys (`None` for `model.generate`)."""
        self.open()
        return self.backend.chunk_key

    def generate(
        self,
        prompts: Sequence[list[int]],
        sampling: SamplingSettings,
        *,
        seed: int = 0,
        chunk_store: ChunkStore | None = None,
        description: str = "Generating",
    ) -> tuple[list[list[int]], GenerationStats]:
        """One response per prompt (see [`generate_responses`]); every process gets all responses."""
        if self.guard is not None:
            self.guard(description)
        self.open()
        return generate_responses(
            self.policy(),
            self.accelerator,
            prompts,
            sampling=sampling,
            pad_token_id=self.pad_token_id,
            eos_ids=self.eos_ids,
            batch_size=self.batch_size() if self.batch_size is not None else None,
            seed=seed,
            chunk_store=chunk_store,
            description=description,
            backend=self.backend,
            show_progress=self.show_progress() if self.show_progress is not None else True,
        )
