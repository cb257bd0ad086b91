"""Iteration files: the responses (and reference log-probs) each iteration trains on, read, validated and written.

`self_play/iteration_<t>/<name>.jsonl` holds one row per example (the texts people read, and the token ids and
log-probs training uses); its sidecar holds the checksum, the count and the run's identity digest. A file is used only
when it is intact, belongs to this run and iteration, and holds valid token ids and finite log-probs.
"""

import logging
import math
from typing import TYPE_CHECKING, Any

from ..checked_io import read_checked_jsonl, valid_token_ids, write_checked_jsonl


if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..data import TripletDataset
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

    def write(
        self, iteration: int, name: str, rows: list[dict[str, Any]], meta: dict[str, Any], step: int | None = None
    ) -> None:
        write_checked_jsonl(
            *self.paths(iteration, name, step),
            rows,
            {"iteration": iteration, "identity": self.identity_digest, "num_examples": len(rows), **meta},
        )
