"""The responses of a dataset passed to `evaluate()` (or `predict()`): the trainer's evaluation service.

A set evaluated outside the schedule gets the responses an evaluation at this point of the run needs, made by the
run's [`ResponseMaker`] and kept in its own files (`self_play/evaluate/step_<s>/<name>-<digest>.jsonl`), bound to the
run's identity and read back when the same data is evaluated again at the same step.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..distributed import main_decides
from .identity import SelfPlayError, dataset_digest


if TYPE_CHECKING:
    from ..context import RunContext
    from ..data import TripletDataset
    from .iteration_files import IterationFiles
    from .responses import ResponseMaker


class EvaluationResponses:
    """
    Fills the datasets passed to `evaluate()` with responses. [`TSPINTrainer`] builds it beside the self-play callback
    and calls [`prepare`].

    Args:
        context ([`~tspin_trl.context.RunContext`]):
            The run.
        responses ([`ResponseMaker`]), files ([`IterationFiles`]):
            The self-play callback's: the same generation statistics, cache and identity.
        compute_identity (`Callable[[], None]`):
            Computes the run's identity (for the files' binding) when no `train()` has yet.
    """

    def __init__(
        self,
        context: "RunContext",
        responses: "ResponseMaker",
        files: "IterationFiles",
        compute_identity: Callable[[], None],
    ):
        self.context = context
        self.responses = responses
        self.files = files
        self.compute_identity = compute_identity

    def prepare(self, name: str, dataset: "TripletDataset", global_step: int) -> None:
        """Fill a dataset passed to `evaluate()` with the responses of an evaluation at this point of the run.

        Synthetic responses come from the policy as it is now (before training: the proto responses, which the initial
        policy sampled), unless the dataset brings its own; proto-synthetic responses from the dataset, the proto cache
        (where the same prompts were sampled before) or, before any training, the initial policy. After training has
        begun a proto response that exists nowhere cannot be sampled any more (the initial policy is gone): that
        evaluation is refused with a `SelfPlayError` naming the fix, as `DPOTrainer` refuses a set it cannot score.
        Reference log-probs (SPIN, T-SPIN_ref) are those of the current policy. The responses are written to
        `self_play/evaluate/step_<s>/<name>-<digest>.jsonl`, bound to the run's identity, and read back when the same
        data is evaluated again at the same step.
        """
        context, responses, files = self.context, self.responses, self.files
        if not files.identity_digest:
            self.compute_identity()
        iteration = context.clock.current or 0
        key = f"{name}-{dataset_digest(dataset)[:12]}"
        rows = main_decides(context.accelerator, files.read, iteration, key, len(dataset.examples), global_step)
        if rows is not None:
            files.load_into(rows, dataset)
            dataset.include_proto = dataset.has("proto") and "proto" in context.policy.roles_for(iteration)
            return
        untrained = global_step == 0
        if "proto" in context.policy.roles_for(iteration) or untrained:
            if not dataset.has("proto"):
                try:
                    responses.proto(key, dataset, context.clock.point(0 if untrained else iteration, global_step))
                except SelfPlayError as error:
                    raise SelfPlayError(
                        f"Cannot evaluate {name!r} now: its prompts have no proto-synthetic responses (no `proto` "
                        "column, not in the proto cache or this run's files), and the initial policy that samples them "
                        "is gone once training has begun. Give the set a `proto` column, or pass it as `eval_dataset` "
                        "when building the trainer (its proto responses are then sampled before training)."
                    ) from error
        if not dataset.has("synthetic"):
            if untrained and dataset.has("proto") and context.policy.synthetic_source(0, False) == "proto":
                dataset.set_column("synthetic_ids", dataset.column("proto_ids"))
            else:
                seed = responses.iteration_seed(iteration)
                dataset.set_column("synthetic_ids", responses.sample(dataset.column("prompt_ids"), seed, None, key))
        responses.reference_logps(iteration, dataset)
        dataset.include_proto = dataset.has("proto") and "proto" in context.policy.roles_for(iteration)
        if context.args.should_save:
            meta = {"global_step": global_step, "sampling": responses.sampling.to_dict(), "evaluated": name}
            files.write(iteration, key, files.rows_of(dataset, context.tokenizer), meta, step=global_step)
        context.accelerator.wait_for_everyone()
