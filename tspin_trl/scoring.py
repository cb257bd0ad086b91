"""`ScoringCallback`: the user's scorer on held-out prompts, before training and after every iteration."""

import logging
import math
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from transformers import TrainerCallback

from .data import TripletTokenizer
from .distributed import main_decides
from .generation import SamplingSettings


if TYPE_CHECKING:
    from .context import RunContext


logger = logging.getLogger(__name__)


class ScoringCallback(TrainerCallback):
    """
    Greedy responses of the current policy to held-out prompts, scored by a user function, before training
    (`"start"`) and after every iteration (`"iteration_<t>"`). [`TSPINTrainer`] installs it when given a `scorer`.

    Each score is logged as `self_play/score` (with the next training entry, or the train summary) and written with
    the responses to `output_dir/self_play/scores.jsonl`.
    A scorer that raises does not stop training: the error is logged with the scorer's name and recorded in
    `scores.jsonl`, and the iteration's checkpoint is still saved. A score that is not a finite number is recorded
    with a warning.

    Args:
        context ([`~tspin_trl.context.RunContext`]):
            The run (sampler, clock, folder, metrics).
        scorer (`Callable[[list[str], list[dict]], float]`):
            Called with the decoded responses and the dataset's rows; returns a score.
        scorer_dataset ([`~datasets.Dataset`]):
            Held-out rows with a `prompt` column (text or messages).
        triplet_tokenizer ([`TripletTokenizer`]):
            Tokenizes prompts exactly as training does.
    """

    def __init__(
        self,
        context: "RunContext",
        scorer: Callable[[list[str], list[dict[str, Any]]], float] | None,
        scorer_dataset: Dataset | None,
        triplet_tokenizer: TripletTokenizer,
    ):
        if scorer is None or scorer_dataset is None:
            raise ValueError("Pass both `scorer` and `scorer_dataset` (held-out prompts for the scorer), or neither.")
        if "prompt" not in scorer_dataset.column_names:
            raise ValueError(
                f"`scorer_dataset` needs a 'prompt' column (text or messages); it has {scorer_dataset.column_names}."
            )
        self.context = context
        self.scorer = scorer
        self.rows = list(scorer_dataset)
        self.prompts = [
            triplet_tokenizer.encode_prompt(row["prompt"], index)[1] for index, row in enumerate(self.rows)
        ]
        self.scores: list[dict[str, Any]] = []

    def _recorded(self) -> dict[str, tuple[int, float]]:
        """The scores recorded before (a resumed run), by label: their step and score; read by the main process,
        whose file is the reference (every process must agree: scoring generates on all of them)."""
        folder = self.context.folder

        def read() -> dict[str, tuple[int, float]]:
            return {
                r["label"]: (int(r.get("step", 0)), float(r.get("score", float("nan"))))
                for r in folder.scores()
                if isinstance(r.get("label"), str)
            }

        return main_decides(self.context.accelerator, read)

    @staticmethod
    def _iteration_of(label: str) -> int | None:
        return None if label == "start" else int(label.removeprefix("iteration_"))

    def on_train_begin(self, args, state, control, **kwargs):
        recorded = self._recorded()
        # A resume logs again the scores measured up to its step: the metrics log keeps only those the checkpoint it
        # resumed from had not logged yet (measured after it was saved), so none is lost and none is logged twice.
        for label, (step, value) in recorded.items():
            if step <= state.global_step:
                self.context.metrics.log_now({"self_play/score": value}, self._iteration_of(label))
        if "start" not in recorded:
            self.score("start", state.global_step)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        clock = self.context.clock
        if clock.is_iteration_end(state.global_step):
            label = f"iteration_{clock.iteration_of_step(state.global_step)}"
            recorded = self._recorded().get(label)
            if recorded is None:
                self.score(label, state.global_step)
            else:  # scored by the run this one resumes, after the checkpoint it resumed from
                self.context.metrics.log_now({"self_play/score": recorded[1]}, self._iteration_of(label))
        return control

    def score(self, label: str, global_step: int) -> float:
        """Score the greedy responses of the current policy; `nan` when the scorer fails (the error is logged)."""
        context, args = self.context, self.context.args
        responses, _ = context.sampler.generate(
            self.prompts,
            SamplingSettings.greedy(args.max_completion_length),
            description=f"Scoring ({label})",
        )
        texts = [context.tokenizer.decode(ids, skip_special_tokens=True) for ids in responses]
        record: dict[str, Any] = {"label": label, "step": global_step}
        name = getattr(self.scorer, "__qualname__", type(self.scorer).__name__)
        try:
            value = float(self.scorer(texts, self.rows))
        except Exception as error:  # a user function: report whatever it raised, keep training and the checkpoint
            value = float("nan")
            record["error"] = f"{type(error).__name__}: {error}"
            logger.error(
                "The scorer %s raised %s at %s; the score is recorded as NaN and training continues.\n%s",
                name,
                record["error"],
                label,
                traceback.format_exc(),
            )
        if not math.isfinite(value) and "error" not in record:
            logger.warning("The scorer %s returned %r at %s (not a finite number).", name, value, label)
        record["score"] = value
        self.scores.append(record)
        iteration = None if label == "start" else context.clock.current
        context.metrics.log_now({"self_play/score": value}, iteration)
        if args.should_save:
            context.folder.append_score(record | {"responses": texts})
            logger.info("Score %s: %.4f", label, value)
        return value
