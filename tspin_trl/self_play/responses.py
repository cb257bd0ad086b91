"""The responses of an iteration: proto-synthetic (once, from the initial policy), synthetic (sampled from the current
policy), the previous iteration's synthetic ones (SPIN's data mixing) and reference log-probs (SPIN, T-SPIN_ref).

Every generation pass goes through the run's [`~tspin_trl.generation.PolicySampler`] and is checkpointed chunk by
chunk; the proto responses are shared between runs through the proto cache.
"""

import logging
from typing import TYPE_CHECKING

from ..cache import ProtoCache, proto_cache_key
from ..checked_io import json_digest
from ..config import default_proto_cache_dir
from ..distributed import main_decides
from ..generation import ChunkStore, GenerationStats, SamplingSettings
from .identity import SelfPlayError


if TYPE_CHECKING:
    from ..clock import IterationPoint
    from ..context import RunContext
    from ..data import TripletDataset
    from .iteration_files import IterationFiles


logger = logging.getLogger(__name__)


class ResponseMaker:
    """
    Makes the responses and log-probs an iteration needs, for one dataset at a time.

    Args:
        context ([`~tspin_trl.context.RunContext`]):
            The run.
        files ([`~tspin_trl.self_play.iteration_files.IterationFiles`]):
            Earlier iterations' files (proto responses, previous synthetic responses).

    Attributes:
        generation_stats (`dict[str, GenerationStats]`):
            Statistics of every generation pass of this run, keyed like `"iteration_1/train"` or `"proto/train"`.
        generate_calls (`int`):
            Number of `generate` calls this process made (zero when everything came from cache or files).
    """

    def __init__(self, context: "RunContext", files: "IterationFiles"):
        self.context = context
        self.files = files
        self.generation_stats: dict[str, GenerationStats] = {}
        self.generate_calls = 0

    @property
    def sampling(self) -> SamplingSettings:
        """The sampling settings of self-play's passes, read from the run's configuration when used."""
        return SamplingSettings.from_config(self.context.args)

    def iteration_seed(self, iteration: int) -> int:
        return self.context.args.seed + 1_000_003 * (iteration + 1)

    def sample(self, prompts: list[list[int]], seed: int, store: ChunkStore | None, label: str) -> list[list[int]]:
        """Sample one response per prompt from the current policy; statistics recorded under `label`."""
        context = self.context
        accelerator, metrics = context.accelerator, context.metrics
        responses, stats = context.sampler.generate(
            prompts, self.sampling, seed=seed, chunk_store=store, description=f"Generating {label}"
        )
        self.generate_calls += stats.generate_calls
        self.generation_stats[label] = stats
        if store is not None and accelerator.is_main_process:
            store.clear()
        for key, value in stats.to_dict().items():
            if key in ("num_tokens", "generated_tokens", "seconds", "tokens_per_second"):
                metrics.record(f"generation/{key}", float(value))
        metrics.record("generation/eos_rate", stats.num_eos / max(stats.num_prompts, 1))
        metrics.record("generation/truncation_rate", stats.num_truncated / max(stats.num_prompts, 1))
        if accelerator.is_main_process:
            logger.info("Generated %s: %s", label, stats.to_dict())
        return responses

    def synthetic(
        self, point: "IterationPoint", name: str, dataset: "TripletDataset", indices: list[int] | None = None
    ) -> list[list[int]]:
        """`point.iteration`'s synthetic responses, sampled from the current policy (resumable chunk by chunk, the
        chunks keyed by the point): for every prompt, or, with `indices` (prompt selection), for those prompts only,
        in that order."""
        context, iteration = self.context, point.iteration
        seed = self.iteration_seed(iteration)
        prompts = dataset.column("prompt_ids")
        if indices is not None:
            prompts = [prompts[i] for i in indices]
        chunk_key = json_digest(
            [
                self.files.identity_digest,
                iteration,
                point.global_step,
                context.accelerator.num_processes,
                context.args.generation_batch_size,
                seed,
                name,
                *([json_digest(indices)] if indices is not None else []),
            ]
        )
        store = ChunkStore(context.folder.generation_chunks_dir(iteration, name), chunk_key, context.vocab_size)
        return self.sample(prompts, seed, store, f"iteration_{iteration}/{name}")

    def previous_synthetic(self, iteration: int, name: str, dataset: "TripletDataset") -> list[list[int]]:
        """SPIN's data mixing: the previous iteration's synthetic responses (the current ones in iteration 0, which
        has no predecessor: its triplets then appear twice)."""
        if iteration == 0:
            return dataset.column("synthetic_ids") if dataset.has("synthetic") else dataset.column("proto_ids")
        rows = self.files.read(iteration - 1, name, len(dataset.examples))
        if rows is None:
            raise SelfPlayError(
                f"mix_previous_iteration needs iteration {iteration - 1}'s responses of the {name} dataset, but "
                f"{self.files.path(iteration - 1, name)} is missing or invalid. Restore it, or resume from a "
                f"checkpoint taken before iteration {iteration - 1} began."
            )
        return [row["synthetic_ids"] for row in rows]

    def reference_logps(self, iteration: int, dataset: "TripletDataset") -> None:
        """Store the log-probs of the current policy (the reference of `iteration`) for the roles it needs."""
        roles = tuple(role for role in self.context.policy.reference_roles_for(iteration) if dataset.has(role))
        if not roles:
            return
        if dataset.mix_previous:
            roles = roles + ("previous_synthetic",)
        for role, values in self.context.compute_logps(dataset, roles).items():
            dataset.set_column(f"ref_{role}_logps", values)

    def proto(self, name: str, dataset: "TripletDataset", point: "IterationPoint") -> None:
        """Proto responses from an earlier iteration file (before `point.iteration`), the cache, or the initial policy
        (then cached): sampled only while the policy is the initial one (at step 0 of iteration 0)."""
        context = self.context
        args, accelerator = context.args, context.accelerator
        for earlier in range(point.iteration):
            rows = main_decides(accelerator, self.files.read, earlier, name, len(dataset.examples))
            if rows is not None and all("proto_ids" in row for row in rows):
                dataset.set_column("proto_ids", [row["proto_ids"] for row in rows])
                return
        prompts = dataset.column("prompt_ids")
        key, fields = proto_cache_key(
            context.initial_identity["initial_model"],
            context.initial_identity["tokenizer"],
            prompts,
            # the per-chunk seeds depend on the chunking, and each backend samples differently from the same seed
            self.sampling.to_dict()
            | {
                "eos_ids": context.eos_token_ids,
                "generation_batch_size": args.generation_batch_size,
                "num_processes": accelerator.num_processes,
                "backend": context.sampler.backend_chunk_key,
            },
            args.seed,
        )
        cache = ProtoCache(args.proto_cache_dir or default_proto_cache_dir()) if args.use_proto_cache else None
        claim = None

        def claim_entry():
            nonlocal claim
            claim = cache.claim(key, len(prompts), context.vocab_size)
            return claim if isinstance(claim, list) else None

        cached = main_decides(accelerator, claim_entry) if cache is not None else None
        if cached is not None:
            logger.info("Proto-synthetic responses for %s loaded from the cache (%s).", name, key)
            dataset.set_column("proto_ids", cached)
            return
        try:
            if point.global_step > 0 or point.iteration > 0:
                raise SelfPlayError(
                    f"The proto-synthetic responses of the {name} dataset must come from the initial policy, but they "
                    "are in neither the proto cache nor an earlier iteration's files, and the model has already been "
                    "trained. Restore `output_dir/self_play/` or the proto cache, or restart training from the "
                    "beginning."
                )
            chunk_dir = cache.chunks_dir(key) if cache is not None else context.folder.proto_chunks_dir(name)
            store = ChunkStore(chunk_dir, key, context.vocab_size)
            responses = self.sample(prompts, args.seed, store, f"proto/{name}")
            if cache is not None and accelerator.is_main_process:
                cache.save(key, responses, fields)
        finally:
            if claim is not None and not isinstance(claim, list):
                claim.release()
        dataset.set_column("proto_ids", responses)
