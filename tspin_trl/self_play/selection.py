"""Prompt selection (opt-in, `prompt_selection_threshold`): which prompts an iteration regenerates and trains on.

The paper regenerates every prompt in every iteration, even those whose pairs no longer teach anything. With prompt
selection, before iteration `t >= 1` is generated, every prompt's *last pair* (its real response `y` and its latest
synthetic response `y'`, sampled in the last iteration that kept the prompt) is scored by the policy about to sample
iteration `t`, in one forward pass without gradients:

    margin_i = alpha_t * (logp(y_i) - logp(y'_i))        # the scaled current advantage, as the loss sees it

A prompt whose margin is above the threshold is skipped: its current-term loss would be below `l(threshold)`
(4.5e-5 at 10 for the logistic loss), so its gradient is negligible. A skipped prompt is neither regenerated nor
trained on in iteration `t`; it keeps its last synthetic response, and is judged again before the next iteration. At
least `ceil(min_share * N)` prompts are kept: when fewer are below the threshold, the least saturated of the others
(lowest margin first, then lowest index) are kept too.

The length rule: the training set keeps its `N` rows (and so every iteration its number of steps, which transformers
fixes when `train()` starts). The rows of skipped prompts serve kept prompts instead: the j-th skipped row (in index
order) serves the `(j mod K)`-th of the `K` kept prompts ordered by margin (least saturated first), so the extra
repetitions go to the prompts that teach most. Generation is saved; training time is not (see docs/self_play.md).

The decisions (`selected`, `selection_margin`) are stored with every row of the iteration file, so a resume trains on
exactly the rows the interrupted run did; a file whose flags are not what the threshold makes of its margins is not
used.
"""

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..data import TripletDataset
from ..distributed import main_decides
from .identity import SelfPlayError


if TYPE_CHECKING:
    from ..clock import IterationPoint
    from ..context import RunContext
    from .iteration_files import IterationFiles


logger = logging.getLogger(__name__)


# What an iteration file keeps of each row's selection
SELECTION_COLUMNS = ("selected", "selection_margin")


@dataclass(frozen=True)
class PromptSelection:
    """
    The prompts one iteration keeps, and the margins that decided it.

    Args:
        margins (`tuple[float, ...]`):
            The scaled current advantage of every prompt's last pair, in prompt order.
        kept (`tuple[bool, ...]`):
            Whether each prompt is regenerated and trained on.

    Example:

    ```python
    >>> from tspin_trl.self_play.selection import PromptSelection

    >>> selection = PromptSelection.decide([12.0, 3.0, 15.0, 11.0], threshold=10.0, min_share=0.5)
    >>> selection.kept, selection.num_kept, selection.num_skipped
    ((False, True, False, True), 2, 2)
    >>> selection.served_rows()  # rows 0 and 2 serve the kept prompts, least saturated first
    [1, 1, 3, 3]
    ```
    """

    margins: tuple[float, ...]
    kept: tuple[bool, ...]

    @classmethod
    def decide(cls, margins: Sequence[float], threshold: float, min_share: float) -> "PromptSelection":
        """Keep the prompts whose margin is not above `threshold` (a NaN margin is kept), then, if fewer than
        `ceil(min_share * N)` are kept, the least saturated of the others (lowest margin, then lowest index)."""
        margins = tuple(float(m) for m in margins)
        kept = [not m > threshold for m in margins]
        floor = max(1, math.ceil(min_share * len(margins) - 1e-9)) if margins else 0
        missing = floor - sum(kept)
        if missing > 0:
            skipped = sorted((i for i, k in enumerate(kept) if not k), key=lambda i: (margins[i], i))
            for i in skipped[:missing]:
                kept[i] = True
        return cls(margins, tuple(kept))

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> "PromptSelection | None":
        """The selection stored in an iteration file's rows, or `None` when the rows hold none (or an invalid one)."""
        if not rows or not all(
            isinstance(row.get("selected"), bool)
            and isinstance(row.get("selection_margin"), (int, float))
            and not isinstance(row.get("selection_margin"), bool)
            for row in rows
        ):
            return None
        selection = cls(tuple(float(row["selection_margin"]) for row in rows), tuple(row["selected"] for row in rows))
        return selection if selection.num_kept > 0 else None

    def contradiction(self, threshold: float, min_share: float) -> str | None:
        """Where these flags differ from what [`decide`] makes of these margins (a forged or damaged iteration file: a
        resume would train on other prompts than the interrupted run did), or `None`."""
        expected = PromptSelection.decide(self.margins, threshold, min_share).kept
        rows = [i for i, (stored, decided) in enumerate(zip(self.kept, expected, strict=True)) if stored != decided]
        if not rows:
            return None
        shown = ", ".join(f"{i} ({self.margins[i]:g}: {'kept' if self.kept[i] else 'skipped'})" for i in rows[:5])
        return (
            f"its prompt selection contradicts its margins (threshold {threshold:g}, min_share {min_share:g}) in "
            f"{len(rows)} rows: {shown}"
        )

    @property
    def num_kept(self) -> int:
        return sum(self.kept)

    @property
    def num_skipped(self) -> int:
        return len(self.kept) - self.num_kept

    @property
    def kept_indices(self) -> list[int]:
        return [i for i, k in enumerate(self.kept) if k]

    def served_rows(self) -> list[int]:
        """For each prompt's row, the prompt it serves: itself when kept; for the j-th skipped row, the (j mod K)-th
        kept prompt in order of margin (least saturated first, then index)."""
        fill = sorted(self.kept_indices, key=lambda i: (self.margins[i], i))
        served, j = [], 0
        for i, keep in enumerate(self.kept):
            if keep:
                served.append(i)
            else:
                served.append(fill[j % len(fill)])
                j += 1
        return served

    def row_fields(self, index: int) -> dict[str, Any]:
        """What the iteration file stores of prompt `index`'s selection."""
        return {"selected": self.kept[index], "selection_margin": self.margins[index]}

    def summary(self, context: "RunContext", iteration: int) -> dict[str, Any]:
        """What the iteration file's sidecar records of the selection: its settings and counts."""
        return {
            "threshold": context.policy.prompt_selection_threshold,
            "min_share": context.args.prompt_selection_min_share,
            "alpha": context.policy.alpha_for(iteration),
            "kept": self.num_kept,
            "skipped": self.num_skipped,
        }

    def merged(self, last_synthetic: list[list[int]], sampled: list[list[int]]) -> list[list[int]]:
        """Every prompt's synthetic response for the iteration: `sampled` (in the order of [`kept_indices`]) for the
        kept prompts; a skipped prompt keeps its last one. Fills `last_synthetic` in place and returns it."""
        for index, response in zip(self.kept_indices, sampled, strict=True):
            last_synthetic[index] = response
        return last_synthetic


def score_last_pairs(
    context: "RunContext", dataset: TripletDataset, last_synthetic: list[list[int]], alpha: float
) -> list[float]:
    """The scaled current advantage `alpha * (logp(y) - logp(y'))` of every prompt's last pair under the current
    policy: one forward pass per batch, no gradients, sharded over processes (collective)."""
    probe = TripletDataset(
        [
            {"prompt_ids": example["prompt_ids"], "real_ids": example["real_ids"], "synthetic_ids": synthetic}
            for example, synthetic in zip(dataset.examples, last_synthetic, strict=True)
        ]
    )
    logps = context.compute_logps(probe, ("real", "synthetic"))
    return [alpha * (real - synthetic) for real, synthetic in zip(logps["real"], logps["synthetic"], strict=True)]


def log_selection(
    context: "RunContext", iteration: int, selection: PromptSelection, seconds: float | None = None
) -> None:
    """Log an iteration's prompt-selection counts (`self_play/prompts_kept`, `self_play/prompts_skipped`) and, when it
    was scored in this process, the scoring time (`self_play/prompt_selection_seconds`). A resume that loads the
    selection from the iteration's file logs its counts again; the metrics log keeps them once."""
    line = {
        "self_play/prompts_kept": float(selection.num_kept),
        "self_play/prompts_skipped": float(selection.num_skipped),
    }
    if seconds is not None:
        line["self_play/prompt_selection_seconds"] = seconds
    context.metrics.log_now(line, iteration)


def select_prompts(
    context: "RunContext", files: "IterationFiles", dataset: TripletDataset, point: "IterationPoint"
) -> tuple[PromptSelection, list[list[int]]]:
    """Decide which prompts `point.iteration` keeps, from every prompt's last pair (in the previous iteration's file)
    scored by the current policy; log the counts and record them in the run's per-iteration records. Returns the
    selection and every prompt's last synthetic response (collective)."""
    args, policy, iteration = context.args, context.policy, point.iteration
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
    log_selection(context, iteration, selection, seconds)
    if args.should_save:
        context.folder.append_iteration_record(
            {"iteration": iteration, "step": point.global_step, **counts, "prompt_selection_seconds": seconds}
        )
    return selection, synthetic
