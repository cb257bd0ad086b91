"""`ScoringCallback`: a task score of the greedy responses to held-out prompts, before training and after every
iteration.

The score comes from reward functions in TRL's `reward_funcs` shape, as `GRPOTrainer` calls them: a callable (or a
list of callables) `f(prompts, completions, completion_ids, **columns) -> list[float | None]`, given the held-out
prompts as the dataset has them, one completion per prompt (text, or `[{"role": "assistant", "content": ...}]` for
conversational prompts), their token ids, every other column of the dataset by name (a list per column, the reference
answer included), and GRPO's `trainer_state`, `log_extra` and `log_metric`. Several functions are summed per response
(`None` is skipped, as GRPO does) and the score is the mean over prompts; each function's mean is logged too when there
are several.

The older shape, `scorer(responses, rows) -> float` (the decoded responses and the dataset's rows, one number per
evaluation), still works; it gives no per-prompt values, so the run's verdict can put no interval on its changes.
"""

import inspect
import logging
import math
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from transformers import TrainerCallback
from trl.data_utils import is_conversational

from .data import TripletTokenizer
from .distributed import main_decides
from .generation import SamplingSettings


if TYPE_CHECKING:
    from .context import RunContext


logger = logging.getLogger(__name__)

RewardFunc = Callable[..., Sequence[float | None]]
"""A reward function in TRL's shape: `f(prompts, completions, completion_ids, **columns) -> list[float | None]`."""
Scorer = Callable[[list[str], list[dict[str, Any]]], float]
"""The older scorer shape: `scorer(responses, rows) -> float`."""


def function_name(function: Any) -> str:
    """The name a scoring function is logged under (its `__name__`, as GRPO names its reward functions)."""
    return getattr(function, "__name__", None) or type(function).__name__


def checked_reward_funcs(reward_funcs: RewardFunc | Sequence[RewardFunc] | None) -> dict[str, RewardFunc]:
    """
    `reward_funcs` as `{name: function}`, checked: callables only (a reward model given by name or as a model is
    GRPO's, not supported here), synchronous ones. A name used twice gets a suffix (`_2`, `_3`, ...).

    Raises:
        `TypeError`: naming the entry that is not a synchronous callable, and the fix.
    """
    if reward_funcs is None:
        return {}
    functions = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if not functions:
        raise ValueError("`reward_funcs` is an empty list: give at least one function, or leave it unset.")
    named: dict[str, RewardFunc] = {}
    for index, function in enumerate(functions):
        if isinstance(function, str) or not callable(function) or hasattr(function, "config"):
            raise TypeError(
                f"`reward_funcs[{index}]` is {type(function).__name__}: TSPINTrainer scores held-out responses with "
                "functions only, `f(prompts, completions, **columns) -> list[float]` (reward models, as GRPOTrainer "
                "loads them, are not supported). Wrap the model in such a function."
            )
        if inspect.iscoroutinefunction(function):
            raise TypeError(
                f"`reward_funcs[{index}]` ({function_name(function)}) is an async function: pass a synchronous one "
                "(e.g. a wrapper that calls `asyncio.run`)."
            )
        name, suffix = function_name(function), 2
        while name in named:
            name, suffix = f"{function_name(function)}_{suffix}", suffix + 1
        named[name] = function
    return named


def _nanmean(values: Sequence[float]) -> float:
    kept = [value for value in values if not math.isnan(value)]
    return sum(kept) / len(kept) if kept else float("nan")


class ScoringCallback(TrainerCallback):
    """
    Greedy responses of the current policy to held-out prompts, scored before training (`"start"`) and after every
    iteration (`"iteration_<t>"`). [`TSPINTrainer`] installs it when given `reward_funcs` or a `scorer`.

    Each score is logged as `self_play/score` (and `self_play/score/<function>` for each of several reward functions),
    with the next training entry or the train summary, and written with the responses to `output_dir/self_play/scores.jsonl` (with reward functions, also the per-prompt
    rewards). A function that raises does not stop training: the error is logged with its name and recorded in
    `scores.jsonl`, its rewards count as missing, and the iteration's checkpoint is still saved. A score that is not a
    finite number is recorded with a warning.

    Args:
        context ([`~tspin_trl.context.RunContext`]):
            The run (sampler, clock, folder, metrics).
        scorer (`Callable[[list[str], list[dict]], float]`, *optional*):
            The older shape: called with the decoded responses and the dataset's rows; returns one score.
        scorer_dataset ([`~datasets.Dataset`]):
            Held-out rows with a `prompt` column (text or messages).
        triplet_tokenizer ([`TripletTokenizer`]):
            Tokenizes prompts exactly as training does.
        reward_funcs (`RewardFunc` or `list[RewardFunc]`, *optional*):
            TRL's shape (see the module's docstring); give these or `scorer`.
    """

    def __init__(
        self,
        context: "RunContext",
        scorer: Scorer | None,
        scorer_dataset: Dataset | None,
        triplet_tokenizer: TripletTokenizer,
        reward_funcs: RewardFunc | Sequence[RewardFunc] | None = None,
    ):
        if scorer is not None and reward_funcs is not None:
            raise ValueError(
                "Pass `reward_funcs` (TRL's shape: per-response rewards) or `scorer` (the older shape: one number per "
                "evaluation), not both."
            )
        if (scorer is None and reward_funcs is None) or scorer_dataset is None:
            raise ValueError(
                "Pass `reward_funcs` (or `scorer`) and `scorer_dataset` (held-out prompts to score; the evaluation "
                "dataset is used when there is one with a 'prompt' column), or neither."
            )
        if "prompt" not in scorer_dataset.column_names:
            raise ValueError(
                f"`scorer_dataset` needs a 'prompt' column (text or messages); it has {scorer_dataset.column_names}."
            )
        self.context = context
        self.scorer = scorer
        self.reward_funcs = checked_reward_funcs(reward_funcs)
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
            self.score("start", state.global_step, state)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        clock = self.context.clock
        if clock.is_iteration_end(state.global_step):
            label = f"iteration_{clock.iteration_of_step(state.global_step)}"
            recorded = self._recorded().get(label)
            if recorded is None:
                self.score(label, state.global_step, state)
            else:  # scored by the run this one resumes, after the checkpoint it resumed from
                self.context.metrics.log_now({"self_play/score": recorded[1]}, self._iteration_of(label))
        return control

    def score(self, label: str, global_step: int, state: Any = None) -> float:
        """Score the greedy responses of the current policy; `nan` when nothing could be scored (errors are logged)."""
        context, args = self.context, self.context.args
        responses, _ = context.sampler.generate(
            self.prompts,
            SamplingSettings.greedy(args.max_completion_length),
            description=f"Scoring ({label})",
        )
        texts = [context.tokenizer.decode(ids, skip_special_tokens=True) for ids in responses]
        record: dict[str, Any] = {"label": label, "step": global_step}
        logged: dict[str, float] = {}
        if self.reward_funcs:
            value = self._rewards(texts, responses, state, record, logged)
        else:
            value = self._legacy_score(texts, label, record)
        if not math.isfinite(value) and "error" not in record:
            names = ", ".join(self.reward_funcs) or getattr(self.scorer, "__qualname__", type(self.scorer).__name__)
            logger.warning("The scorer %s returned %r at %s (not a finite number).", names, value, label)
        record["score"] = value
        self.scores.append(record)
        iteration = None if label == "start" else context.clock.current
        context.metrics.log_now({"self_play/score": value, **logged}, iteration)
        if args.should_save:
            context.folder.append_score(record | {"responses": texts})
            logger.info("Score %s: %.4f", label, value)
        return value

    def _legacy_score(self, texts: list[str], label: str, record: dict[str, Any]) -> float:
        name = getattr(self.scorer, "__qualname__", type(self.scorer).__name__)
        try:
            return float(self.scorer(texts, self.rows))
        except Exception as error:  # a user function: report whatever it raised, keep training and the checkpoint
            record["error"] = f"{type(error).__name__}: {error}"
            self._log_error(name, record["error"], label)
            return float("nan")

    def _rewards(
        self,
        texts: list[str],
        completion_ids: list[list[int]],
        state: Any,
        record: dict[str, Any],
        logged: dict[str, float],
    ) -> float:
        """Call every reward function as GRPO does; record the per-prompt rewards; return the mean summed reward."""
        prompts = [row["prompt"] for row in self.rows]
        completions: list[Any] = (
            [[{"role": "assistant", "content": text}] for text in texts]
            if is_conversational({"prompt": prompts[0]})
            else texts
        )
        metrics: dict[str, float] = {}
        extra: dict[str, list[Any]] = {}
        columns = {
            key: [row[key] for row in self.rows] for key in self.rows[0] if key not in ("prompt", "completion_ids")
        }
        kwargs = columns | {
            "trainer_state": state,
            "log_extra": lambda column, values: extra.__setitem__(column, list(values)),
            "log_metric": lambda name, value: metrics.__setitem__(name, float(value)),
        }
        rewards: dict[str, list[float]] = {}
        errors: dict[str, str] = {}
        for name, function in self.reward_funcs.items():
            try:
                output = function(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
                values = [math.nan if reward is None else float(reward) for reward in output]
                if len(values) != len(prompts):
                    raise ValueError(f"it returned {len(values)} rewards for {len(prompts)} completions")
            except Exception as error:  # a user function: report whatever it raised, keep training and the checkpoint
                errors[name] = f"{type(error).__name__}: {error}"
                self._log_error(name, errors[name], record["label"])
                values = [math.nan] * len(prompts)
            rewards[name] = values
        per_prompt = [
            math.nan if all(math.isnan(v) for v in values) else sum(v for v in values if not math.isnan(v))
            for values in zip(*rewards.values(), strict=True)
        ]
        record["per_prompt"] = per_prompt
        record["scores"] = {name: _nanmean(values) for name, values in rewards.items()}
        if len(rewards) > 1:
            record["rewards"] = rewards
            logged.update({f"self_play/score/{name}": value for name, value in record["scores"].items()})
        if metrics:
            record["metrics"] = metrics
            logged.update({f"self_play/{name}": value for name, value in metrics.items()})
        if extra:
            record["extra"] = extra
        if errors:
            record["error"] = "; ".join(f"{name}: {text}" for name, text in errors.items())
        return _nanmean(per_prompt)

    @staticmethod
    def _log_error(name: str, error: str, label: str) -> None:
        logger.error(
            "The scorer %s raised %s at %s; its score is recorded as missing (NaN) and training continues.\n%s",
            name,
            error,
            label,
            traceback.format_exc(),
        )
