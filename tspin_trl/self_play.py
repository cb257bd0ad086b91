"""`SelfPlayCallback`: the iteration schedule, regeneration, per-iteration files and resume state.

At the start of every epoch the callback works out the self-play iteration `t = epoch // epochs_per_iteration`. When
`t` changes it makes the triplets of that iteration and writes them into the datasets the dataloaders hold:

- proto-synthetic responses `y0`: from the dataset's `proto` column, an earlier iteration's file, the proto cache,
  or sampled once from the initial policy (then cached);
- synthetic responses `y'`: in iteration 0 the dataset's `synthetic` column or the proto responses (same policy);
  later, sampled from the current policy;
- for `objective="spin"`/`"tspin_ref"`, the log-probs of the current policy, computed once per iteration.

Everything is written to `output_dir/self_play/iteration_<t>/` before training on it, so a resumed run trains on
exactly the responses the interrupted run had, and a generation pass killed midway resumes at its first missing
chunk.
"""

import json
import logging
import math
import os
from typing import TYPE_CHECKING, Any

from accelerate.utils import broadcast_object_list
from transformers import TrainerCallback

from .cache import ProtoCache, proto_cache_key, read_checked_jsonl, write_checked_jsonl
from .config import default_proto_cache_dir
from .data import TripletDataset
from .generation import ChunkStore, GenerationStats, SamplingSettings, generate_responses
from .vllm_backend import make_generation_backend


if TYPE_CHECKING:
    from .trainer import TSPINTrainer


logger = logging.getLogger(__name__)

SELF_PLAY_DIR = "self_play"


# What an iteration file keeps of each example besides the texts, and gives back on resume
ITERATION_COLUMNS = ("synthetic_ids", "proto_ids", "ref_real_logps", "ref_synthetic_logps", "ref_proto_logps")


class SelfPlayCallback(TrainerCallback):
    """
    Drives T-SPIN self-play inside one `train()` call. [`TSPINTrainer`] installs it; users never add it themselves.

    Args:
        trainer ([`TSPINTrainer`]):
            The trainer whose datasets, model and accelerator the callback uses.

    Attributes:
        generation_stats (`dict[str, GenerationStats]`):
            Statistics of every generation pass of this run, keyed like `"iteration_1/train"` or `"proto/train"`.
        generate_calls (`int`):
            Number of `generate` calls this process made (zero when everything came from cache or files).
    """

    def __init__(self, trainer: "TSPINTrainer"):
        self.trainer = trainer
        self.loaded_iteration: int | None = None
        self.generation_stats: dict[str, GenerationStats] = {}
        self.generate_calls = 0
        self.scores: list[dict[str, Any]] = []
        self.alarms: list[int] = []
        self._advantage_logs: dict[int, list[tuple]] = {}
        # Whether iteration 0's synthetic responses come from the dataset (then not from the initial policy)
        self.own_synthetic = {name: ds.has("synthetic") for name, ds in self._datasets().items()}
        self.backend = None  # the generation backend of the running `train()` (vLLM engine or `model.generate`)

    # ---- schedule ------------------------------------------------------------------------------------------------

    def _datasets(self) -> dict[str, TripletDataset]:
        datasets = {"train": self.trainer.train_dataset}
        eval_dataset = self.trainer.eval_dataset
        if isinstance(eval_dataset, dict):
            datasets.update({f"eval_{name}": ds for name, ds in eval_dataset.items()})
        elif eval_dataset is not None:
            datasets["eval"] = eval_dataset
        return datasets

    def beta_for(self, iteration: int) -> float:
        """Weight of the historical term in an iteration (0 for SPIN)."""
        args = self.trainer.args
        if args.objective == "spin":
            return 0.0
        if iteration == 0 and not self.own_synthetic["train"]:
            return args.beta_first_iteration
        return args.beta

    def _needs_proto(self, name: str) -> bool:
        args = self.trainer.args
        historical_used = args.objective != "spin" and (
            args.beta > 0 or (args.beta_first_iteration > 0 and not self.own_synthetic[name])
        )
        reuse = args.reuse_proto_as_first_synthetic and not self.own_synthetic[name]
        return historical_used or reuse

    def iteration_dir(self, iteration: int) -> str:
        return os.path.join(self.trainer.args.output_dir, SELF_PLAY_DIR, f"iteration_{iteration}")

    def sampling(self) -> SamplingSettings:
        args = self.trainer.args
        return SamplingSettings(
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            generation_kwargs=dict(args.generation_kwargs or {}),
        )

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer
        self.backend = make_generation_backend(args, t.model, t.accelerator, t.processing_class)
        if self.trainer.scorer is not None and not self._score_recorded("start"):
            self.score("start", state.global_step)
        # Fill the datasets now, so that evaluation before the first epoch (`eval_on_start`) has triplets too
        self.on_epoch_begin(args, state, control)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = round(state.epoch)
        if epoch % args.epochs_per_iteration == 0 and epoch > 0:
            iteration = epoch // args.epochs_per_iteration - 1
            self.check_advantage(iteration)
            if self.trainer.scorer is not None:
                self.score(f"iteration_{iteration}", state.global_step)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "logps/abs_margin" in logs:
            stats = self._advantage_logs.setdefault(self.trainer.current_iteration, [])
            stats.append(
                (
                    logs["advantage/current"],
                    logs.get("advantage/historical"),
                    logs["logps/abs_margin"],
                    logs.get("self_play/synthetic_equals_real", 0.0),
                )
            )
        if state.is_world_process_zero:
            path = os.path.join(args.output_dir, SELF_PLAY_DIR, "logs.jsonl")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps({**logs, "step": state.global_step}) + "\n")
        return control

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = math.floor(state.epoch + 1e-6) if state.epoch else 0
        iteration = min(epoch // args.epochs_per_iteration, args.num_iterations - 1)
        if iteration != self.loaded_iteration:
            self.prepare_iteration(iteration, state.global_step)
        return control

    # ---- one iteration -------------------------------------------------------------------------------------------

    def prepare_iteration(self, iteration: int, global_step: int) -> None:
        """Fill every managed dataset with the triplets of `iteration` and set the trainer's beta."""
        trainer = self.trainer
        beta = self.beta_for(iteration)
        for name, dataset in self._datasets().items():
            if not self._load_iteration_file(iteration, name, dataset):
                self._build_iteration(iteration, global_step, name, dataset, beta)
            dataset.include_proto = beta > 0 and dataset.has("proto")
        trainer.current_beta = beta
        trainer.current_iteration = iteration
        self.loaded_iteration = iteration
        logger.info("Self-play iteration %d: beta=%s", iteration, beta)

    def _build_iteration(self, iteration: int, global_step: int, name: str, dataset: TripletDataset, beta: float):
        trainer, args = self.trainer, self.trainer.args
        if not dataset.has("proto") and (self._needs_proto(name) or beta > 0):
            self._fill_proto(name, dataset, iteration, global_step)
        if iteration == 0 and dataset.has("synthetic"):
            pass  # the dataset's own synthetic responses
        elif iteration == 0 and args.reuse_proto_as_first_synthetic and dataset.has("proto"):
            dataset.set_column("synthetic_ids", dataset.column("proto_ids"))
        else:
            seed = args.seed + 1_000_003 * (iteration + 1)
            chunk_key = json.dumps(
                [
                    iteration,
                    global_step,
                    trainer.accelerator.num_processes,
                    args.generation_batch_size,
                    seed,
                    self.sampling().to_dict(),
                    name,
                ]
            )
            store = ChunkStore(os.path.join(self.iteration_dir(iteration), f"{name}_chunks"), chunk_key)
            responses = self._generate(dataset, seed, store, f"iteration_{iteration}/{name}")
            dataset.set_column("synthetic_ids", responses)
        if trainer.uses_reference:
            roles = ("real", "synthetic") + (("proto",) if beta > 0 and dataset.has("proto") else ())
            for role, values in trainer.compute_dataset_logps(dataset, roles).items():
                dataset.set_column(f"ref_{role}_logps", values)
        self._write_iteration_file(iteration, global_step, name, dataset)

    def _generate(self, dataset: TripletDataset, seed: int, store: ChunkStore | None, label: str) -> list[list[int]]:
        trainer, args = self.trainer, self.trainer.args
        responses, stats = generate_responses(
            trainer.model_wrapped,
            trainer.accelerator,
            dataset.column("prompt_ids"),
            sampling=self.sampling(),
            pad_token_id=trainer.processing_class.pad_token_id,
            eos_ids=trainer.eos_ids,
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
                trainer._metrics["train"][f"generation/{key}"].append(float(value))
        trainer._metrics["train"]["generation/eos_rate"].append(stats.num_eos / max(stats.num_prompts, 1))
        trainer._metrics["train"]["generation/truncation_rate"].append(stats.num_truncated / max(stats.num_prompts, 1))
        if trainer.accelerator.is_main_process:
            logger.info("Generated %s: %s", label, stats.to_dict())
        return responses

    def _fill_proto(self, name: str, dataset: TripletDataset, iteration: int, global_step: int) -> None:
        """Proto responses from an earlier iteration file, the cache, or the initial policy (then cached)."""
        trainer, args = self.trainer, self.trainer.args
        for earlier in range(iteration):
            rows = self._read_iteration_rows(earlier, name)
            if rows is not None and all("proto_ids" in row for row in rows):
                dataset.set_column("proto_ids", [row["proto_ids"] for row in rows])
                return
        prompts = dataset.column("prompt_ids")
        key, fields = proto_cache_key(
            trainer.initial_model_fingerprint,
            trainer.tokenizer_fingerprint,
            prompts,
            self.sampling().to_dict() | {"eos_ids": trainer.eos_ids},
            args.seed,
        )
        cache = ProtoCache(args.proto_cache_dir or default_proto_cache_dir()) if args.use_proto_cache else None
        cached = [cache.load(key, len(prompts)) if cache is not None and trainer.accelerator.is_main_process else None]
        if trainer.accelerator.num_processes > 1:
            cached = broadcast_object_list(cached)
        if cached[0] is not None:
            logger.info("Proto-synthetic responses for %s loaded from the cache (%s).", name, key)
            dataset.set_column("proto_ids", cached[0])
            return
        if global_step > 0 or iteration > 0:
            raise RuntimeError(
                f"The proto-synthetic responses of the {name} dataset must come from the initial policy, but they are "
                "in neither the proto cache nor an earlier iteration's files, and the model has already been trained. "
                "Restore `output_dir/self_play/` or the proto cache, or restart training from the beginning."
            )
        chunk_dir = (
            os.path.join(cache.directory, f"{key}.chunks")
            if cache is not None
            else os.path.join(args.output_dir, SELF_PLAY_DIR, f"proto_{name}_chunks")
        )
        responses = self._generate(dataset, args.seed, ChunkStore(chunk_dir, key), f"proto/{name}")
        if cache is not None and trainer.accelerator.is_main_process:
            cache.save(key, responses, fields)
        dataset.set_column("proto_ids", responses)

    # ---- diagnostics and evaluation between iterations ------------------------------------------------------------

    def check_advantage(self, iteration: int) -> bool:
        """Log the iteration's mean advantages; warn and set `self_play/advantage_vanished` if the signal is gone.

        The signal has vanished when the mean `|logp(y) - logp(y')|` fell below `vanishing_advantage_threshold` (a
        likelihood gap, so the test means the same for every objective), or most synthetic responses equal the real
        ones: the model no longer tells its own responses from the annotated ones.
        """
        entries = self._advantage_logs.get(iteration)
        if not entries:
            return False
        mean = lambda values: sum(values) / len(values)  # noqa: E731
        margin = mean([e[2] for e in entries])
        identical = mean([e[3] for e in entries])
        vanished = margin < self.trainer.args.vanishing_advantage_threshold or identical > 0.9
        metrics = {
            "self_play/iteration_mean_advantage_current": mean([e[0] for e in entries]),
            "self_play/iteration_mean_abs_margin": margin,
            "self_play/advantage_vanished": float(vanished),
        }
        historical = [e[1] for e in entries if e[1] is not None]
        if historical:
            metrics["self_play/iteration_mean_advantage_historical"] = mean(historical)
        self.trainer.log_now(metrics, iteration)
        if vanished:
            self.alarms.append(iteration)
            logger.warning(
                "Self-play iteration %d: the current advantage has vanished (mean |logp(real) - logp(synthetic)| "
                "%.4f < %s, or %.0f%% of synthetic responses equal the real ones). The model no longer tells its own "
                "responses from the annotated ones; more iterations will teach little. Consider stopping, more data, "
                "or a different sampling temperature.",
                iteration,
                margin,
                self.trainer.args.vanishing_advantage_threshold,
                100 * identical,
            )
        return vanished

    def _scores_path(self) -> str:
        return os.path.join(self.trainer.args.output_dir, SELF_PLAY_DIR, "scores.jsonl")

    def _score_recorded(self, label: str) -> bool:
        if not os.path.isfile(self._scores_path()):
            return False
        with open(self._scores_path()) as f:
            return any(json.loads(line).get("label") == label for line in f if line.strip())

    def score(self, label: str, global_step: int) -> float:
        """Greedy responses of the current policy to the scorer prompts, scored by the user's scorer."""
        trainer, args = self.trainer, self.trainer.args
        responses, _ = generate_responses(
            trainer.model_wrapped,
            trainer.accelerator,
            trainer.scorer_prompts,
            sampling=SamplingSettings(
                max_new_tokens=args.max_completion_length, generation_kwargs={"do_sample": False}
            ),
            pad_token_id=trainer.processing_class.pad_token_id,
            eos_ids=trainer.eos_ids,
            batch_size=args.generation_batch_size,
            description=f"Scoring ({label})",
            backend=self.backend,
        )
        texts = [trainer.processing_class.decode(ids, skip_special_tokens=True) for ids in responses]
        value = float(trainer.scorer(texts, trainer.scorer_rows))
        record = {"label": label, "step": global_step, "score": value}
        self.scores.append(record)
        trainer.log_now({"self_play/score": value}, None if label == "start" else trainer.current_iteration)
        if trainer.accelerator.is_main_process:
            os.makedirs(os.path.dirname(self._scores_path()), exist_ok=True)
            with open(self._scores_path(), "a") as f:
                f.write(json.dumps(record | {"responses": texts}) + "\n")
            logger.info("Score %s: %.4f", label, value)
        return value

    # ---- per-iteration files -------------------------------------------------------------------------------------

    def _paths(self, iteration: int, name: str) -> tuple[str, str]:
        directory = self.iteration_dir(iteration)
        return os.path.join(directory, f"{name}.jsonl"), os.path.join(directory, f"{name}.meta.json")

    def _read_iteration_rows(self, iteration: int, name: str) -> list[dict[str, Any]] | None:
        entry = read_checked_jsonl(*self._paths(iteration, name))
        return None if entry is None else entry[0]

    def _load_iteration_file(self, iteration: int, name: str, dataset: TripletDataset) -> bool:
        decision = [self._read_iteration_rows(iteration, name) if self.trainer.accelerator.is_main_process else None]
        if self.trainer.accelerator.num_processes > 1:
            decision = broadcast_object_list(decision)
        rows = decision[0]
        if rows is None or len(rows) != len(dataset):
            return False
        for key in ITERATION_COLUMNS:
            if all(key in row for row in rows):
                dataset.set_column(key, [row[key] for row in rows])
        logger.info("Self-play iteration %d (%s) loaded from %s.", iteration, name, self.iteration_dir(iteration))
        return True

    def _write_iteration_file(self, iteration: int, global_step: int, name: str, dataset: TripletDataset) -> None:
        trainer = self.trainer
        if trainer.accelerator.is_main_process:
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
                "num_examples": len(dataset),
                "sampling": self.sampling().to_dict(),
                "seed": trainer.args.seed,
                "objective": trainer.args.objective,
                "beta": self.beta_for(iteration),
                "generation": {k: v.to_dict() for k, v in self.generation_stats.items() if name in k},
            }
            write_checked_jsonl(*self._paths(iteration, name), rows, meta)
        trainer.accelerator.wait_for_everyone()
