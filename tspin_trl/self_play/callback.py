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
"""

import logging
import time
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from ..checked_io import json_digest
from ..distributed import main_decides
from .identity import RunBinding, SelfPlayError, dataset_digest, run_identity
from .inversion import measure_inversion
from .iteration_files import IterationFiles
from .responses import ResponseMaker
from .selection import PromptSelection, score_last_pairs


if TYPE_CHECKING:
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
        #: The prompt selection of each iteration prepared in this `train()` (training data, prompt selection on).
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

    # ---- schedule events -------------------------------------------------------------------------------------------

    def _compute_identity(self) -> None:
        self.identity = run_identity(self.context, self.data_digests, self.responses.sampling.to_dict())
        self.files.identity_digest = json_digest(self.identity)

    def on_train_begin(self, args, state, control, **kwargs):
        context = self.context
        # A second `train()` on this object (a resume after Ctrl-C in a notebook) starts from the data as given
        for dataset in self.datasets.values():
            dataset.restore_given()
        self.loaded_iteration = None
        self.final_measured = False
        self.selections = {}
        self._compute_identity()
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
        iteration = self.context.clock.iteration_of_epoch(state.epoch)
        if iteration != self.loaded_iteration:
            self.prepare_iteration(iteration, state.global_step)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        # The last pass happens here, not at `on_train_end`, so that the train summary (`train_loss`, `train_runtime`)
        # stays the last line of `log_history`, as scripts and notebooks expect.
        ending = control.should_training_stop or self.context.clock.run_is_over(state.epoch)
        if ending and self.loaded_iteration is not None and not self.final_measured:
            self._measure_inversion(self.loaded_iteration, state.global_step, final=True)
            self.final_measured = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.context.sampler.close()
        return control

    # ---- one iteration -------------------------------------------------------------------------------------------

    def prepare_iteration(self, iteration: int, global_step: int) -> None:
        """Fill every managed dataset with the triplets of `iteration` and make it the trainer's iteration."""
        context = self.context
        policy = context.policy
        for name, dataset in self.datasets.items():
            if not self._load_iteration_file(iteration, global_step, name, dataset):
                self._build_iteration(iteration, global_step, name, dataset)
            dataset.include_proto = "proto" in policy.roles_for(iteration)
            selection = self.selections.get(iteration) if name == "train" else None
            dataset.serve(selection.served_rows() if selection is not None else None)
        context.start_iteration(context.clock.point(iteration, global_step))
        self.loaded_iteration = iteration
        settings = {
            "alpha": policy.alpha_for(iteration),
            "beta": policy.beta_for(iteration),
            "learning_rate": context.args.learning_rate * policy.learning_rate_scale(iteration),
        }
        logger.info("Self-play iteration %d: %s", iteration, settings)
        if context.args.should_save and not context.clock.has_begun(iteration, global_step):
            context.folder.append_iteration_record({"iteration": iteration, "step": global_step, **settings})
        if iteration > 0:
            self._measure_inversion(iteration - 1, global_step)

    def _build_iteration(self, iteration: int, global_step: int, name: str, dataset: "TripletDataset") -> None:
        policy, responses, own = self.context.policy, self.responses, self.own_synthetic[name]
        # the initial policy samples them, so at the start: also when only a later iteration uses them
        needed = policy.needs_proto(iteration, own) or (
            iteration == 0 and policy.proto_needed_in_run(self.context.clock.num_iterations, own)
        )
        if not dataset.has("proto") and needed:
            responses.proto(name, dataset, iteration, global_step)
        if dataset.mix_previous:
            dataset.set_column("previous_synthetic_ids", responses.previous_synthetic(iteration, name, dataset))
        source = policy.synthetic_source(iteration, self.own_synthetic[name])
        if source == "proto":
            dataset.set_column("synthetic_ids", dataset.column("proto_ids"))
        elif source == "policy" and name == "train" and policy.selects_prompts(iteration):
            selection, synthetic = self._select_prompts(iteration, global_step, dataset)
            sampled = responses.synthetic(iteration, global_step, name, dataset, selection.kept_indices)
            for index, response in zip(selection.kept_indices, sampled, strict=True):
                synthetic[index] = response  # a skipped prompt keeps its last synthetic response
            dataset.set_column("synthetic_ids", synthetic)
        elif source == "policy":
            dataset.set_column("synthetic_ids", responses.synthetic(iteration, global_step, name, dataset))
        responses.reference_logps(iteration, dataset)
        self._write_iteration_file(iteration, global_step, name, dataset)

    def _select_prompts(
        self, iteration: int, global_step: int, dataset: "TripletDataset"
    ) -> tuple[PromptSelection, list[list[int]]]:
        """Decide which prompts `iteration` keeps, from every prompt's last pair (in the previous iteration's file)
        scored by the current policy; log and record the counts. Returns the selection and the last synthetic
        responses."""
        context, files = self.context, self.files
        args, policy = context.args, context.policy
        rows = main_decides(context.accelerator, files.read, iteration - 1, "train", len(dataset.examples))
        if rows is None:
            raise SelfPlayError(
                f"Prompt selection judges each prompt by its last pair, kept in iteration {iteration - 1}'s file "
                f"({files.path(iteration - 1, 'train')}), which is missing or invalid. Restore it, or resume from a "
                f"checkpoint taken before iteration {iteration - 1} began."
            )
        synthetic = [row["synthetic_ids"] for row in rows]
        start = time.perf_counter()
        margins = score_last_pairs(context, dataset, synthetic, policy.alpha_for(iteration))
        selection = PromptSelection.decide(margins, policy.prompt_selection_threshold, args.prompt_selection_min_share)
        self.selections[iteration] = selection
        seconds = time.perf_counter() - start
        counts = {"prompts_kept": selection.num_kept, "prompts_skipped": selection.num_skipped}
        logger.info(
            "Self-play iteration %d: %d prompts kept, %d skipped (scaled current advantage above %s), scored in %.1f s.",
            iteration,
            selection.num_kept,
            selection.num_skipped,
            policy.prompt_selection_threshold,
            seconds,
        )
        line = {f"self_play/{key}": float(value) for key, value in counts.items()}
        context.metrics.log_now(line | {"self_play/prompt_selection_seconds": seconds}, iteration)
        if args.should_save:
            context.folder.append_iteration_record(
                {"iteration": iteration, "step": global_step, **counts, "prompt_selection_seconds": seconds}
            )
        return selection, synthetic

    def _load_iteration_file(self, iteration: int, global_step: int, name: str, dataset: "TripletDataset") -> bool:
        files, clock = self.files, self.context.clock
        selecting = name == "train" and self.context.policy.selects_prompts(iteration)

        def decide():
            rows = files.read(iteration, name, len(dataset.examples))
            if rows is not None and selecting and PromptSelection.from_rows(rows) is None:
                logger.warning("Ignoring %s: it holds no prompt selection.", files.path(iteration, name))
                rows = None
            if rows is None and clock.has_begun(iteration, global_step):
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
        logger.info("Self-play iteration %d (%s) loaded from %s.", iteration, name, files.path(iteration, name))
        return True

    def _write_iteration_file(self, iteration: int, global_step: int, name: str, dataset: "TripletDataset") -> None:
        context = self.context
        if context.args.should_save:  # on separate disks (`save_on_each_node`), every node keeps its copy
            meta = {
                "global_step": global_step,
                "sampling": self.responses.sampling.to_dict(),
                "seed": context.args.seed,
                "objective": context.args.objective,
                "alpha": context.policy.alpha_for(iteration),
                "beta": context.policy.beta_for(iteration),
                "generation": {k: v.to_dict() for k, v in self.generation_stats.items() if name in k},
            }
            rows = self.files.rows_of(dataset, context.tokenizer)
            selection = self.selections.get(iteration) if name == "train" else None
            if selection is not None:
                for index, row in enumerate(rows):
                    row.update(selection.row_fields(index))
                meta["prompt_selection"] = {
                    "threshold": context.policy.prompt_selection_threshold,
                    "min_share": context.args.prompt_selection_min_share,
                    "alpha": context.policy.alpha_for(iteration),
                    "kept": selection.num_kept,
                    "skipped": selection.num_skipped,
                }
            self.files.write(iteration, name, rows, meta)
        context.accelerator.wait_for_everyone()

    # ---- a dataset passed to `evaluate()` ----------------------------------------------------------------------------

    def prepare_for_evaluation(self, name: str, dataset: "TripletDataset", global_step: int) -> None:
        """Fill a dataset passed to `evaluate()` with the responses of an evaluation at this point of the run.

        Synthetic responses come from the policy as it is now (before training: the proto responses, which the initial
        policy sampled), unless the dataset brings its own; proto-synthetic responses from the dataset, the proto cache
        (where the same prompts were sampled before) or, before any training, the initial policy. After training has
        begun a proto response that exists nowhere cannot be sampled any more (the initial policy is gone): that
        evaluation is refused with a `SelfPlayError` naming the fix, as `DPOTrainer` refuses a set it cannot score. Reference log-probs (SPIN, T-SPIN_ref) are those
        of the current policy. The responses are written to `self_play/evaluate/step_<s>/<name>-<digest>.jsonl`, bound
        to the run's identity, and read back when the same data is evaluated again at the same step.
        """
        context, responses, files = self.context, self.responses, self.files
        if not files.identity_digest:
            self._compute_identity()
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
                    responses.proto(key, dataset, 0 if untrained else iteration, global_step)
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

    def _measure_inversion(self, iteration: int, global_step: int, final: bool = False) -> None:
        measure_inversion(self.context, self.responses, self.datasets, iteration, global_step, final)
