"""`RunContext`: what the self-play callbacks may use of the run they serve, and nothing more.

The trainer builds one with [`RunContext.build`] and hands it to [`SelfPlayCallback`], [`IterationMonitor`] and
[`ScoringCallback`], which never see the trainer itself; a test builds one from the same small parts with the same
factory (`make_context` in the tests' builders).

Each part has one owner after construction: the context itself replaces the clock and the policy and records the
checkpoint resumed from, once, as `train()` starts ([`RunContext.start_train`]); the clock alone writes its current
iteration ([`IterationClock.enter`], called by [`RunContext.start_iteration`]); the sampler reads its batch size from
the run's settings at every pass.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cache import model_fingerprint, tokenizer_fingerprint
from .clock import IterationClock, IterationPoint
from .data import eos_token_ids
from .generation import PolicySampler
from .objective import ObjectivePolicy
from .run_folder import RunFolder


if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

    from .config import TSPINConfig
    from .data import TripletDataset
    from .metrics import MetricsLog


def clock_and_policy(args: "TSPINConfig", own_synthetic: bool) -> tuple[IterationClock, ObjectivePolicy]:
    """The run's clock and objective policy, from its settings: built here only, when the context is built and again
    as each `train()` starts (so that settings changed on `trainer.args` in between take effect)."""
    return IterationClock.from_config(args), ObjectivePolicy.from_config(args, own_synthetic=own_synthetic)


@dataclass
class RunContext:
    """
    The narrow surface of a run that its callbacks use. Build it with [`RunContext.build`].

    Args:
        args ([`TSPINConfig`]):
            The run's configuration (read only).
        accelerator ([`~accelerate.Accelerator`]):
            Processes: who is main, who writes, collectives.
        clock ([`~tspin_trl.clock.IterationClock`]):
            Iteration time: which iteration a step belongs to, where iterations end, the current one.
        policy ([`ObjectivePolicy`]):
            What each iteration needs (roles, alpha, beta, reference log-probs).
        folder ([`~tspin_trl.run_folder.RunFolder`]):
            Where the run's self-play files live.
        metrics ([`~tspin_trl.metrics.MetricsLog`]):
            Recording values for the next logged entry, logging self-play quantities with the next training entry
            or the train summary (`log_now`), listening to every step's metrics.
        sampler ([`~tspin_trl.generation.PolicySampler`]):
            Generation with the current policy (the run's backend).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            For decoding responses into the files people read.
        vocab_size (`int`):
            Token ids stored on disk are checked against it.
        compute_logps (`Callable[[TripletDataset, tuple[str, ...]], dict[str, list[float]]]`):
            Summed log-probs of a dataset's responses under the current policy (sharded over processes).
        initial_identity (`dict[str, Any]`):
            Fingerprints of the initial model (`"initial_model"`) and the tokenizer (`"tokenizer"`).
        on_iteration_start (`Callable[[IterationPoint], None]`, *optional*):
            What the trainer does when an iteration becomes the current one (a fresh optimizer state at its start).
        resumed_from_checkpoint (`str`, *optional*):
            The checkpoint the running `train()` resumed from.
    """

    args: "TSPINConfig"
    accelerator: "Accelerator"
    clock: IterationClock
    policy: ObjectivePolicy
    folder: RunFolder
    metrics: "MetricsLog"
    sampler: PolicySampler
    tokenizer: "PreTrainedTokenizerBase"
    vocab_size: int
    compute_logps: Callable[["TripletDataset", tuple[str, ...]], dict[str, list[float]]] | None
    initial_identity: dict[str, Any]
    on_iteration_start: Callable[[IterationPoint], None] | None = None
    resumed_from_checkpoint: str | None = None

    @classmethod
    def build(
        cls,
        args: "TSPINConfig",
        accelerator: "Accelerator",
        model: "torch.nn.Module",
        tokenizer: "PreTrainedTokenizerBase",
        *,
        metrics: "MetricsLog",
        sampled_model: Callable[[], "torch.nn.Module"],
        backend_factory: Callable[[], Any],
        compute_logps: Callable[["TripletDataset", tuple[str, ...]], dict[str, list[float]]] | None,
        own_synthetic: bool = False,
        on_iteration_start: Callable[[IterationPoint], None] | None = None,
        guard: Callable[[str], None] | None = None,
        eos_ids: Sequence[int] | None = None,
    ) -> "RunContext":
        """
        The context of a run, its parts built from `args` in one place: the trainer's and the tests'.

        Args:
            args ([`TSPINConfig`]), accelerator ([`~accelerate.Accelerator`]):
                The run's settings and processes.
            model (`torch.nn.Module`):
                The initial policy, before any training: its fingerprint keys the proto cache; its vocabulary and
                generation config give the vocabulary size and end-of-sequence ids.
            tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
                The run's tokenizer.
            metrics ([`~tspin_trl.metrics.MetricsLog`]):
                The run's metrics log.
            sampled_model (`Callable[[], torch.nn.Module]`), backend_factory (`Callable[[], GenerationBackend]`),
            guard (`Callable[[str], None]`, *optional*):
                The [`PolicySampler`]'s model as it is at each pass, its backend, and its check before each pass.
            compute_logps (`Callable`, *optional*):
                Summed log-probs of a dataset's responses under the current policy.
            own_synthetic (`bool`, *optional*, defaults to `False`):
                Whether the training dataset brings its own synthetic responses (see [`ObjectivePolicy`]).
            on_iteration_start (`Callable[[IterationPoint], None]`, *optional*):
                The trainer's part of starting an iteration.
            eos_ids (`Sequence[int]`, *optional*):
                End-of-sequence ids, if already known (else from the tokenizer and the model's generation config).
        """
        clock, policy = clock_and_policy(args, own_synthetic)
        if eos_ids is None:
            eos_ids = eos_token_ids(tokenizer, getattr(model, "generation_config", None))
        sampler = PolicySampler(
            accelerator,
            policy=sampled_model,
            backend_factory=backend_factory,
            pad_token_id=tokenizer.pad_token_id,
            eos_ids=eos_ids,
            batch_size=lambda: args.generation_batch_size,  # read at each pass: `trainer.args` may change it
            guard=guard,
            show_progress=lambda: not args.disable_tqdm,
        )
        return cls(
            args=args,
            accelerator=accelerator,
            clock=clock,
            policy=policy,
            folder=RunFolder(args.output_dir),
            metrics=metrics,
            sampler=sampler,
            tokenizer=tokenizer,
            vocab_size=max(len(tokenizer), model.config.get_text_config().vocab_size),
            compute_logps=compute_logps,
            on_iteration_start=on_iteration_start,
            # Identity of the initial policy, taken before any sharding or training; it keys the proto cache.
            initial_identity={
                "initial_model": model_fingerprint(model),
                "tokenizer": tokenizer_fingerprint(tokenizer),
            },
        )

    @property
    def eos_token_ids(self) -> list[int]:
        return self.sampler.eos_ids

    def start_train(self, resumed_from_checkpoint: str | None = None) -> None:
        """As `train()` starts: the clock and the policy built again from the settings as they are now (a fresh clock
        has no current iteration), and the checkpoint this `train()` resumes from recorded. The only change to the
        context's parts after it was built."""
        self.clock, self.policy = clock_and_policy(self.args, self.policy.own_synthetic)
        self.resumed_from_checkpoint = resumed_from_checkpoint

    def start_iteration(self, point: IterationPoint) -> None:
        """Make `point.iteration` the current one (the clock's), then let the trainer start it (a fresh optimizer
        state at an iteration boundary)."""
        self.clock.enter(point.iteration)
        if self.on_iteration_start is not None:
            self.on_iteration_start(point)
