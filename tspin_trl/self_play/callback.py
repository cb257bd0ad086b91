"""`SelfPlayCallback`: the self-play schedule. It decides *when*; the modules beside it decide *what*.

At the start of every epoch the callback asks the run's clock which iteration the epoch belongs to. When it changes,
it makes the triplets of that iteration and writes them into the datasets the dataloaders hold:

- proto-synthetic responses `y0`: from the dataset's `proto` column, an earlier iteration's file, the proto cache,
  or sampled once from the initial policy (then cached);
- synthetic responses `y'`: in iteration 0 the dataset's `synthetic` column or the proto responses (same policy);
  later, sampled from the current policy;
- for `objective="spin"`/`"tspin_ref"`, the log-probs of the current policy, computed once per iteration;
- with prompt selection (opt-in), which prompts the iteration regenerates and trains on (see `selection.py`).

What an iteration needs is decided by the run's [`ObjectivePolicy`]. Everything is written to
`output_dir/self_play/iteration_<t>/` before training on it, bound to the run's identity: a resumed run trains on
exactly the responses the interrupted run had, a generation pass killed midway resumes at its first missing chunk, and
files of another run are never used.

The callback orchestrates; the jobs are done beside it: the responses by `responses.py`, the iteration files and
their metadata by `iteration_files.py`, prompt selection and its records by `selection.py`, the held-out evidence
(the likelihood inversion and the quantities comparable across iterations, before training and after every iteration)
by `inversion.py`, and the responses of a dataset passed to `evaluate()` by `evaluation.py` (which the trainer calls).
"""

import logging
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from ..checked_io import json_digest
from ..distributed import main_decides
from .identity import RunBinding, SelfPlayError, dataset_digest, run_identity
from .inversion import measure_heldout
from .iteration_files import IterationFiles, iteration_meta
from .responses import ResponseMaker
from .selection import PromptSelection, log_selection, select_prompts


if TYPE_CHECKING:
    from ..clock import IterationPoint
    from ..context import RunContext
    from ..data import TripletDataset
    from ..generation import GenerationStats


logger = logging.getLogger(__name__)


class SelfPlayCallback(TrainerCallback):
    """
    Drives T-SPIN self-play inside one `train()` call. [`TSPINTrainer`] installs it; users never add it themselves.

    Args:
        context ([`~tspin_trl.context.RunContext`]):
            The run's narrow surface (clock, policy, folder, sampler, log-probs, metrics).
        datasets (`dict[str, TripletDataset]`):
            The datasets self-play fills, by name: `"train"`, then `"eval"` or `"eval_<name>"`.

    Attributes:
        identity (`dict[str, Any]`):
            What decides this run's responses and training (see [`run_identity`]); its digest binds every file.
        files ([`IterationFiles`]), responses ([`ResponseMaker`]):
            The run's iteration files and response maker, shared with [`EvaluationResponses`].
        selections (`dict[int, PromptSelection]`):
            The prompt selection of each iteration prepared in this `train()` (training data, prompt selection on).
    """

    def __init__(self, context: "RunContext", datasets: dict[str, "TripletDataset"]):
        self.context = context
        self.datasets = datasets
        self.own_synthetic = {name: dataset.has("synthetic") for name, dataset in datasets.items()}
        # the data as given, before self-play fills anything in (a second `train()` on this object sees it the same)
        self.data_digests = {name: dataset_digest(dataset) for name, dataset in datasets.items()}
        self.files = IterationFiles(context.folder, context.vocab_size)
        self.responses = ResponseMaker(context, self.files)
        self.binding = RunBinding(context.folder)
        self.identity: dict[str, Any] = {}
        self.loaded_iteration: int | None = None
        self.final_measured = False
        self.selections: dict[int, PromptSelection] = {}

    @property
    def identity_digest(self) -> str:
        return self.files.identity_digest

    @property
    def generation_stats(self) -> dict[str, "GenerationStats"]:
        """Statistics of every generation pass of this run, keyed like `"iteration_1/train"` or `"proto/train"`."""
        return self.responses.generation_stats

    @property
    def generate_calls(self) -> int:
        """Number of `generate` calls this process made (zero when everything came from cache or files)."""
        return self.responses.generate_calls

    def compute_identity(self) -> None:
        """The run's identity from the settings as they are now, and its digest for the files (at every `train()`'s
        start, and for an evaluation before any)."""
        self.identity = run_identity(self.context, self.data_digests, self.responses.sampling.to_dict())
        self.files.identity_digest = json_digest(self.identity)

    # ---- schedule events -------------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        context = self.context
        # A second `train()` on this object (a resume after Ctrl-C in a notebook) starts from the data as given
        for dataset in self.datasets.values():
            dataset.restore_given()
        self.loaded_iteration = None
        self.final_measured = False
        self.selections = {}
        self.compute_identity()
        main_decides(
            context.accelerator,
            self.binding.bind,
            self.identity,
            self.identity_digest,
            state.global_step,
            every_writer=True,
            is_writer=args.should_save,
        )
        context.sampler.open()
        # Fill the datasets now, so that evaluation before the first epoch (`eval_on_start`) has triplets too
        self.on_epoch_begin(args, state, control)
        return control

    def on_epoch_begin(self, args, state, control, **kwargs):
        clock = self.context.clock
        iteration = clock.iteration_of_epoch(state.epoch)
        if iteration != self.loaded_iteration:
            self.prepare_iteration(clock.point(iteration, state.global_step))
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        # The last pass happens here, not at `on_train_end` (after the train summary is logged), so that its likelihood
        # inversion rides on the train summary, the last entry of `log_history`.
        ending = control.should_training_stop or self.context.clock.run_is_over(state.epoch)
        if ending and self.loaded_iteration is not None and not self.final_measured:
            self._measure_heldout(self.loaded_iteration, state.global_step, final=True)
            self.final_measured = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.context.sampler.close()
        return control

    # ---- one iteration -------------------------------------------------------------------------------------------

    def prepare_iteration(self, point: "IterationPoint") -> None:
        """Fill every managed dataset with the triplets of `point.iteration` (loaded from its files, or made and
        written) and make it the current iteration."""
        context, iteration = self.context, point.iteration
        for name, dataset in self.datasets.items():
            if not self._load_iteration_file(point, name, dataset):
                self._build_iteration(point, name, dataset)
            dataset.include_proto = "proto" in context.policy.roles_for(iteration)
            selection = self.selections.get(iteration) if name == "train" else None
            dataset.serve(selection.served_rows() if selection is not None else None)
        context.start_iteration(point)
        self.loaded_iteration = iteration
        self._record_start(point)
        # Held-out evidence: with the initial policy before training, and after each iteration with the policy it
        # ended with (not when a resume re-enters an iteration whose training has begun: the policy has moved on)
        if iteration == 0 and point.global_step == 0:
            self._measure_heldout(None, 0)
        elif iteration > 0 and not point.begun:
            self._measure_heldout(iteration - 1, point.global_step)

    def _record_start(self, point: "IterationPoint") -> None:
        """Log the iteration's settings, and record them when it starts here (not when a resume re-enters it)."""
        context, policy, iteration = self.context, self.context.policy, point.iteration
        settings = {
            "alpha": policy.alpha_for(iteration),
            "beta": policy.beta_for(iteration),
            "learning_rate": context.args.learning_rate * policy.learning_rate_scale(iteration),
        }
        logger.info("Self-play iteration %d: %s", iteration, settings)
        if context.args.should_save and not point.begun:
            context.folder.append_iteration_record({"iteration": iteration, "step": point.global_step, **settings})

    def _build_iteration(self, point: "IterationPoint", name: str, dataset: "TripletDataset") -> None:
        """Make the responses (and reference log-probs) `point.iteration` trains on, then write its file."""
        policy, responses, own, iteration = (
            self.context.policy,
            self.responses,
            self.own_synthetic[name],
            point.iteration,
        )
        # the initial policy samples them, so at the start: also when only a later iteration uses them
        needed = policy.needs_proto(iteration, own) or (
            iteration == 0 and policy.proto_needed_in_run(self.context.clock.num_iterations, own)
        )
        if not dataset.has("proto") and needed:
            responses.proto(name, dataset, point)
        if dataset.mix_previous:
            dataset.set_column("previous_synthetic_ids", responses.previous_synthetic(iteration, name, dataset))
        source = policy.synthetic_source(iteration, own)
        if source == "proto":
            dataset.set_column("synthetic_ids", dataset.column("proto_ids"))
        elif source == "policy" and name == "train" and policy.selects_prompts(iteration):
            selection, last_synthetic = select_prompts(self.context, self.files, dataset, point)
            self.selections[iteration] = selection
            sampled = responses.synthetic(point, name, dataset, selection.kept_indices)
            dataset.set_column("synthetic_ids", selection.merged(last_synthetic, sampled))
        elif source == "policy":
            dataset.set_column("synthetic_ids", responses.synthetic(point, name, dataset))
        responses.reference_logps(iteration, dataset)
        self._write_iteration_file(point, name, dataset)

    def _load_iteration_file(self, point: "IterationPoint", name: str, dataset: "TripletDataset") -> bool:
        """Load `point.iteration`'s file into `dataset` when it is there and valid (with its prompt selection, where
        the iteration selects prompts); refuse to go on without it once training on the iteration has begun."""
        files, iteration = self.files, point.iteration
        selecting = name == "train" and self.context.policy.selects_prompts(iteration)

        def decide():
            rows = files.read(iteration, name, len(dataset.examples))
            if rows is not None and selecting:
                selection = PromptSelection.from_rows(rows)
                args = self.context.args
                problem = (
                    "it holds no prompt selection"
                    if selection is None
                    else selection.contradiction(
                        self.context.policy.prompt_selection_threshold, args.prompt_selection_min_share
                    )
                )
                if problem is not None:
                    logger.warning("Ignoring %s: %s.", files.path(iteration, name), problem)
                    rows = None
            if rows is None and point.begun:
                raise SelfPlayError(
                    f"Training of iteration {iteration} has begun, but its responses ({files.path(iteration, name)}) "
                    "are missing, corrupted or not this run's; regenerating them now would sample from a partly "
                    f"trained policy. Restore the file, or resume from the checkpoint taken at the start of iteration "
                    f"{iteration} (or earlier)."
                )
            return rows

        rows = main_decides(self.context.accelerator, decide)
        if rows is None:
            return False
        files.load_into(rows, dataset)
        if selecting:
            self.selections[iteration] = PromptSelection.from_rows(rows)
            log_selection(self.context, iteration, self.selections[iteration])
        logger.info("Self-play iteration %d (%s) loaded from %s.", iteration, name, files.path(iteration, name))
        return True

    def _write_iteration_file(self, point: "IterationPoint", name: str, dataset: "TripletDataset") -> None:
        context = self.context
        if context.args.should_save:  # on separate disks (`save_on_each_node`), every node keeps its copy
            selection = self.selections.get(point.iteration) if name == "train" else None
            summary = selection.summary(context, point.iteration) if selection is not None else None
            meta = iteration_meta(
                context, point, name, self.responses.sampling.to_dict(), self.generation_stats, summary
            )
            row_fields = selection.row_fields if selection is not None else None
            self.files.write_iteration(point.iteration, name, dataset, context.tokenizer, meta, row_fields)
        context.accelerator.wait_for_everyone()

    def _measure_heldout(self, iteration: int | None, global_step: int, final: bool = False) -> None:
        measure_heldout(self.context, self.responses, self.datasets, iteration, global_step, final)
