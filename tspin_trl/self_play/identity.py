"""A run's identity (what decides its responses and its training) and the binding of `self_play/` to it.

The identity is recorded in `self_play/run.json` at a run's first start and its digest is written into every
iteration file and chunk key, so files of another run are never used. A resume with a changed setting, or a fresh run
in a folder holding another run's files, stops with an error naming every difference.
"""

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from ..checked_io import atomic_write, json_digest, remove_stale_temporaries
from ..checkpoints import checkpoint_dir, checkpoint_steps


if TYPE_CHECKING:
    from ..context import RunContext
    from ..data import TripletDataset
    from ..run_folder import RunFolder


logger = logging.getLogger(__name__)

# Settings that change what a run generates or how it trains: a resume must not change them.
IDENTITY_FIELDS = (
    "objective",
    "alpha",
    "beta",
    "beta_first_iteration",
    "loss_type",
    "real_nll_weight",
    "num_iterations",
    "epochs_per_iteration",
    "restart_each_iteration",
    "mix_previous_iteration",
    "reuse_proto_as_first_synthetic",
    "max_length",
    "max_prompt_length",
    "truncation_mode",
    "seed",
    "data_seed",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "optim",
    "optim_args",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "lr_scheduler_kwargs",
    "weight_decay",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "generation_batch_size",  # the per-chunk sampling seeds depend on the chunking
    "use_vllm",
)
# Identity entries whose values are digests of content: an error names them without their values.
CONTENT_FIELDS = ("data", "initial_model", "tokenizer")


class SelfPlayError(RuntimeError):
    """Self-play cannot go on without training on responses that are not the run's own."""


def dataset_digest(dataset: "TripletDataset") -> str:
    """Identity of a dataset's content as given: its prompts and real responses, and the synthetic or proto responses
    it brings (their token ids). Taken before self-play fills anything in."""
    given = [role for role in ("synthetic", "proto") if dataset.has(role)]
    keys = ("prompt_ids", "real_ids", *(f"{role}_ids" for role in given))
    return json_digest([[example[k] for k in keys] for example in dataset.examples] + [given])


def run_identity(context: "RunContext", data_digests: dict[str, str], sampling: dict[str, Any]) -> dict:
    """Everything that decides the run's responses and training: the data (see [`dataset_digest`]), the initial model
    and tokenizer, sampling, the objective and the schedule, the optimizer, the number of processes."""
    args = context.args
    return {
        "data": data_digests,
        **context.initial_identity,
        "sampling": sampling | {"eos_ids": list(context.eos_token_ids)},
        "num_processes": context.accelerator.num_processes,
        **{name: getattr(args, name) for name in IDENTITY_FIELDS},
    }


def changed_fields(stored: dict[str, Any], current: dict[str, Any]) -> str:
    """The identity entries that differ, with their old and new values (content digests by name only)."""
    changed = []
    for key in sorted(set(stored) | set(current)):
        if json_digest(stored.get(key)) != json_digest(current.get(key)):
            if key in CONTENT_FIELDS:
                changed.append(f"{key} (different content)")
            else:
                changed.append(f"{key} ({stored.get(key)!r} -> {current.get(key)!r})")
    return ", ".join(changed)


class RunBinding:
    """
    Binds `output_dir/self_play/` to one run: records its identity, or stops when the folder holds another run's
    files or a resume changed a setting.

    A fresh start (not a resume) leaves nothing behind that a later resume could take for its own: the checkpoints an
    earlier run left in `output_dir` (`resume_from_checkpoint=True` would pick its last one), and, in the folder of an
    identical run, what that run's trained policy produced (iteration files after iteration 0, logs, records) are
    moved to `self_play/replaced/<time>/` with a record of why. What only the initial policy decided (the proto and
    iteration-0 responses) is kept and reused.

    Args:
        folder ([`~tspin_trl.run_folder.RunFolder`]):
            The run folder.
    """

    def __init__(self, folder: "RunFolder"):
        self.folder = folder

    def stored(self) -> dict[str, Any] | None:
        """The recorded `{"digest", "identity"}`, or `None` (with a warning when the file is unreadable)."""
        path = self.folder.identity_path
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, ValueError):
            logger.warning("Ignoring the unreadable %s.", path)
            return None
        if not isinstance(stored, dict) or not isinstance(stored.get("identity"), dict):
            return None
        return stored

    def bind(self, identity: dict[str, Any], digest: str, global_step: int) -> None:
        stored = self.stored()
        if stored is not None and stored.get("digest") != digest:
            changed = changed_fields(stored["identity"], identity)
            if global_step > 0:
                raise SelfPlayError(
                    f"Cannot resume: the run in {self.folder.output_dir!r} was started with other settings. "
                    f"Changed: {changed}. Resume with the original settings, or start a new run in a new output_dir."
                )
            raise SelfPlayError(
                f"{self.folder.root!r} holds the self-play files of another run (it differs in: {changed}). A new run "
                "never trains on another run's responses: choose a new output_dir, or delete that self_play/ folder "
                "(and the old checkpoints) to start over in this one."
            )
        remove_stale_temporaries(self.folder.root)  # this process holds the run lock: no writer is running here
        if global_step > 0:
            self.folder.drop_records_after(global_step)
        else:
            self._move_earlier_run_aside()
        atomic_write(
            self.folder.identity_path, json.dumps({"digest": digest, "identity": identity}, indent=2, default=str)
        )

    def _move_earlier_run_aside(self) -> None:
        """A fresh start: move the earlier run's checkpoints and its trained policy's artefacts to `replaced/`."""
        folder = self.folder
        checkpoints = [checkpoint_dir(folder.output_dir, step) for step in checkpoint_steps(folder.output_dir)]
        trained = [folder.iteration_dir(t) for t in folder.iteration_numbers() if t > 0]
        records = [p for p in (folder.logs_path, folder.iterations_path, folder.scores_path) if os.path.isfile(p)]
        if not (checkpoints or trained or records):
            return
        target = folder.move_aside(
            checkpoints + trained + records,
            "A fresh start (not a resume) in this output_dir: the earlier run's checkpoints, and what its trained "
            "policy produced, were moved here so that no later resume takes them for the new run's.",
        )
        if checkpoints:
            logger.warning(
                "Fresh start in %s: the %d checkpoint(s) an earlier run left there (checkpoint-%s) were moved to %s, so "
                "that `resume_from_checkpoint=True` finds only this run's. To resume the earlier run instead, move them "
                "back and pass `resume_from_checkpoint`.",
                folder.output_dir,
                len(checkpoints),
                ", checkpoint-".join(os.path.basename(c).removeprefix("checkpoint-") for c in checkpoints),
                target,
            )
        else:
            logger.info(
                "Fresh start in %s: the earlier identical run's trained artefacts moved to %s.", folder.root, target
            )
