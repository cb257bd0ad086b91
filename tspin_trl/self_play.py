"""`SelfPlayCallback`: the iteration schedule, regeneration, per-iteration files and their identity.

At the start of every epoch the callback works out the self-play iteration `t = epoch // epochs_per_iteration`. When
`t` changes it makes the triplets of that iteration and writes them into the datasets the dataloaders hold:

- proto-synthetic responses `y0`: from the dataset's `proto` column, an earlier iteration's file, the proto cache,
  or sampled once from the initial policy (then cached);
- synthetic responses `y'`: in iteration 0 the dataset's `synthetic` column or the proto responses (same policy);
  later, sampled from the current policy;
- for `objective="spin"`/`"tspin_ref"`, the log-probs of the current policy, computed once per iteration.

What an iteration needs is decided by the trainer's [`ObjectivePolicy`]. Everything is written to
`output_dir/self_play/iteration_<t>/` before training on it, bound to the run's identity (data, initial model,
tokenizer, sampling, seed, objective and schedule, see [`run_identity`]): a resumed run trains on exactly the responses
the interrupted run had, a generation pass killed midway resumes at its first missing chunk, and files of another run
are never used. The callback talks to the trainer through its public surface only.
"""

import json
import logging
import math
import os
import shutil
from typing import TYPE_CHECKING, Any

from accelerate.utils import broadcast_object_list, gather_object
from transformers import TrainerCallback

from .cache import ProtoCache, proto_cache_key
from .config import default_proto_cache_dir
from .data import TripletDataset
from .generation import ChunkStore, GenerationStats, SamplingSettings, generate_responses
from .run_folder import atomic_write, json_digest, read_checked_jsonl, valid_token_ids, write_checked_jsonl
from .vllm_backend import make_generation_backend


if TYPE_CHECKING:
    from .trainer import TSPINTrainer


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
    "weight_decay",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "generation_batch_size",  # the per-chunk sampling seeds depend on the chunking
    "use_vllm",
)


class SelfPlayError(RuntimeError):
    """Self-play cannot go on without training on responses that are not the run's own."""


def dataset_digest(dataset: TripletDataset) -> str:
    """Identity of a dataset's prompts and real responses (and any responses it brings)."""
    keys = ("prompt_ids", "real_ids")
    given = [role for role in ("synthetic", "proto") if dataset.has(role)]
    return json_digest([[example[k] for k in keys] for example in dataset.examples] + [given])


class SelfPlayCallback(TrainerCallback):
    """
    Drives T-SPIN self-play inside one `train()` call. [`TSPINTrainer`] installs it; users never add it themselves.

    Args:
        trainer ([`TSPINTrainer`]):
            The trainer whose datasets, model and accelerator the callback uses (public attributes only).

    Attributes:
        generation_stats (`dict[str, GenerationStats]`):
            Statistics of every generation pass of this run, keyed like `"iteration_1/train"` or `"proto/train"`.
        generate_calls (`int`):
            Number of `generate` calls this process made (zero when everything came from cache or files).
        identity (`dict[str, Any]`):
            What decides this run's responses and training (see [`run_identity`]); its digest binds every file.
    """

    def __init__(self, trainer: "TSPINTrainer"):
        self.trainer = trainer
        self.folder = trainer.run_folder
        self.loaded_iteration: int | None = None
        self.generation_stats: dict[str, GenerationStats] = {}
        self.generate_calls = 0
        self.datasets = self._collect_datasets()
        self.own_synthetic = {name: dataset.has("synthetic") for name, dataset in self.datasets.items()}
        self.identity: dict[str, Any] = {}
        self.identity_digest = ""
        self.backend = None  # the generation backend of the running `train()` (vLLM engine or `model.generate`)

    # ---- schedule ------------------------------------------------------------------------------------------------

    def _collect_datasets(self) -> dict[str, TripletDataset]:
        datasets = {"train": self.trainer.train_dataset}
        eval_dataset = self.trainer.eval_dataset
        if isinstance(eval_dataset, dict):
            datasets.update({f"eval_{name}": ds for name, ds in eval_dataset.items()})
        elif eval_dataset is not None:
            datasets["eval"] = eval_dataset
        return datasets

    def sampling(self) -> SamplingSettings:
        args = self.trainer.args
        return SamplingSettings(
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            generation_kwargs=dict(args.generation_kwargs or {}),
        )

    def run_identity(self) -> dict[str, Any]:
        """Everything that decides the run's responses and training: the data, the initial model and tokenizer,
        sampling, the objective and the schedule, the number of processes."""
        trainer, args = self.trainer, self.trainer.args
        return {
            "data": {name: dataset_digest(dataset) for name, dataset in self.datasets.items()},
            "initial_model": trainer.initial_model_fingerprint,
            "tokenizer": trainer.tokenizer_fingerprint,
            "sampling": self.sampling().to_dict() | {"eos_ids": list(trainer.eos_token_ids)},
            "num_processes": trainer.accelerator.num_processes,
            **{name: getattr(args, name) for name in IDENTITY_FIELDS},
        }

    def _on_main(self, function, *arguments, every_writer: bool = False):
        """Run `function` on the main process only and give every process its result; an error is raised on every
        process (so that none waits forever for a main process that failed).

        With `every_writer`, it also runs on every other process that writes self-play files (`args.should_save`: with
        `save_on_each_node`, each node's local main process, which keeps its node's copy); an error on any of them is
        raised everywhere, and the main process's result is returned.
        """
        accelerator = self.trainer.accelerator
        runs_here = accelerator.is_main_process or (every_writer and self.trainer.args.should_save)
        outcome: list[Any] = [None]
        error: Exception | None = None
        if runs_here:
            try:
                outcome = [("ok", function(*arguments))]
            except Exception as raised:  # re-raised below, after the other processes have been told
                error = raised
                outcome = [("error", f"{type(raised).__name__}: {raised}")]
        if accelerator.num_processes > 1:
            if every_writer:
                outcomes = gather_object(outcome)  # in rank order: the main process's first
                errors = [entry for entry in outcomes if entry is not None and entry[0] == "error"]
                outcome = errors[:1] or outcomes[:1]
            else:
                outcome = broadcast_object_list(outcome)
        status, value = outcome[0]
        if error is not None:
            raise error
        if status == "error":
            raise SelfPlayError(f"Self-play stopped on another process: {value}")
        return value

    def on_train_begin(self, args, state, control, **kwargs):
        self.identity = self.run_identity()
        self.identity_digest = json_digest(self.identity)
        self._on_main(self._check_run_folder, state.global_step, every_writer=True)
        trainer = self.trainer
        self.backend = make_generation_backend(args, trainer.model, trainer.accelerator, trainer.processing_class)
        # Fill the datasets now, so that evaluation before the first epoch (`eval_on_start`) has triplets too
        self.on_epoch_begin(args, state, control)
        return control

    def _check_run_folder(self, global_step: int) -> None:
        """Bind `self_play/` to this run: record its identity, or stop when the folder holds another run's files or
        a resume changed a setting; on a fresh start drop what an earlier run produced after step 0."""
        path = self.folder.identity_path
        stored = None
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    stored = json.load(f)
            except (OSError, ValueError):
                logger.warning("Ignoring the unreadable %s.", path)
            if not isinstance(stored, dict) or not isinstance(stored.get("identity"), dict):
                stored = None
        if stored is not None and stored.get("digest") != self.identity_digest:
            changed = _changed_fields(stored["identity"], self.identity)
            if global_step > 0:
                raise SelfPlayError(
                    f"Cannot resume: the run in {self.trainer.args.output_dir!r} was started with other settings. "
                    f"Changed: {changed}. Resume with the original settings, or start a new run in a new output_dir."
                )
            raise SelfPlayError(
                f"{self.folder.root!r} holds the self-play files of another run (it differs in: {changed}). A new run "
                "never trains on another run's responses: choose a new output_dir, or delete that self_play/ folder "
                "(and the old checkpoints) to start over in this one."
            )
        if global_step > 0:
            self.folder.drop_records_after(global_step)
        elif stored is not None:
            self._drop_trained_artefacts()
        atomic_write(
            path, json.dumps({"digest": self.identity_digest, "identity": self.identity}, indent=2, default=str)
        )

    def _drop_trained_artefacts(self) -> None:
        """A fresh start in the folder of an identical earlier run: keep what only the initial policy decided (the
        proto and iteration-0 responses), drop what came from its trained policy, and its logs."""
        for iteration in self.folder.iteration_numbers():
            if iteration > 0:
                shutil.rmtree(self.folder.iteration_dir(iteration), ignore_errors=True)
        for path in (self.folder.logs_path, self.folder.iterations_path, self.folder.scores_path):
            if os.path.isfile(path):
                os.remove(path)
        logger.info(
            "Fresh start in %s: responses of the earlier identical run's trained policy removed.", self.folder.root
        )

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = math.floor(state.epoch + 1e-6) if state.epoch else 0
        iteration = min(epoch // args.epochs_per_iteration, args.num_iterations - 1)
        if iteration != self.loaded_iteration:
            self.prepare_iteration(iteration, state.global_step)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.loaded_iteration is not None:
            self._measure_inversion(self.loaded_iteration, final=True)
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        return control

    # ---- one iteration -------------------------------------------------------------------------------------------

    def prepare_iteration(self, iteration: int, global_step: int) -> None:
        """Fill every managed dataset with the triplets of `iteration` and make it the trainer's iteration."""
        policy = self.trainer.policy
        for name, dataset in self.datasets.items():
            if not self._load_iteration_file(iteration, global_step, name, dataset):
                self._build_iteration(iteration, global_step, name, dataset)
            dataset.include_proto = "proto" in policy.roles_for(iteration)
        self.trainer.start_iteration(iteration)
        self.loaded_iteration = iteration
        logger.info("Self-play iteration %d: beta=%s", iteration, policy.beta_for(iteration))
        if iteration > 0:
            self._measure_inversion(iteration - 1)

    def _iteration_seed(self, iteration: int) -> int:
        return self.trainer.args.seed + 1_000_003 * (iteration + 1)

    def _build_iteration(self, iteration: int, global_step: int, name: str, dataset: TripletDataset):
        trainer, policy = self.trainer, self.trainer.policy
        if not dataset.has("proto") and policy.needs_proto(iteration, self.own_synthetic[name]):
            self._fill_proto(name, dataset, iteration, global_step)
        if dataset.mix_previous:
            previous = self._previous_synthetic(iteration, name, dataset)
            dataset.set_column("previous_synthetic_ids", previous)
        source = policy.synthetic_source(iteration, self.own_synthetic[name])
        if source == "proto":
            dataset.set_column("synthetic_ids", dataset.column("proto_ids"))
        elif source == "policy":
            responses = self._generate_iteration(iteration, global_step, name, dataset)
            dataset.set_column("synthetic_ids", responses)
        reference_roles = policy.reference_roles_for(iteration)
        if reference_roles:
            if dataset.mix_previous:
                reference_roles = reference_roles + ("previous_synthetic",)
            for role, values in trainer.compute_dataset_logps(dataset, reference_roles).items():
                dataset.set_column(f"ref_{role}_logps", values)
        self._write_iteration_file(iteration, global_step, name, dataset)

    def _previous_synthetic(self, iteration: int, name: str, dataset: TripletDataset) -> list[list[int]]:
        """SPIN's data mixing: the previous iteration's synthetic responses (the current ones in iteration 0, which
        has no predecessor: its triplets then appear twice)."""
        if iteration == 0:
            return dataset.column("synthetic_ids") if dataset.has("synthetic") else dataset.column("proto_ids")
        rows = self._read_valid_rows(iteration - 1, name, len(dataset.examples))
        if rows is None:
            raise SelfPlayError(
                f"mix_previous_iteration needs iteration {iteration - 1}'s responses of the {name} dataset, but "
                f"{self.folder.iteration_files(iteration - 1, name)[0]} is missing or invalid. Restore it, or resume "
                f"from a checkpoint taken before iteration {iteration - 1} began."
            )
        return [row["synthetic_ids"] for row in rows]

    def _generate_iteration(self, iteration: int, global_step: int, name: str, dataset: TripletDataset):
        args = self.trainer.args
        seed = self._iteration_seed(iteration)
        chunk_key = json_digest(
            [
                self.identity_digest,
                iteration,
                global_step,
                self.trainer.accelerator.num_processes,
                args.generation_batch_size,
                seed,
                name,
            ]
        )
        store = ChunkStore(self.folder.generation_chunks_dir(iteration, name), chunk_key, self.trainer.vocab_size)
        return self._generate(dataset.column("prompt_ids"), seed, store, f"iteration_{iteration}/{name}")

    def _generate(self, prompts: list[list[int]], seed: int, store: ChunkStore | None, label: str) -> list[list[int]]:
        trainer, args = self.trainer, self.trainer.args
        responses, stats = generate_responses(
            trainer.model_wrapped,
            trainer.accelerator,
            prompts,
            sampling=self.sampling(),
            pad_token_id=trainer.processing_class.pad_token_id,
            eos_ids=trainer.eos_token_ids,
            batch_size=args.generation_batch_size,
            seed=seed,
            chunk_store=store,
            description=f"Generating {label}",
            backend=self.backend,
        )
        self.generate_calls += stats.generate_calls
        self.generation_stats[label] = stats
        if store is not None and trainer.accelerator.is_main_process:
            store.clear()
        for key, value in stats.to_dict().items():
            if key in ("num_tokens", "generated_tokens", "seconds", "tokens_per_second"):
                trainer.record_metric(f"generation/{key}", float(value))
        trainer.record_metric("generation/eos_rate", stats.num_eos / max(stats.num_prompts, 1))
        trainer.record_metric("generation/truncation_rate", stats.num_truncated / max(stats.num_prompts, 1))
        if trainer.accelerator.is_main_process:
            logger.info("Generated %s: %s", label, stats.to_dict())
        return responses

    def _fill_proto(self, name: str, dataset: TripletDataset, iteration: int, global_step: int) -> None:
        """Proto responses from an earlier iteration file, the cache, or the initial policy (then cached)."""
        trainer, args = self.trainer, self.trainer.args
        for earlier in range(iteration):
            rows = self._on_main(self._read_valid_rows, earlier, name, len(dataset.examples))
            if rows is not None and all("proto_ids" in row for row in rows):
                dataset.set_column("proto_ids", [row["proto_ids"] for row in rows])
                return
        prompts = dataset.column("prompt_ids")
        key, fields = proto_cache_key(
            trainer.initial_model_fingerprint,
            trainer.tokenizer_fingerprint,
            prompts,
            # the per-chunk seeds depend on the chunking, and each backend samples differently from the same seed
            self.sampling().to_dict()
            | {
                "eos_ids": trainer.eos_token_ids,
                "generation_batch_size": args.generation_batch_size,
                "num_processes": trainer.accelerator.num_processes,
                "backend": getattr(self.backend, "chunk_key", None),
            },
            args.seed,
        )
        cache = ProtoCache(args.proto_cache_dir or default_proto_cache_dir()) if args.use_proto_cache else None
        claim = None
        if cache is not None and trainer.accelerator.is_main_process:
            claim = cache.claim(key, len(prompts), trainer.vocab_size)
        cached = [claim if isinstance(claim, list) else None]
        if trainer.accelerator.num_processes > 1:
            cached = broadcast_object_list(cached)
        if cached[0] is not None:
            logger.info("Proto-synthetic responses for %s loaded from the cache (%s).", name, key)
            dataset.set_column("proto_ids", cached[0])
            return
        try:
            if global_step > 0 or iteration > 0:
                raise SelfPlayError(
                    f"The proto-synthetic responses of the {name} dataset must come from the initial policy, but they "
                    "are in neither the proto cache nor an earlier iteration's files, and the model has already been "
                    "trained. Restore `output_dir/self_play/` or the proto cache, or restart training from the "
                    "beginning."
                )
            chunk_dir = cache.chunks_dir(key) if cache is not None else self.folder.proto_chunks_dir(name)
            store = ChunkStore(chunk_dir, key, trainer.vocab_size)
            responses = self._generate(prompts, args.seed, store, f"proto/{name}")
            if cache is not None and trainer.accelerator.is_main_process:
                cache.save(key, responses, fields)
        finally:
            if claim is not None and not isinstance(claim, list):
                claim.release()
        dataset.set_column("proto_ids", responses)

    # ---- likelihood inversion on the evaluation data ---------------------------------------------------------------

    def _measure_inversion(self, iteration: int, final: bool = False) -> None:
        """After `iteration`: the share of evaluation prompts whose sampled response the policy finds more likely
        than the real one (`self_play/likelihood_inversion`). SPIN drives this up (the paper's Fig. 3); T-SPIN should
        keep it down. Measured with the next iteration's synthetic responses (the current policy's samples), or, after
        the last iteration, with one more sampling pass over the evaluation prompts."""
        trainer = self.trainer
        for name, dataset in self.datasets.items():
            if name == "train":
                continue
            if final:
                seed = self._iteration_seed(iteration + 1)
                samples = self._generate(dataset.column("prompt_ids"), seed, None, f"final/{name}")
                probe = TripletDataset(
                    [{**example, "synthetic_ids": ids} for example, ids in zip(dataset.examples, samples, strict=True)]
                )
            else:
                probe = dataset
            if trainer.policy.uses_reference and not final and probe.examples[0].get("ref_real_logps") is not None:
                real, synthetic = probe.column("ref_real_logps"), probe.column("ref_synthetic_logps")
            else:
                logps = trainer.compute_dataset_logps(probe, ("real", "synthetic"))
                real, synthetic = logps["real"], logps["synthetic"]
            inverted = [
                example["synthetic_ids"] != example["real_ids"] and s > r + 1e-3
                for example, r, s in zip(probe.examples, real, synthetic, strict=True)
            ]
            key = "self_play/likelihood_inversion" + ("" if name == "eval" else f"_{name.removeprefix('eval_')}")
            value = sum(inverted) / len(inverted)
            trainer.log_now({key: value}, iteration)
            if trainer.args.should_save:
                self.folder.append_iteration_record(
                    {"iteration": iteration, "step": trainer.state.global_step, key.removeprefix("self_play/"): value}
                )

    # ---- per-iteration files -------------------------------------------------------------------------------------

    def _read_valid_rows(self, iteration: int, name: str, num_examples: int) -> list[dict[str, Any]] | None:
        """The rows of an iteration file if it is intact, belongs to this run and iteration, and holds valid token ids
        and finite log-probs; `None` (with a warning when a file was there) otherwise."""
        data_path, meta_path = self.folder.iteration_files(iteration, name)
        entry = read_checked_jsonl(data_path, meta_path)
        if entry is None:
            return None
        rows, meta = entry
        problem = None
        if meta.get("identity") != self.identity_digest:
            problem = "it belongs to another run (its identity differs)"
        elif meta.get("iteration") != iteration or len(rows) != num_examples:
            problem = f"it holds iteration {meta.get('iteration')} with {len(rows)} rows"
        else:
            vocab = self.trainer.vocab_size
            for row in rows:
                if not isinstance(row, dict):
                    problem = "a row is not a JSON object"
                    break
                bad = [
                    k
                    for k in ITERATION_COLUMNS
                    if k in row and k.endswith("_ids") and not valid_token_ids(row[k], vocab)
                ]
                bad += [
                    k
                    for k in ITERATION_COLUMNS
                    if k in row
                    and k.endswith("_logps")
                    and not (isinstance(row[k], (int, float)) and math.isfinite(row[k]))
                ]
                if bad:
                    problem = f"row {row.get('index')} has invalid {bad}"
                    break
        if problem is not None:
            logger.warning("Ignoring %s: %s.", data_path, problem)
            return None
        return rows

    def _load_iteration_file(self, iteration: int, global_step: int, name: str, dataset: TripletDataset) -> bool:
        data_path = self.folder.iteration_files(iteration, name)[0]

        def decide():
            rows = self._read_valid_rows(iteration, name, len(dataset.examples))
            started = self.trainer.steps_per_iteration is not None and global_step > (
                iteration * self.trainer.steps_per_iteration
            )
            if rows is None and started:
                raise SelfPlayError(
                    f"Training of iteration {iteration} has begun, but its responses ({data_path}) are missing, corrupted "
                    "or not this run's; regenerating them now would sample from a partly trained policy. Restore the "
                    f"file, or resume from the checkpoint taken at the start of iteration {iteration} (or earlier)."
                )
            return rows

        rows = self._on_main(decide)
        if rows is None:
            return False
        for key in ITERATION_COLUMNS:
            if all(key in row for row in rows):
                dataset.set_column(key, [row[key] for row in rows])
        logger.info("Self-play iteration %d (%s) loaded from %s.", iteration, name, data_path)
        return True

    def _write_iteration_file(self, iteration: int, global_step: int, name: str, dataset: TripletDataset) -> None:
        trainer = self.trainer
        if trainer.args.should_save:  # on separate disks (`save_on_each_node`), every node keeps its copy
            tokenizer = trainer.processing_class
            rows = []
            for index, example in enumerate(dataset.examples):
                row = {"index": index, "prompt": example["prompt_text"], "real": example["real_text"]}
                for role in ("synthetic", "proto"):
                    if f"{role}_ids" in example:
                        row[role] = tokenizer.decode(example[f"{role}_ids"], skip_special_tokens=True)
                row.update({key: example[key] for key in ITERATION_COLUMNS if key in example})
                rows.append(row)
            meta = {
                "iteration": iteration,
                "global_step": global_step,
                "identity": self.identity_digest,
                "num_examples": len(dataset.examples),
                "sampling": self.sampling().to_dict(),
                "seed": trainer.args.seed,
                "objective": trainer.args.objective,
                "beta": trainer.policy.beta_for(iteration),
                "generation": {k: v.to_dict() for k, v in self.generation_stats.items() if name in k},
            }
            write_checked_jsonl(*self.folder.iteration_files(iteration, name), rows, meta)
        trainer.accelerator.wait_for_everyone()


def _changed_fields(stored: dict[str, Any], current: dict[str, Any]) -> str:
    changed = []
    for key in sorted(set(stored) | set(current)):
        if json_digest(stored.get(key)) != json_digest(current.get(key)):
            if key in ("data", "initial_model", "tokenizer"):
                changed.append(f"{key} (different content)")
            else:
                changed.append(f"{key} ({stored.get(key)!r} -> {current.get(key)!r})")
    return ", ".join(changed)
