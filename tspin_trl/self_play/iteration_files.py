"""Iteration files: the responses (and reference log-probs) each iteration trains on, read, validated and written.

`self_play/iteration_<t>/<name>.jsonl` holds one row per example (the texts people read, and the token ids and
log-probs training uses); its sidecar holds the checksum, the count, the run's identity digest and what made the
responses ([`iteration_meta`]). A file is used only when it is intact, belongs to this run and iteration, and holds
valid token ids and finite log-probs.
"""

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..checked_io import read_checked_jsonl, valid_token_ids, write_checked_jsonl


if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..clock import IterationPoint
    from ..context import RunContext
    from ..data import TripletDataset
    from ..generation import GenerationStats
    from ..run_folder import RunFolder


logger = logging.getLogger(__name__)

# What an iteration file keeps of each example besides the texts, and gives back on resume
ITERATION_COLUMNS = (
    "synthetic_ids",
    "proto_ids",
    "previous_synthetic_ids",
    "ref_real_logps",
    "ref_synthetic_logps",
    "ref_proto_logps",
    "ref_previous_synthetic_logps",
)


class IterationFiles:
    """
    Reads and writes the iteration files of one run.

    Args:
        folder ([`~tspin_trl.run_folder.RunFolder`]):
            The run folder.
        vocab_size (`int`):
            Stored token ids must lie in `[0, vocab_size)`.
        identity_digest (`str`, *optional*):
            The run's identity digest (set when `train()` starts); files carrying another are not this run's.
    """

    def __init__(self, folder: "RunFolder", vocab_size: int, identity_digest: str = ""):
        self.folder = folder
        self.vocab_size = vocab_size
        self.identity_digest = identity_digest

    def paths(self, iteration: int, name: str, step: int | None = None) -> tuple[str, str]:
        """An iteration's files, or with `step` those of a dataset passed to `evaluate()` at that step."""
        if step is None:
            return self.folder.iteration_files(iteration, name)
        return self.folder.evaluation_files(step, name)

    def path(self, iteration: int, name: str, step: int | None = None) -> str:
        return self.paths(iteration, name, step)[0]

    def read(
        self, iteration: int, name: str, num_examples: int, step: int | None = None
    ) -> list[dict[str, Any]] | None:
        """The rows of an iteration file (or an evaluation file of `step`) if it is intact, belongs to this run and
        iteration, and holds valid token ids and finite log-probs; `None` (with a warning when a file was there)
        otherwise."""
        data_path, meta_path = self.paths(iteration, name, step)
        entry = read_checked_jsonl(data_path, meta_path)
        if entry is None:
            return None
        rows, meta = entry
        problem = None
        if meta.get("identity") != self.identity_digest:
            problem = "it belongs to another run (its identity differs)"
        elif meta.get("iteration") != iteration or len(rows) != num_examples:
            problem = f"it holds iteration {meta.get('iteration')} with {len(rows)} rows"
        elif step is not None and meta.get("global_step") != step:
            problem = f"it was written at step {meta.get('global_step')}"
        else:
            problem = next((p for p in map(self._row_problem, rows) if p is not None), None)
        if problem is not None:
            logger.warning("Ignoring %s: %s.", data_path, problem)
            return None
        return rows

    def _row_problem(self, row: Any) -> str | None:
        if not isinstance(row, dict):
            return "a row is not a JSON object"
        bad = [
            k
            for k in ITERATION_COLUMNS
            if k in row and k.endswith("_ids") and not valid_token_ids(row[k], self.vocab_size)
        ]
        bad += [
            k
            for k in ITERATION_COLUMNS
            if k in row and k.endswith("_logps") and not (isinstance(row[k], (int, float)) and math.isfinite(row[k]))
        ]
        return f"row {row.get('index')} has invalid {bad}" if bad else None

    @staticmethod
    def load_into(rows: list[dict[str, Any]], dataset: "TripletDataset") -> None:
        """Put the stored columns of `rows` back into `dataset`."""
        for key in ITERATION_COLUMNS:
            if all(key in row for row in rows):
                dataset.set_column(key, [row[key] for row in rows])

    @staticmethod
    def rows_of(dataset: "TripletDataset", tokenizer: "PreTrainedTokenizerBase") -> list[dict[str, Any]]:
        """The rows of an iteration file for `dataset`: texts to read, and the columns training uses."""
        rows = []
        for index, example in enumerate(dataset.examples):
            row = {"index": index, "prompt": example["prompt_text"], "real": example["real_text"]}
            for role in ("synthetic", "proto"):
                if f"{role}_ids" in example:
                    row[role] = tokenizer.decode(example[f"{role}_ids"], skip_special_tokens=True)
            row.update({key: example[key] for key in ITERATION_COLUMNS if key in example})
            rows.append(row)
        return rows

    def write_iteration(
        self,
        iteration: int,
        name: str,
        dataset: "TripletDataset",
        tokenizer: "PreTrainedTokenizerBase",
        meta: dict[str, Any],
        row_fields: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        """Write `iteration`'s file of the dataset `name`: its rows, each with `row_fields(index)` added (a prompt's
        selection, where the iteration selected prompts), and `meta` (see [`iteration_meta`])."""
        rows = self.rows_of(dataset, tokenizer)
        if row_fields is not None:
            for index, row in enumerate(rows):
                row.update(row_fields(index))
        self.write(iteration, name, rows, meta)

    def write(
        self, iteration: int, name: str, rows: list[dict[str, Any]], meta: dict[str, Any], step: int | None = None
    ) -> None:
        write_checked_jsonl(
            *self.paths(iteration, name, step),
            rows,
            {"iteration": iteration, "identity": self.identity_digest, "num_examples": len(rows), **meta},
        )


def iteration_meta(
    context: "RunContext",
    point: "IterationPoint",
    name: str,
    sampling: dict[str, Any],
    generation_stats: dict[str, "GenerationStats"],
    prompt_selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What an iteration file's sidecar records of how its responses were made: the step, the sampling settings, the
    seed, the objective, the iteration's alpha and beta, the statistics of the dataset's generation passes (those of
    `generation_stats` whose key names it), and the prompt selection's summary if any."""
    policy, iteration = context.policy, point.iteration
    meta = {
        "global_step": point.global_step,
        "sampling": sampling,
        "seed": context.args.seed,
        "objective": context.args.objective,
        "alpha": policy.alpha_for(iteration),
        "beta": policy.beta_for(iteration),
        "generation": {key: stats.to_dict() for key, stats in generation_stats.items() if name in key},
    }
    if prompt_selection is not None:
        meta["prompt_selection"] = prompt_selection
    return meta
