"""`RunContext`: what the self-play callbacks may use of the run they serve, and nothing more.

The trainer builds one and hands it to [`SelfPlayCallback`], [`IterationMonitor`] and [`ScoringCallback`], which never
see the trainer itself; a test can build one from the same small parts.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

    from .clock import IterationClock
    from .config import TSPINConfig
    from .data import TripletDataset
    from .generation import PolicySampler
    from .metrics import MetricsLog
    from .objective import ObjectivePolicy
    from .run_folder import RunFolder


@dataclass
class RunContext:
    """
    The narrow surface of a run that its callbacks use.

    Args:
        args ([`TSPINConfig`]):
            The run's configuration (read only).
        accelerator ([`~accelerate.Accelerator`]):
            Processes: who is main, who writes, collectives.
        clock ([`~tspin_trl.clock.IterationClock`]):
            Iteration time: which iteration a step belongs to, where iterations end, the current one.
        policy ([`ObjectivePolicy`]):
            What each iteration needs (roles, beta, reference log-probs).
        folder ([`~tspin_trl.run_folder.RunFolder`]):
            Where the run's self-play files live.
        metrics ([`~tspin_trl.metrics.MetricsLog`]):
            Recording values for the next logged line, logging a line now, listening to every step's metrics.
        sampler ([`~tspin_trl.generation.PolicySampler`]):
            Generation with the current policy (the run's backend).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            For decoding responses into the files people read.
        vocab_size (`int`):
            Token ids stored on disk are checked against it.
        compute_logps (`Callable[[TripletDataset, tuple[str, ...]], dict[str, list[float]]]`):
            Summed log-probs of a dataset's responses under the current policy (sharded over processes).
        start_iteration (`Callable[[int], None]`):
            Makes an iteration the trainer's current one (its beta, a fresh optimizer state at its start).
        initial_identity (`dict[str, Any]`):
            Fingerprints of the initial model (`"initial_model"`) and the tokenizer (`"tokenizer"`).
        resumed_from_checkpoint (`str`, *optional*):
            The checkpoint the running `train()` resumed from.
    """

    args: "TSPINConfig"
    accelerator: "Accelerator"
    clock: "IterationClock"
    policy: "ObjectivePolicy"
    folder: "RunFolder"
    metrics: "MetricsLog"
    sampler: "PolicySampler"
    tokenizer: "PreTrainedTokenizerBase"
    vocab_size: int
    compute_logps: Callable[["TripletDataset", tuple[str, ...]], dict[str, list[float]]]
    start_iteration: Callable[[int], None]
    initial_identity: dict[str, Any]
    resumed_from_checkpoint: str | None = None

    @property
    def eos_token_ids(self) -> list[int]:
        return self.sampler.eos_ids
