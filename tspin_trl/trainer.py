"""`TSPINTrainer`: model/tokenizer/PEFT set-up, the triplet forward pass, metrics and checkpoints."""

import functools
import glob
import logging
import os
import shutil
import textwrap
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object, is_peft_model
from datasets import Dataset, DatasetDict, IterableDataset
from transformers import (
    AutoTokenizer,
    DataCollator,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.optimization import get_scheduler
from transformers.trainer_utils import EvalPrediction, PredictionOutput
from transformers.utils import is_peft_available
from trl.chat_template_utils import clone_chat_template
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import add_fused_lm_head, create_model_from_path, disable_dropout_in_model, get_config_model_id

from .attention import dense_block_mask, flex_block_mask, packed_attention_backend
from .checked_io import atomic_write, follow_umask
from .checkpoints import (
    CheckpointLoadError,
    NodeLayout,
    check_complete_on_every_node,
    checkpoint_dir,
    checkpoint_load_error,
    checkpoint_write_error,
    detect_node_layout,
    last_checkpoint_on_every_node,
    last_complete_checkpoint,
    load_model_weights,
    round_trip_problems,
    step_of,
)
from .clock import IterationClock, IterationPoint
from .collator import ROLES as COLLATED_ROLES
from .collator import DataCollatorForTriplet
from .compat import quiet_checkpointing_renames, score_response_positions_only
from .config import TSPINConfig
from .context import RunContext
from .data import (
    TripletDataset,
    TripletTokenizer,
    apply_formatting_func,
    check_columns,
    eos_token_ids,
    tokenize_dataset,
)
from .locks import RunLock
from .loss import tspin_loss
from .metrics import MetricsLog, per_example_metrics
from .monitor import IterationMonitor
from .objective import ObjectivePolicy
from .preflight import PreflightCallback
from .presets import resolve_model
from .run_folder import RunFolder, check_dataset_name
from .scoring import RewardFunc, ScoringCallback
from .self_play import EvaluationResponses, SelfPlayCallback
from .vllm_backend import make_generation_backend


if is_peft_available():
    from peft import PeftConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer


logger = logging.getLogger(__name__)

__all__ = ["CheckpointLoadError", "NonFinitePolicyError", "TSPINTrainer"]


class NonFinitePolicyError(RuntimeError):
    """The policy's weights are not finite: training diverged."""


# What `compute_metrics` receives: `EvalPrediction.predictions` has one row per evaluation example and these columns
# (NaN where an example has no such response); `label_ids` holds the index of the preferred response, 0 (real).
PREDICTION_COLUMNS = (
    "logps/real",
    "logps/synthetic",
    "logps/proto",
    "rewards/real",
    "rewards/synthetic",
    "rewards/proto",
)

# Settings the trainer's construction consumed (tokenised data, collator, model set-up, and what transformers fixes in
# `Trainer.__init__`: the seed, the train batch size, the reporters; the run folder): changing them on `trainer.args`
# afterwards cannot take effect, so `train()` refuses it. Every other setting is read when used.
PREPARED_WITH = (
    "output_dir",
    "seed",
    "per_device_train_batch_size",
    "report_to",
    "max_length",
    "max_prompt_length",
    "truncation_mode",
    "multi_turn_completions",
    "max_completion_length",  # over-long prompts are dropped or cut to leave it room
    "mix_previous_iteration",
    "pad_to_multiple_of",
    "share_prompt",
    "packed_attention",
    "disable_dropout",
    "model_init_kwargs",
    "response_template",
    "dataset_text_field",
    "chat_template_path",
    "eos_token",
)


class TSPINTrainer(_BaseTrainer):
    """
    Trainer for Triplet-based Self-Play fIne-tuNing (T-SPIN), from the paper [Triplets Better Than Pairs: Towards
    Stable and Effective Self-Play Fine-Tuning for LLMs](https://huggingface.co/papers/2601.08198).

    One `train()` runs every self-play iteration: a [`SelfPlayCallback`], installed by the trainer, samples the
    proto-synthetic responses of the initial policy once (cached on disk), regenerates the synthetic responses with
    the current policy at each iteration boundary, and keeps every iteration's responses under
    `output_dir/self_play/`. By default every iteration is its own fine-tuning run, as in SPIN's recipe: the optimizer
    state is reset and the learning-rate schedule restarts at each iteration boundary (`restart_each_iteration`). An
    [`IterationMonitor`] summarises every iteration from all of its training steps. No reference model is loaded.

    Example:

    ```python
    >>> from datasets import load_dataset
    >>> from tspin_trl import TSPINConfig, TSPINTrainer

    >>> dataset = load_dataset("trl-lib/Capybara", split="train")  # any prompt/completion or messages dataset
    >>> trainer = TSPINTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct",
    ...     args=TSPINConfig(output_dir="Qwen2.5-0.5B-TSPIN", num_iterations=3),
    ...     train_dataset=dataset,
    ... )
    >>> trainer.train()
    ```

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            Model to train: a Hub id or local path (loaded with `args.model_init_kwargs`), a preset name
            (`"preset:tiny"`, offline, see `tspin_trl.presets`), a causal LM instance, or a PEFT model.
        args ([`TSPINConfig`], *optional*):
            Configuration. Defaults to `TSPINConfig("<model name>-TSPIN")`.
        data_collator (`DataCollator`, *optional*):
            Defaults to [`DataCollatorForTriplet`].
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Prompts with real responses, in any format listed in the docs (prompt/completion, messages, SPIN's
            real/generated, DPO's prompt/chosen or implicit-prompt chosen/rejected; tool calls with a `tools` column
            and per-row `chat_template_kwargs`), optionally with `synthetic` and `proto` responses. Rows whose prompt
            leaves no room for a response are dropped or cut per `truncation_mode`.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            Evaluation data in the same formats; self-play generates its responses too.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            Tokenizer; loaded from the model if unset. Falls back to the eos token for padding.
        compute_metrics (`Callable`, *optional*):
            Passed to [`~transformers.Trainer`].
        callbacks (`list[TrainerCallback]`, *optional*):
            Extra callbacks; the self-play callback is always installed.
        optimizers (`tuple`, *optional*):
            Optimizer and scheduler, as for [`~transformers.Trainer`].
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of a model loaded from a string.
        peft_config ([`~peft.PeftConfig`], *optional*):
            Adapter configuration; the model is wrapped with it.
        scorer_dataset ([`~datasets.Dataset`], *optional*):
            Held-out rows with a `prompt` column (text or messages) for `reward_funcs` or `scorer`. Defaults to
            `eval_dataset` when it is one dataset with a `prompt` column.
        reward_funcs (`Callable` or `list[Callable]`, *optional*):
            A task score between iterations, in TRL's `reward_funcs` shape (as `GRPOTrainer` calls them):
            `f(prompts, completions, completion_ids, **columns) -> list[float | None]`, called with the greedy
            responses of the current policy to the prompts of `scorer_dataset` and that dataset's other columns. The
            mean over prompts of the summed rewards is logged as `self_play/score` before training and after every
            iteration, and written with the responses and per-prompt rewards to `output_dir/self_play/scores.jsonl`
            (see `tspin_trl.scoring`).
        scorer (`Callable[[list[str], list[dict]], float]`, *optional*):
            The older shape of the task score: called with the decoded greedy responses and the rows of
            `scorer_dataset`, it returns one number. Give `reward_funcs` or `scorer`, not both.
        ref_model (`None`, *optional*):
            Accepted so that a `DPOTrainer(..., ref_model=None)` call keeps working; T-SPIN never loads a reference
            model (for `objective="spin"`/`"tspin_ref"` the reference log-probs are computed once per iteration).
        formatting_func (`Callable[[dict], str | list[dict]]`, *optional*):
            As in `SFTTrainer`: applied to every row of the training and evaluation sets (and of a set passed to
            `evaluate()`) before anything else. A string is a plain-text row, split into prompt and real response by
            `args.response_template` or the default rule; a list of messages is a conversation whose last assistant
            turn is the real response.
        optimizer_cls_and_kwargs (`tuple[type, dict]`, *optional*):
            As for [`~transformers.Trainer`]: the optimizer class and its keyword arguments, instead of `args.optim`.
        preprocess_logits_for_metrics (`Callable`, *optional*):
            As for [`~transformers.Trainer`]: applied to each evaluation batch's predictions (T-SPIN's per-example
            columns, see `PREDICTION_COLUMNS`) before `compute_metrics`.
        compute_loss_func (`None`, *optional*):
            Accepted so that an `SFTTrainer(..., compute_loss_func=None)` call keeps working; a function is refused
            (T-SPIN's loss is its self-play objective: subclass and override `compute_loss` to change it).

    `args` may also be a `transformers.TrainingArguments` or a TRL `SFTConfig`: it is converted with
    [`TSPINConfig.from_training_arguments`], as `SFTTrainer` converts a `TrainingArguments`.
    """

    loss_is_scaled_for_ga = False
    _tag_names = ["trl", "tspin", "self-play"]
    _name = "T-SPIN"
    _paper = {
        "title": "Triplets Better Than Pairs: Towards Stable and Effective Self-Play Fine-Tuning for LLMs",
        "id": "2601.08198",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{wang2025triplets,
                title        = {{Triplets Better Than Pairs: Towards Stable and Effective Self-Play Fine-Tuning for LLMs}},
                author       = {Wang and Sun and others},
                year         = 2025,
                booktitle    = {Advances in Neural Information Processing Systems 38 (NeurIPS 2025)},
                eprint       = {arXiv:2601.08198},
            }"""),
    }

    def __init__(
        self,
        model: "str | PreTrainedModel",
        args: TSPINConfig | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        quantization_config: Any = None,
        peft_config: "PeftConfig | None" = None,
        scorer: Callable[[list[str], list[dict[str, Any]]], float] | None = None,
        scorer_dataset: Dataset | None = None,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        ref_model: None = None,
        formatting_func: Callable[[dict[str, Any]], Any] | None = None,
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        compute_loss_func: None = None,
    ):
        args = _checked_args(model, args, ref_model, compute_loss_func)
        self._formatting_func = formatting_func
        train_dataset, eval_dataset, eval_datasets, data_formats = _checked_datasets(
            train_dataset, eval_dataset, formatting_func, args.dataset_text_field
        )
        set_seed(args.seed)  # PEFT initialises adapters randomly
        model, model_revision = _loaded_model(model, args, quantization_config)
        processing_class = _loaded_tokenizer(model, processing_class, args, model_revision)
        added_tokens = _with_sft_tokens(model, processing_class, args)
        model = _with_peft(model, peft_config, args, added_tokens)
        train_dataset, eval_dataset = self._prepare_data(
            model, processing_class, args, train_dataset, eval_dataset, eval_datasets, data_formats
        )
        self._choose_layout(model, args)
        if data_collator is None:
            data_collator = DataCollatorForTriplet(
                pad_token_id=processing_class.pad_token_id,
                max_length=args.max_length,
                pad_to_multiple_of=args.pad_to_multiple_of,
                share_prompt=self.share_prompt,
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        self._finish_model()
        self._build_run_parts(train_dataset)
        if scorer_dataset is None and (scorer is not None or reward_funcs is not None):
            scorer_dataset = _default_scorer_dataset(eval_datasets)
        self._install_callbacks(train_dataset, eval_dataset, scorer, scorer_dataset, reward_funcs)

    @property
    def compute_metrics(self) -> Callable[[EvalPrediction], dict] | None:
        """The user's `compute_metrics`, checked: a result that is not a dict of metrics is an error naming it."""
        return self._compute_metrics

    @compute_metrics.setter
    def compute_metrics(self, function: Callable[[EvalPrediction], dict] | None) -> None:
        self._compute_metrics = _checked_metrics(function) if function is not None else None

    # ---- set-up, step by step ------------------------------------------------------------------------------------

    def _prepare_data(
        self,
        model: PreTrainedModel,
        processing_class: PreTrainedTokenizerBase,
        args: TSPINConfig,
        train_dataset: Dataset | IterableDataset,
        eval_dataset: Any,
        eval_datasets: dict[str, Dataset | IterableDataset],
        data_formats: dict[str, Any],
    ) -> tuple[TripletDataset, TripletDataset | dict[str, TripletDataset] | None]:
        """Tokenise the training and evaluation sets into triplet datasets (rows whose prompt leaves no room for a
        response dropped or cut), warn when generated tokens could not be trained on, and give the evaluation sets
        back in the form they were passed (one set, or a dict of them)."""
        self.eos_token_ids = eos_token_ids(processing_class, getattr(model, "generation_config", None))
        self._triplet_tokenizer = TripletTokenizer(
            processing_class,
            args.max_length,
            args.max_prompt_length,
            args.truncation_mode,
            self.eos_token_ids,
            max_completion_length=args.max_completion_length,
            multi_turn_completions=args.multi_turn_completions,
            response_template=args.response_template,
            text_field=args.dataset_text_field,
        )
        train_dataset = tokenize_dataset(
            train_dataset,
            data_formats["train"],
            self._triplet_tokenizer,
            "train",
            mix_previous=args.mix_previous_iteration,
        )
        prepared_eval = {
            name: tokenize_dataset(dataset, data_formats[name], self._triplet_tokenizer, name)
            for name, dataset in eval_datasets.items()
        }
        _warn_unusable_generation_length(args, model, train_dataset)
        if not prepared_eval:
            return train_dataset, None
        if isinstance(eval_dataset, dict):
            return train_dataset, prepared_eval
        return train_dataset, prepared_eval["eval"]

    def _choose_layout(self, model: PreTrainedModel, args: TSPINConfig) -> None:
        """How a batch is laid out and what the forward pass adds: the packed layout behind a shared prompt (and its
        attention backend) or stacked rows, the Mixture-of-Experts router loss, and `DPOTrainer`'s attributes."""
        self.packed_attention = (
            packed_attention_backend(model, args.packed_attention, args.device, dropout=not args.disable_dropout)
            if args.share_prompt
            else None
        )
        # Mixture-of-Experts: the router load-balancing loss, as DPOTrainer adds it (`output_router_logits` in the
        # config means the model returns its router logits; the coefficient is the architecture's own unless set)
        text_config = model.config.get_text_config()
        coefficient = args.router_aux_loss_coef
        self.router_aux_loss_coef = (
            getattr(text_config, "router_aux_loss_coef", 0.0) if coefficient is None else coefficient
        )
        if coefficient and not hasattr(text_config, "output_router_logits"):
            raise ValueError(
                f"`router_aux_loss_coef` is set to {coefficient} but {type(model).__name__} is not a Mixture-of-Experts "
                "model that returns its router logits, so there is no auxiliary loss to weight. Leave it unset."
            )
        self._has_router = hasattr(text_config, "output_router_logits")
        self.aux_loss_enabled = self._has_router and self.router_aux_loss_coef != 0.0
        if self.aux_loss_enabled and self.packed_attention is not None:
            # the load-balancing loss reads a (batch, length) attention mask; the packed layout's is a block mask
            logger.info("Mixture-of-Experts router loss on: the responses are stacked, not packed behind the prompt.")
            self.packed_attention = None
        self.share_prompt = self.packed_attention is not None
        # DPOTrainer's attributes, for code written against it: no reference model (reference log-probs, where the
        # objective uses them, are precomputed from the policy); `padding_free` is the packed layout here
        self.ref_model = None
        self.padding_free = self.share_prompt

    def _finish_model(self) -> None:
        """What follows transformers' set-up of the model: refuse `nn.DataParallel`, turn dropout off (if asked), put
        in the fused head (per-token log-probs in tiles, without the `(batch, seq_len, vocab)` logits), tag it."""
        if self.args.n_gpu > 1:
            raise ValueError(
                "TSPINTrainer does not support `nn.DataParallel` (several GPUs visible to one process). Launch with "
                "`accelerate launch` or `torchrun`, or make one GPU visible with `CUDA_VISIBLE_DEVICES`."
            )
        if self.args.disable_dropout:
            disable_dropout_in_model(self.model)
        # `is_top1` (is the label the argmax?) comes out of the head's tiles: `mean_token_accuracy` without the logits
        add_fused_lm_head(
            self.model.get_base_model() if is_peft_model(self.model) else self.model, outputs=("log_probs", "is_top1")
        )
        self.model.add_model_tags(self._tag_names)

    def _build_run_parts(self, train_dataset: TripletDataset) -> None:
        """The run's parts, once: what the prepared data was built with (`train()` refuses a later change to it), the
        metrics log, the run folder and its lock, and the [`RunContext`] (clock, policy, sampler, ...) the callbacks
        use, built by the factory the tests use too."""
        args = self.args
        self._prepared_with = {name: getattr(args, name) for name in PREPARED_WITH}
        self._steps_settings = (args.max_steps, args.num_iterations)
        self._without_effect = args.settings_without_effect()  # warned when the config was built
        self.metrics = MetricsLog()
        self._num_tokens: torch.Tensor | float = 0.0  # SFT's `num_tokens`, on the device once training runs
        self._metric_key_prefix = "eval"
        self.run_folder = RunFolder(args.output_dir)
        self._run_lock = RunLock(self.run_folder.lock_path)
        self.node_layout = NodeLayout(1, True)  # found out at the start of `train()`
        self.context = RunContext.build(
            args,
            self.accelerator,
            self.model,
            self.processing_class,
            metrics=self.metrics,
            sampled_model=lambda: self.model_wrapped,
            backend_factory=functools.partial(
                make_generation_backend, args, self.model, self.accelerator, self.processing_class
            ),
            guard=lambda what: self._check_policy_is_finite(f"before {what[:1].lower()}{what[1:]}"),
            compute_logps=self.compute_dataset_logps,
            on_iteration_start=self._on_iteration_start,
            own_synthetic=train_dataset.has("synthetic"),
            eos_ids=self.eos_token_ids,
        )

    def _install_callbacks(
        self,
        train_dataset: TripletDataset,
        eval_dataset: TripletDataset | dict[str, TripletDataset] | None,
        scorer: Callable[[list[str], list[dict[str, Any]]], float] | None,
        scorer_dataset: Dataset | None,
        reward_funcs: RewardFunc | list[RewardFunc] | None,
    ) -> None:
        """The self-play callback over every dataset it fills (`"train"`, then `"eval"` or `"eval_<name>"`) and the
        `evaluate()` service beside it, the preflight (if on), the iteration monitor, and the scorer (if given)."""
        datasets = {"train": train_dataset}
        if isinstance(eval_dataset, dict):
            datasets.update({f"eval_{name}": dataset for name, dataset in eval_dataset.items()})
        elif eval_dataset is not None:
            datasets["eval"] = eval_dataset
        self.self_play = SelfPlayCallback(self.context, datasets)
        self.evaluation = EvaluationResponses(
            self.context, self.self_play.responses, self.self_play.files, self.self_play.compute_identity
        )
        self.monitor = IterationMonitor(self.context)
        self.add_callback(self.self_play)
        if self.args.preflight:
            scores = scorer is not None or reward_funcs is not None
            will_generate = self.args.num_iterations > 1 or len(datasets) > 1 or scores
            saves = self.args.save_strategy != "no"
            self.add_callback(
                PreflightCallback(
                    self.context,
                    train_dataset,
                    will_generate,
                    self._probe_checkpointing if saves else None,
                    lambda: (
                        self._probe_metrics if self.compute_metrics and not self.args.prediction_loss_only else None
                    ),
                )
            )
        self.add_callback(self.monitor)
        self.scoring = None
        if scorer is not None or scorer_dataset is not None or reward_funcs is not None:
            self.scoring = ScoringCallback(
                self.context, scorer, scorer_dataset, self._triplet_tokenizer, reward_funcs=reward_funcs
            )
            self.add_callback(self.scoring)

    # ---- data plumbing -------------------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [
                "prompt_ids",
                "real_ids",
                "synthetic_ids",
                "proto_ids",
                "ref_real_logps",
                "ref_synthetic_logps",
                "ref_proto_logps",
            ]

    # ---- self-play state ------------------------------------------------------------------------------------------

    @property
    def clock(self) -> IterationClock:
        """The run's iteration clock (the context's: rebuilt from the settings as `train()` starts)."""
        return self.context.clock

    @property
    def policy(self) -> ObjectivePolicy:
        """The objective's policy (the context's: rebuilt from the settings as `train()` starts)."""
        return self.context.policy

    @property
    def iteration(self) -> int:
        """The self-play iteration whose triplets are loaded (0 before training)."""
        return self.clock.current or 0

    @property
    def alpha(self) -> float:
        """The reward scale of the current iteration, as the policy decides it."""
        return self.policy.alpha_for(self.iteration)

    @property
    def beta(self) -> float:
        """The historical term's weight in the current iteration, as the policy decides it."""
        return self.policy.beta_for(self.iteration)

    @property
    def precompute_ref_logps(self) -> bool:
        """As `DPOTrainer`'s: whether reference log-probs are precomputed (once per iteration, for `objective="spin"`
        or `"tspin_ref"`); T-SPIN never loads a reference model."""
        return self.policy.uses_reference

    def start_iteration(self, iteration: int) -> None:
        """Make `iteration` the current one, as self-play does at its boundary: its alpha and beta for the loss, and a
        fresh optimizer state when it starts here (see [`_on_iteration_start`])."""
        self.context.start_iteration(self.clock.point(iteration, self.state.global_step))

    def _on_iteration_start(self, point: IterationPoint) -> None:
        """The trainer's part of starting an iteration: when every iteration is its own run (`restart_each_iteration`)
        and the previous iteration's optimizer steps are behind, a fresh optimizer state.

        The learning-rate schedule needs no action: it is a function of the step (see [`create_scheduler`]). Resuming
        in the middle of an iteration keeps the checkpoint's optimizer state.
        """
        if self.args.restart_each_iteration and point.iteration > 0 and point.at_start and self.optimizer is not None:
            cleared = _reset_optimizer_state(self.optimizer)
            self.metrics.record("self_play/optimizer_states_reset", float(cleared))
            logger.info("Iteration %d: optimizer state reset (%d parameter states cleared).", point.iteration, cleared)

    # ---- training loop ----------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        if not resume_from_checkpoint and self.state.global_step > 0:
            raise ValueError(
                f"This trainer's model has already been trained ({self.state.global_step} steps of an earlier `train()` "
                "call): a fresh `train()` would start from those weights while the run's identity, proto cache and "
                "iteration-0 responses belong to the initial model. Continue the interrupted run with "
                "`trainer.train(resume_from_checkpoint=True)`, or start a new self-play run from the trained model with "
                "a new trainer: `TSPINTrainer(model=trainer.model, args=..., ...)` (a new `output_dir`)."
            )
        self._check_settings()
        self.metrics.clear()  # what an interrupted step of an earlier call recorded
        resume_from_checkpoint = self._checkpoint_to_resume(resume_from_checkpoint)
        if resume_from_checkpoint:  # what the checkpoint's `log_history` has not logged yet, and what it has
            self.metrics.restore(resume_from_checkpoint)
        self._start_run_parts(resume_from_checkpoint or None)
        if self.args.should_save:
            self._run_lock.acquire()
        try:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self._run_lock.release()
        try:
            self.write_results()  # the card and results.md, complete, also with `save_strategy="no"`
        except Exception:  # the training is done and its model in memory: a report that fails must not lose them
            logger.exception("Could not write results.md and the model card; call trainer.write_results() to retry.")
        return output

    def _check_settings(self) -> None:
        """Read the settings as `train()` starts, as transformers reads its own: a field changed on `trainer.args`
        after construction is validated and takes effect (iterations, objective, sampling, ...; see
        [`_start_run_parts`]), or, where the prepared data or model were built with it, is refused naming it."""
        args = self.args
        if not isinstance(args, TSPINConfig):
            raise TypeError(
                f"`trainer.args` was replaced by a {type(args).__name__} after the trainer was built: TSPINTrainer needs "
                "its TSPINConfig (the T-SPIN settings, and the run folder, accelerator and prepared data built from "
                "it). Change fields of the TSPINConfig instead, or build a new TSPINTrainer with `args=TSPINConfig(...)` "
                "(it takes every TrainingArguments field)."
            )
        if args is not self.context.args:
            raise ValueError(
                "`trainer.args` was replaced by another TSPINConfig after the trainer was built. Its accelerator, run "
                "folder and prepared data belong to the first one: build a new TSPINTrainer with the new config, or "
                "change fields of `trainer.args` itself."
            )
        args.validate()
        if (args.max_steps, args.num_iterations) != self._steps_settings:  # changed on `trainer.args` since __init__
            args.warn_if_max_steps_cuts_iterations()
            self._steps_settings = (args.max_steps, args.num_iterations)
        without_effect = args.settings_without_effect()
        for note in without_effect:
            if note not in self._without_effect:  # made ineffective by a change on `trainer.args`
                warnings.warn(note, stacklevel=3)
        self._without_effect = without_effect
        changed = [
            f"{name} ({before!r} -> {getattr(args, name)!r})"
            for name, before in self._prepared_with.items()
            if getattr(args, name) != before
        ]
        if changed:
            raise ValueError(
                f"trainer.args changed after the trainer was built: {', '.join(changed)}. The data, collator and model "
                "were prepared with the old values; build a new TSPINTrainer with the new settings."
            )

    def _checkpoint_to_resume(self, resume_from_checkpoint: str | bool | None) -> str | bool | None:
        """The node layout of `output_dir`, and the checkpoint `resume_from_checkpoint=True` means: the last one
        complete on every node (a named one is checked complete on every node)."""
        output_dir = self.args.output_dir
        self.node_layout = detect_node_layout(output_dir, self.accelerator)
        self.node_layout.check_writers(output_dir, self.args.save_on_each_node)
        if resume_from_checkpoint is True:
            return last_checkpoint_on_every_node(output_dir, self.accelerator, self.node_layout.num_nodes)
        if resume_from_checkpoint and self.node_layout.num_nodes > 1:
            check_complete_on_every_node(resume_from_checkpoint, self.accelerator)
        return resume_from_checkpoint

    def _start_run_parts(self, resumed_from_checkpoint: str | None) -> None:
        """The run's clock and policy built again from the settings as they are now (by the context, their owner), and
        transformers' epoch count set to the clock's."""
        epochs = self.clock.num_train_epochs
        self.context.start_train(resumed_from_checkpoint)
        if self.args.num_train_epochs not in (epochs, self.clock.num_train_epochs):
            logger.warning(
                "`num_train_epochs=%s` is ignored: T-SPIN runs `num_iterations * epochs_per_iteration = %d` epochs.",
                self.args.num_train_epochs,
                self.clock.num_train_epochs,
            )
        self.args.num_train_epochs = self.clock.num_train_epochs

    def _probe_checkpointing(self) -> None:
        """The preflight's checkpoint check: save the model as a checkpoint does (every process takes part, as in a
        save); where a resume loads it this way (not under DeepSpeed or FSDP, whose engines load their own files),
        compare every tensor with the value a resume reads back for it, then load it; remove the folder."""
        self._check_checkpoint_names_free()
        folder = self.run_folder.preflight_dir
        self.save_model(folder, _internal_call=True)
        self.accelerator.wait_for_everyone()
        if not (self.is_deepspeed_enabled or self.is_fsdp_enabled or self._quantized):
            problems = round_trip_problems(self.model, folder)
            if problems:
                raise CheckpointLoadError(
                    f"The model saved as a checkpoint ({folder}) does not load back as it was: {'; '.join(problems)}. A "
                    f"resume would not continue from the saved weights of this {type(self.model).__name__}."
                )
            self._load_from_checkpoint(folder)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            shutil.rmtree(folder, ignore_errors=True)

    def _check_checkpoint_names_free(self) -> None:
        """Refuse a file (not a folder) in `output_dir` named as a checkpoint this run will save (`checkpoint-<step>`):
        the save at that step would fail with `FileExistsError`, hours in."""
        output_dir, last = self.args.output_dir, self.state.max_steps
        taken = sorted(
            path
            for path in glob.glob(os.path.join(output_dir, "checkpoint-*"))
            if not os.path.isdir(path)
            and (step := step_of(path)) is not None
            and self.state.global_step < step <= last
        )
        if taken:
            raise FileExistsError(
                f"{taken[0]} is a file, where this run saves the checkpoint of step {step_of(taken[0])} (a folder): "
                f"the save would fail then. Move or delete it ({len(taken)} such file(s) in output_dir)."
            )

    def _probe_metrics(self) -> None:
        """The preflight's `compute_metrics` check: called once, as evaluation calls it, on the predictions of one
        training example (its metrics are discarded)."""
        was_training = self.model.training
        self.model.eval()  # the example's T-SPIN metrics go to the evaluation log, flushed below
        try:
            batch = self.data_collator([self.train_dataset[0]])
            loss, predictions, labels = self.prediction_step(self.model, batch, prediction_loss_only=False)
            extra = {}
            if "loss" in self.args.include_for_metrics:
                extra["losses"] = loss.detach().float().reshape(1).cpu().numpy()
            if "inputs" in self.args.include_for_metrics:
                extra["inputs"] = batch["input_ids"].cpu().numpy()
            prediction = EvalPrediction(
                predictions=predictions.float().cpu().numpy(), label_ids=labels.cpu().numpy(), **extra
            )
            if self.args.batch_eval_metrics:
                self.compute_metrics(prediction, compute_result=True)
            else:
                self.compute_metrics(prediction)
        finally:
            self.metrics.flush("eval")
            if was_training:
                self.model.train()

    @property
    def _quantized(self) -> bool:
        return getattr(self.model, "is_loaded_in_4bit", False) or getattr(self.model, "is_loaded_in_8bit", False)

    def _loads_whole_weights(self, model: torch.nn.Module) -> bool:
        """Whether a checkpoint's model weights are loaded here, converted to the model's layout (see
        [`~tspin_trl.checkpoints.load_model_weights`]): a whole model, not an adapter, not under DeepSpeed or FSDP
        (whose engines load their own files), not quantized."""
        return isinstance(model, PreTrainedModel) and not (
            self.is_deepspeed_enabled or self.is_fsdp_enabled or self._quantized
        )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers loads a whole model's weights with a plain `load_state_dict`, which leaves the experts of a
        # Mixtral or Qwen2-MoE checkpoint (saved per expert, held fused) at their current values with only a warning
        model = self.model if model is None else model
        try:
            if self._loads_whole_weights(model) and load_model_weights(model, resume_from_checkpoint):
                return None
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        except CheckpointLoadError:
            raise
        except Exception as error:
            raise checkpoint_load_error("the model weights", resume_from_checkpoint, error) from error

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if self._loads_whole_weights(self.model) and load_model_weights(self.model, best):
            logger.info("Loaded the best model from %s (score: %s).", best, self.state.best_metric)
            return
        super()._load_best_model()

    def _load_optimizer_and_scheduler(self, checkpoint):
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        except Exception as error:
            raise checkpoint_load_error("the optimizer or scheduler state", checkpoint, error) from error

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self.clock.set_steps_per_epoch(values[1])
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """With `restart_each_iteration`, the schedule (warm-up included) of one iteration, repeated every iteration:
        a function of the step within the iteration, so that a resume anywhere continues it exactly. With a
        `learning_rate_schedule`, each iteration's rate is also multiplied by its value (with one schedule over all
        iterations too)."""
        scaled = self.policy.learning_rate_schedule is not None
        restart = self.args.restart_each_iteration
        if (not restart and not scaled) or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = self.optimizer if optimizer is None else optimizer
        steps = (self.clock.steps_per_iteration or num_training_steps) if restart else num_training_steps
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        base = get_scheduler(
            self.args.lr_scheduler_type,
            optimizer=probe,
            num_warmup_steps=self.args.get_warmup_steps(steps),
            num_training_steps=steps,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
        )
        if not isinstance(base, torch.optim.lr_scheduler.LambdaLR):
            why = "restart at every iteration" if restart else "be scaled per iteration (`learning_rate_schedule`)"
            raise ValueError(
                f"lr_scheduler_type={self.args.lr_scheduler_type!r} cannot {why}. Use a step-based schedule (e.g. "
                "'linear', 'cosine', 'constant_with_warmup')"
                + (" or restart_each_iteration=False." if restart else " or no learning_rate_schedule.")
            )
        factor = base.lr_lambdas[0]

        def per_iteration(step: int) -> float:
            iteration, step_in_iteration, _ = self.clock.schedule_position(step, num_training_steps)
            return factor(step_in_iteration if restart else step) * self.policy.learning_rate_scale(iteration)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, per_iteration)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ---- forward pass --------------------------------------------------------------------------------------------

    def response_logps(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed response log-probs of a collated batch, from one forward pass: shape `(num_roles, batch_size)`.

        Works with both layouts of [`DataCollatorForTriplet`]: rows stacked role by role, or one packed row per
        example whose segments see the shared prompt prefix and themselves (a block attention mask).
        """
        return self._forward(model, inputs)[0]

    def _forward(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], router_loss: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The response log-probs of a batch, with `router_loss` the model's router load-balancing loss, and the
        real responses' token counts: `(argmax-correct tokens, tokens, prompt + response tokens)` (see
        `_token_counts`)."""
        batch_size, num_roles = inputs["response_lengths"].shape
        with score_response_positions_only():
            return self._response_logps(model, inputs, batch_size, num_roles, router_loss)

    def _response_logps(self, model, inputs, batch_size: int, num_roles: int, router_loss: bool = False):
        if "segment_ids" in inputs:
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=self._block_attention_mask(inputs["segment_ids"]),
                position_ids=inputs["position_ids"],
                shift_labels=inputs["shift_labels"],
                fused_lm_head=True,
                use_cache=False,
                # explicit, whatever the config says: the router loss reads a (batch, length) mask, not a block mask
                **({"output_router_logits": False} if self._has_router else {}),
            )
            valid = inputs["shift_labels"] != -100
            roles = (inputs["segment_ids"] - 1).clamp(min=0)
            per_token = outputs.log_probs.masked_fill(~valid, 0)
            logps = per_token.new_zeros(batch_size, num_roles).scatter_add_(1, roles, per_token)
            real = valid & (inputs["segment_ids"] == 1)
            # the prompt's tokens (all but its last, segment 0) and the real segment (the prompt's last + response)
            sequence = (inputs["segment_ids"] == 0) | (inputs["segment_ids"] == 1)
            return logps.t(), None, _token_counts(outputs.is_top1, real, sequence)
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            fused_lm_head=True,
            use_cache=False,
            **({"output_router_logits": router_loss} if self._has_router else {}),
        )
        # Prompt-learning PEFT methods prepend virtual tokens: keep the positions of the real tokens
        positions = slice(-(completion_mask.size(1) - 1), None)
        per_token = outputs.log_probs[:, positions]
        real = completion_mask[:batch_size, 1:].bool()  # the real responses' rows come first
        sequence = inputs["attention_mask"][:batch_size]
        is_top1 = None if outputs.is_top1 is None else outputs.is_top1[:batch_size, positions]
        counts = _token_counts(is_top1, real, sequence)
        return per_token.sum(dim=1).view(num_roles, batch_size), outputs.aux_loss if router_loss else None, counts

    def _block_attention_mask(self, segment_ids: torch.Tensor) -> Any:
        """Mask of the packed layout (causal, a segment sees the shared prefix and itself), in the form chosen by
        `packed_attention`: a FlexAttention `BlockMask`, a boolean 4D mask for SDPA (dtype-independent under autocast),
        or an additive one in the model's dtype for the eager implementation."""
        if self.packed_attention == "flex":
            return flex_block_mask(segment_ids)
        if getattr(self.model.config, "_attn_implementation", "sdpa") != "eager":
            return dense_block_mask(segment_ids)
        return dense_block_mask(segment_ids, self.model.dtype if self.model.dtype.is_floating_point else torch.float32)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        logps, aux_loss, token_counts = self._forward(model, inputs, router_loss=self.aux_loss_enabled)
        self._record_token_metrics(mode, token_counts)
        num_roles = logps.size(0)
        real_logps, synthetic_logps = logps[0], logps[1]
        proto_logps = logps[2] if num_roles == 3 else None
        beta = self.beta
        if beta > 0 and proto_logps is None:
            raise RuntimeError(f"Iteration {self.iteration} uses beta={beta} but the batch has no proto responses.")
        refs = {}
        if self.policy.uses_reference:
            for role in ("real", "synthetic", "proto"):
                if f"ref_{role}_logps" in inputs:
                    refs[f"ref_{role}_logps"] = inputs[f"ref_{role}_logps"].to(logps.dtype)
        losses, current_losses, historical_losses = tspin_loss(
            real_logps,
            synthetic_logps,
            proto_logps,
            alpha=self.alpha,
            beta=beta,
            loss_type=self.args.loss_type,
            **refs,
        )
        loss = losses.mean()
        if self.args.real_nll_weight > 0:
            real_tokens = inputs["response_lengths"][:, 0].sum().clamp(min=1)
            real_nll = -real_logps.sum() / real_tokens
            loss = loss + self.args.real_nll_weight * real_nll
            self.metrics.record("loss/real_nll", real_nll.detach(), mode)
        if aux_loss is not None:
            loss = loss + self.router_aux_loss_coef * aux_loss
            self.metrics.record("aux_loss", self.accelerator.gather_for_metrics(aux_loss.detach()).mean(), mode)

        columns = self._record_metrics(
            mode, inputs, logps.detach(), refs, losses.detach(), current_losses, historical_losses
        )
        if return_outputs:
            predictions = torch.stack([columns[name].float() for name in PREDICTION_COLUMNS], dim=1)
            return loss, {"logps": logps.detach(), "predictions": predictions}
        return loss

    def _record_token_metrics(self, mode: str, token_counts: torch.Tensor | None) -> None:
        """SFT's `mean_token_accuracy` (the share of real-response tokens that are the model's argmax, from the fused
        head's tiles: no logits) and its `num_tokens` (prompt + real-response tokens trained on, cumulated over the
        training steps, as SFTTrainer counts them), summed over processes without a host sync."""
        if token_counts is None:
            return
        correct, total, tokens = self.accelerator.gather(token_counts.detach()).view(-1, 3).sum(0)
        self.metrics.record("mean_token_accuracy", correct / total.clamp(min=1), mode)
        if mode == "train":
            self._num_tokens = self._num_tokens + tokens.double()

    def _record_metrics(self, mode, inputs, logps, refs, losses, current_losses, historical_losses):
        """Per-example metrics by name (see [`~tspin_trl.metrics.per_example_metrics`]), gathered once per step as one
        tensor; averaged and converted to floats only in `log` (no host sync in the training step)."""
        columns = per_example_metrics(
            logps,
            refs,
            losses,
            current_losses,
            historical_losses,
            inputs["response_lengths"],
            inputs["synthetic_equals_real"],
            alpha=self.alpha,
            loss_type=self.args.loss_type,
            saturation_threshold=self.args.saturation_threshold,
        )
        names = list(columns)
        stacked = self.accelerator.gather_for_metrics(torch.stack([columns[n].float() for n in names], dim=1))
        self.metrics.add_columns(mode, dict(zip(names, stacked.unbind(1), strict=True)))
        return columns

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """As `DPOTrainer.log`: the averaged metrics of the mode (training or evaluation) join the entry. A training
        entry also gets the iteration, alpha and beta at its step, and a training entry or the train summary gets the
        self-play quantities measured since the last one (see [`~tspin_trl.metrics.MetricsLog.take_riding`]): self-play
        adds no entry of its own to `log_history`."""
        mode = "train" if self.model.training else "eval"
        metrics = self.metrics.flush(mode)
        if mode == "eval" and metrics.get("length/real"):
            # comparable across iterations (fixed responses, unlike the loss): `metric_for_best_model`'s candidate
            metrics["logps/real_per_token"] = metrics["logps/real"] / metrics["length/real"]
        if "mean_token_accuracy" in metrics:  # a training or evaluation line: SFT's token count so far goes with it
            metrics["num_tokens"] = float(self._num_tokens)
        if mode == "eval":  # `eval_`, or `eval_<name>_` for one of several evaluation sets, as the loss is named
            metrics = {f"{self._metric_key_prefix}_{key}": value for key, value in metrics.items()}
        elif "loss" in logs:  # a training entry: the iteration of its step (a logging window may span a boundary)
            metrics.update({"self_play/iteration": self.iteration, "alpha": self.alpha, "beta": self.beta})
        if "loss" in logs or "train_runtime" in logs:
            metrics.update(self.metrics.take_riding())
        logs.update(metrics)
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys: list[str] | None = None):
        """The loss and, unless `prediction_loss_only`, the per-example predictions `compute_metrics` receives: one
        row per example with the columns of `PREDICTION_COLUMNS` (summed log-probs and rewards of the real, synthetic
        and proto responses; NaN where there is none), and as labels the index of the preferred response, 0 (the real
        one). `preprocess_logits_for_metrics`, if given, is applied to these predictions, as transformers does."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            if prediction_loss_only:
                return self.compute_loss(model, inputs).detach(), None, None
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        predictions = outputs["predictions"]
        labels = torch.zeros(predictions.size(0), dtype=torch.long, device=predictions.device)
        return loss.detach(), predictions, labels

    def evaluate(
        self,
        eval_dataset: Dataset | IterableDataset | DatasetDict | dict[str, Dataset | IterableDataset] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluate, as [`~transformers.Trainer.evaluate`], on the eval set given at init or on `eval_dataset`.

        A dataset passed here (a `Dataset`, `IterableDataset`, `DatasetDict` or dict of them, in any format the
        training data accepts) is prepared like the evaluation sets given at init: tokenised, then filled with
        responses by self-play (see [`~tspin_trl.self_play.EvaluationResponses.prepare`]). A dict or `DatasetDict` is
        evaluated set by set, each under `eval_<name>_` (the loss and T-SPIN's metrics alike).
        """
        if eval_dataset is None and isinstance(self.eval_dataset, dict):
            eval_dataset = self.eval_dataset  # each set under eval_<name>_, as transformers does
        elif eval_dataset is None or isinstance(eval_dataset, str):
            name = eval_dataset
            eval_dataset = self._evaluation_set_named(name)
            eval_dataset = self._prepared_for_evaluation(eval_dataset, name or "eval")
        if isinstance(eval_dataset, (dict, DatasetDict)):
            metrics = {}
            for name, dataset in eval_dataset.items():
                metrics.update(
                    self.evaluate(
                        self._prepared_for_evaluation(dataset, name), ignore_keys, f"{metric_key_prefix}_{name}"
                    )
                )
            return metrics
        eval_dataset = self._prepared_for_evaluation(eval_dataset, metric_key_prefix.removeprefix("eval_"))
        self._metric_key_prefix = metric_key_prefix
        try:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._metric_key_prefix = "eval"

    def _evaluation_set_named(self, name: str | None) -> Any:
        """The evaluation set `evaluate(eval_dataset=name)` means: the one given at init (`None`), or the one of that
        name among those given as a dict; an error naming `eval_dataset` and the sets there are otherwise."""
        given = self.eval_dataset
        if name is None:
            if given is None:
                raise ValueError(
                    "evaluate() has no evaluation data: pass `eval_dataset` (a Dataset, or a dict of them) to "
                    "evaluate(), or to TSPINTrainer(eval_dataset=...)."
                )
            return given
        if not isinstance(given, dict):
            what = "no evaluation set" if given is None else "one unnamed evaluation set"
            raise ValueError(
                f"evaluate(eval_dataset={name!r}): a name picks one of the evaluation sets given to TSPINTrainer as a "
                f"dict, and this trainer was given {what}. Pass the dataset itself, or build the trainer with "
                f"eval_dataset={{{name!r}: dataset}}."
            )
        if name not in given:
            raise ValueError(
                f"evaluate(eval_dataset={name!r}): the trainer has no evaluation set of that name; its sets are "
                f"{sorted(given)}."
            )
        return given[name]

    def predict(
        self,
        test_dataset: Dataset | IterableDataset,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
    ) -> PredictionOutput:
        """Predict, as [`~transformers.Trainer.predict`]: a raw dataset is prepared as [`~TSPINTrainer.evaluate`]
        prepares one; `predictions` has the per-example columns of `PREDICTION_COLUMNS`."""
        test_dataset = self._prepared_for_evaluation(test_dataset, metric_key_prefix)
        self._metric_key_prefix = metric_key_prefix
        try:
            return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._metric_key_prefix = "eval"

    def _prepared_for_evaluation(self, dataset: Any, name: str) -> Any:
        """A set ready to evaluate: a raw one tokenised and filled with responses; a prepared one (given at init)
        whose responses self-play has not sampled yet (before `train()`) filled in a copy, so that training still
        prepares the original as it would have."""
        if isinstance(dataset, TripletDataset):
            if dataset.has("synthetic"):
                return dataset
            copy = TripletDataset(
                [dict(example) for example in dataset.examples],
                num_source_rows=dataset.num_source_rows,
                max_length=dataset.max_length,
            )
            self.evaluation.prepare(check_dataset_name(name or "eval"), copy, self.state.global_step)
            return copy
        if not isinstance(dataset, (Dataset, IterableDataset)):
            raise TypeError(
                f"`eval_dataset` must be a `datasets.Dataset`, `IterableDataset`, `DatasetDict` or a dict of them, got "
                f"{type(dataset).__name__}. Wrap a list of rows with `datasets.Dataset.from_list(rows)`."
            )
        name = check_dataset_name(name or "eval")
        text_field = self.args.dataset_text_field
        if self._formatting_func is not None:
            dataset = apply_formatting_func(dataset, self._formatting_func, text_field)
        prepared = tokenize_dataset(dataset, check_columns(dataset, name, text_field), self._triplet_tokenizer, name)
        self.evaluation.prepare(name, prepared, self.state.global_step)
        return prepared

    # ---- used by self-play at iteration boundaries ---------------------------------------------------------------

    @torch.no_grad()
    def compute_dataset_logps(self, dataset: TripletDataset, roles: tuple[str, ...]) -> dict[str, list[float]]:
        """Summed log-probs of the given responses (`"real"`, `"synthetic"`, `"proto"`, `"previous_synthetic"`) of
        every prompt of `dataset`, under the current policy.

        The work is sharded over processes (each makes the same number of forward passes, as ZeRO-3 requires) and
        gathered back in order; up to three responses share a forward pass.
        """
        if len(roles) > len(COLLATED_ROLES):
            first = self.compute_dataset_logps(dataset, roles[: len(COLLATED_ROLES)])
            return first | self.compute_dataset_logps(dataset, roles[len(COLLATED_ROLES) :])
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        batch_size = self.args.logps_batch_size or self.args.per_device_eval_batch_size
        model = self.model  # a plain forward; ZeRO-3 gathers parameters through its module hooks
        was_training = model.training
        model.eval()
        results: dict[int, list[float]] = {}
        per_chunk = batch_size * world
        num_examples = len(dataset.examples)
        collator = DataCollatorForTriplet(
            pad_token_id=self.processing_class.pad_token_id,
            max_length=self.args.max_length,
            share_prompt=self.share_prompt,
            require_synthetic=False,
        )
        try:
            checkpointing_kwargs = self.args.activation_checkpointing_kwargs or self.args.gradient_checkpointing_kwargs
            with quiet_checkpointing_renames(), disable_gradient_checkpointing(self.model, checkpointing_kwargs):
                for start in range(0, num_examples, per_chunk):
                    chunk = list(range(start, min(start + per_chunk, num_examples)))
                    mine = chunk[rank::world]
                    # the collator's response slots, filled with the requested roles in order
                    examples = [
                        {"prompt_ids": dataset.examples[i]["prompt_ids"]}
                        | {
                            f"{slot}_ids": dataset.examples[i][f"{role}_ids"]
                            for slot, role in zip(COLLATED_ROLES[: len(roles)], roles, strict=True)
                        }
                        for i in (mine or chunk[:1])
                    ]
                    batch = self._prepare_inputs(collator(examples))
                    values = self.response_logps(model, batch).float().t().tolist()
                    # a process with nothing left scored a repeated example: its values are dropped
                    local = list(zip(mine, values[: len(mine)], strict=True))
                    gathered = local if world == 1 else gather_object(local)
                    results.update(dict(gathered))
        finally:
            if was_training:
                model.train()
        return {role: [results[i][r] for i in range(num_examples)] for r, role in enumerate(roles)}

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # transformers' `save_pretrained` writes on global rank 0 only, even for the local main process of another
        # node that `save_on_each_node` makes a writer (`args.should_save`): that node's checkpoint would lack weights.
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        node_writer = self.args.should_save and self.accelerator.process_index != 0
        if node_writer and hasattr(model, "should_save_on_this_rank"):
            model.should_save_on_this_rank = lambda is_main_process: is_main_process
            try:
                super()._save(output_dir, state_dict)
            finally:
                del model.should_save_on_this_rank
        else:
            super()._save(output_dir, state_dict)
        if self.args.should_save:
            follow_umask(output_dir if output_dir is not None else self.args.output_dir)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: str | list[str] | None = None,
    ):
        """
        TRL's model card, without Hub links to what is not on the Hub (a base model loaded from a local folder is named
        by its folder name, and a local dataset or a mixture is named without a link and left out of the metadata),
        with the run's T-SPIN settings and per-iteration table, and the base model's license when its card states one
        (see `tspin_trl.model_card`).

        Args:
            model_name (`str`, *optional*):
                Name of the model.
            dataset_name (`str` or `list[str]`, *optional*):
                Hub id(s) or local path(s) of the training data.
            tags (`str` or `list[str]`, *optional*):
                Tags to be associated with the model card.
        """
        if dataset_name is None:  # a later rewrite (end of `train()`, `save_model()`) keeps the name given once
            dataset_name = getattr(self, "_card_dataset_name", None)
        self._card_dataset_name = dataset_name
        names = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name or [])
        one_hub_dataset = len(names) == 1 and not Path(names[0]).exists()
        super().create_model_card(model_name, names[0] if one_hub_dataset else None, tags)
        if not self.is_world_process_zero():
            return
        card = Path(self.args.output_dir, "README.md")
        text = card.read_text()
        base_model = get_config_model_id(self.model.config)
        local_model = f"`{Path(base_model).name}` (a local model)" if base_model else "a local model"
        text = text.replace("[None](https://huggingface.co/None)", local_model)
        text = text.replace('model="None"', f'model="{self.args.output_dir}"')  # the quick start, before a push
        if names and not one_hub_dataset:
            described = ", ".join(
                f"`{Path(name).name}` (local)"
                if Path(name).exists()
                else f"[{name}](https://huggingface.co/datasets/{name})"
                for name in names
            )
            text = text.replace(".\nIt has been trained using", f" on {described}.\nIt has been trained using", 1)
        card.write_text(text)

        from .model_card import add_tspin_sections, base_model_license, settings_table
        from .plot import NO_RECORDS, iteration_table
        from .report import verdict

        iterations = iteration_table(self.args.output_dir)
        revision = (self.args.model_init_kwargs or {}).get("revision")
        num_prompts = len(getattr(self.train_dataset, "examples", self.train_dataset))  # one example per prompt
        add_tspin_sections(
            card,
            settings=settings_table(self.args, num_prompts, self.accelerator.num_processes),
            iterations=None if iterations == NO_RECORDS else iterations,
            license_=base_model_license(base_model, revision),
            base_model=Path(base_model).name if base_model and Path(base_model).is_dir() else base_model,
            verdict=None
            if iterations == NO_RECORDS
            else verdict(self.args.output_dir, self.args.saturation_threshold),
        )

    def _check_policy_is_finite(self, before: str) -> None:
        """Stop when the policy's weights are not all finite (training diverged, e.g. fp16 at a high learning rate):
        sampling from it would fail inside torch (`probability tensor contains inf/nan`), and a checkpoint of it would
        replace the last good one. Collective: every process checks its own shards (ZeRO-3 partitions included)."""
        first_bad = None
        for name, param in self.model.named_parameters():
            values = getattr(param, "ds_tensor", param)  # ZeRO-3 keeps this process's partition there
            if values.numel() and not torch.isfinite(values).all():
                first_bad = name
                break
        flags = gather_object([first_bad]) if self.accelerator.num_processes > 1 else [first_bad]
        bad = [name for name in flags if name is not None]
        if not bad:
            return
        step = self.state.global_step
        iteration = self.clock.iteration_of_step(step) if self.clock.steps_per_iteration and step else self.iteration
        kept = last_complete_checkpoint(self.args.output_dir)
        raise NonFinitePolicyError(
            f"Training diverged: the policy's weights are not finite ({bad[0]} and possibly others) at step {step}, in "
            f"self-play iteration {iteration}, {before}. Likely fixes: bf16 instead of fp16 (fp16 overflows at high "
            "learning rates), a lower `learning_rate`, or gradient clipping (`max_grad_norm`). No checkpoint is written "
            "from non-finite weights: "
            + (f"the last good one, {kept}, is kept." if kept else "no checkpoint had been saved yet.")
        )

    def _card_model_name(self) -> str:
        model_name = Path(self.args.output_dir).name if self.args.hub_model_id is None else self.args.hub_model_id
        return model_name.split("/")[-1]

    def write_results(self, output_dir: str | None = None) -> None:
        """
        Write the run's story into `args.output_dir` (on the main process): the model card (`README.md`) and
        `results.md`, both opening with the verdict computed from the run's records (`tspin_trl.report`), then the
        per-iteration table. Called at the end of `train()` (whatever the `save_strategy`) and by `save_model()`;
        `output_dir`, when another folder, gets a copy of both files.
        """
        if not self.is_world_process_zero():
            return
        from .plot import iteration_table
        from .report import write_results

        self.create_model_card(model_name=self._card_model_name())
        output = self.args.output_dir
        path = write_results(output, iteration_table(output), self.args.saturation_threshold)
        if output_dir is not None and os.path.abspath(output_dir) != os.path.abspath(self.args.output_dir):
            os.makedirs(output_dir, exist_ok=True)
            for source in (path, os.path.join(self.args.output_dir, "README.md")):
                shutil.copyfile(source, os.path.join(output_dir, os.path.basename(source)))

    def end(self) -> None:
        """
        Finish the trackers and destroy the distributed process group, as [`~trl.trainer.base_trainer._BaseTrainer.end`]
        does: call it once, at the very end of a script. Under DeepSpeed it first waits for every process (so every
        collective still in flight, such as ZeRO-3's asynchronous all-gathers, completes) and releases the engine while
        the interpreter is alive; otherwise a communication thread could free the last of those collectives during
        interpreter shutdown and abort the process ("terminate called without an active exception", seen with
        ZeRO-3 and CPU offload over gloo after a run had finished and saved everything).
        """
        if self.is_deepspeed_enabled and torch.distributed.is_initialized():
            import gc

            self.accelerator.wait_for_everyone()
            self.accelerator.free_memory()
            gc.collect()
        super().end()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model as [`~transformers.Trainer.save_model`] does; after training, first rewrite the model card
        and `results.md` (see [`write_results`]), so that a push to the Hub (`push_to_hub`) carries them."""
        if not _internal_call and self.state.global_step > 0:
            self.write_results(output_dir)
        super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model, trial):
        self._check_policy_is_finite(f"before saving checkpoint-{self.state.global_step}")
        folder = checkpoint_dir(self._get_output_dir(trial=trial), self.state.global_step)
        try:
            self.create_model_card(model_name=self._card_model_name())
            if self.args.should_save:
                self.monitor.save(folder)
                self.metrics.save(folder)
            super()._save_checkpoint(model, trial)
        except Exception as error:
            named = checkpoint_write_error(folder, error)  # a full disk: which file, and what to do
            if named is None:
                raise
            raise named from error
        if self.args.should_save:
            follow_umask(folder)
        if self.is_deepspeed_enabled and self.args.should_save and self.accelerator.process_index != 0:
            # DeepSpeed writes the `latest` tag file on global rank 0 only; a node with its own disk needs it to resume
            tags = sorted(glob.glob(os.path.join(folder, "global_step*")))
            if len(tags) == 1 and not os.path.isfile(os.path.join(folder, "latest")):
                atomic_write(os.path.join(folder, "latest"), os.path.basename(tags[0]))


# ---- set-up steps that need no trainer ---------------------------------------------------------------------------


def _checked_args(
    model: "str | PreTrainedModel", args: TSPINConfig | None, ref_model: None, compute_loss_func: None = None
) -> TSPINConfig:
    """The configuration: `TSPINConfig("<model name>-TSPIN")` when unset; a `TrainingArguments` or `SFTConfig`
    converted (as `SFTTrainer` converts a `TrainingArguments`); anything else, a `ref_model` or a `compute_loss_func`,
    refused."""
    if args is None:
        model_name = model if isinstance(model, str) else get_config_model_id(model.config)
        args = TSPINConfig(f"{str(model_name).split('/')[-1].removeprefix('preset:')}-TSPIN")
    elif isinstance(args, TrainingArguments) and not isinstance(args, TSPINConfig):
        args = TSPINConfig.from_training_arguments(args)  # another trainer's config is refused there
    elif not isinstance(args, TSPINConfig):
        raise TypeError(f"`args` must be a TSPINConfig, got {type(args).__name__}.")
    if compute_loss_func is not None:
        raise ValueError(
            "TSPINTrainer takes no `compute_loss_func`: its loss is the T-SPIN objective over the real, synthetic and "
            "proto-synthetic responses (`loss_type`, `alpha`, `beta`; `real_nll_weight` adds an NLL term on the real "
            "responses). To change it, subclass TSPINTrainer and override `compute_loss`."
        )
    if ref_model is not None:
        raise ValueError(
            "TSPINTrainer takes no `ref_model`: T-SPIN is reference-free, and `objective='spin'`/`'tspin_ref'` "
            "compute the reference log-probs from the policy at the start of each iteration. Remove `ref_model`."
        )
    return args


def _checked_datasets(
    train_dataset: Dataset | IterableDataset | None,
    eval_dataset: Any,
    formatting_func: Callable[[dict[str, Any]], Any] | None = None,
    text_field: str = "text",
) -> tuple[Dataset | IterableDataset, Any, dict[str, Dataset | IterableDataset], dict[str, Any]]:
    """Validate the data before loading anything: the types, the evaluation sets' names and every set's columns
    (`text_field`: the plain-text column), after `formatting_func` if given. Returns the training set and the
    evaluation sets as given, the evaluation sets by name (`"eval"` for a single one; formatted), and the format of
    every set."""
    if train_dataset is None:
        raise ValueError("`train_dataset` is required.")
    eval_datasets = eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset}
    eval_datasets = {name: dataset for name, dataset in eval_datasets.items() if dataset is not None}
    for name, dataset in {"train_dataset": train_dataset, **eval_datasets}.items():
        if not isinstance(dataset, (Dataset, IterableDataset)):
            raise TypeError(
                f"`{name}` must be a `datasets.Dataset` or `IterableDataset`, got {type(dataset).__name__}. Wrap "
                "a list of rows with `datasets.Dataset.from_list(rows)`."
            )
    for name in eval_datasets:
        check_dataset_name(name)
    if formatting_func is not None:
        train_dataset = apply_formatting_func(train_dataset, formatting_func, text_field)
        eval_datasets = {
            name: apply_formatting_func(dataset, formatting_func, text_field)
            for name, dataset in eval_datasets.items()
        }
    data_formats = {"train": check_columns(train_dataset, "train", text_field)}
    data_formats.update({name: check_columns(dataset, name, text_field) for name, dataset in eval_datasets.items()})
    return train_dataset, eval_dataset, eval_datasets, data_formats


def _default_scorer_dataset(eval_datasets: dict[str, Dataset | IterableDataset]) -> Dataset | None:
    """The held-out prompts a task score uses when `scorer_dataset` is not given: the evaluation dataset, when there is
    one (not a dict of several) with a `prompt` column."""
    if list(eval_datasets) != ["eval"]:
        return None
    dataset = eval_datasets["eval"]
    return dataset if isinstance(dataset, Dataset) and "prompt" in dataset.column_names else None


def _loaded_model(
    model: "str | PreTrainedModel", args: TSPINConfig, quantization_config: Any
) -> tuple[PreTrainedModel, str | None]:
    """The model: loaded from a Hub id, a path or a `preset:` name with `args.model_init_kwargs` (and
    `quantization_config`), or the instance given. Returns it and the revision it was loaded at."""
    if not isinstance(model, str):
        if args.model_init_kwargs is not None:
            logger.warning("`model_init_kwargs` is ignored because the model is already instantiated.")
        if quantization_config is not None:
            raise ValueError(
                "`quantization_config` applies only when the model is given as a string (Hub id or path); "
                "quantize your model instance yourself or pass its name instead."
            )
        return model, None
    model_init_kwargs = dict(args.model_init_kwargs or {})
    if quantization_config is not None:
        if "quantization_config" in model_init_kwargs:
            raise ValueError(
                "`quantization_config` is set both as a trainer argument and in `args.model_init_kwargs`; "
                "set it in one place only."
            )
        model_init_kwargs["quantization_config"] = quantization_config
    if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
        model_init_kwargs["device_map"] = None
    model_init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    model = resolve_model(model)  # `preset:tiny` and the like: their folder, written once
    return create_model_from_path(model, **model_init_kwargs), model_init_kwargs.get("revision")


def _loaded_tokenizer(
    model: PreTrainedModel,
    processing_class: PreTrainedTokenizerBase | None,
    args: TSPINConfig,
    model_revision: str | None,
) -> PreTrainedTokenizerBase:
    """The tokenizer: the one given or the model's; a text tokenizer only. Padding falls back to the eos token, and the
    model's configs learn the padding id."""
    if processing_class is None:
        processing_class = AutoTokenizer.from_pretrained(
            get_config_model_id(model.config), revision=model_revision, trust_remote_code=args.trust_remote_code
        )
    if isinstance(processing_class, ProcessorMixin) or not isinstance(processing_class, PreTrainedTokenizerBase):
        raise TypeError(
            f"`processing_class` must be a text tokenizer (PreTrainedTokenizerBase), got "
            f"{type(processing_class).__name__}. Vision-language processors are not supported."
        )
    if processing_class.pad_token is None and processing_class.eos_token is not None:
        processing_class.pad_token = processing_class.eos_token
    if processing_class.pad_token is not None:
        model.config.get_text_config().pad_token_id = processing_class.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = processing_class.pad_token_id
    return processing_class


def _with_sft_tokens(
    model: PreTrainedModel, processing_class: PreTrainedTokenizerBase, args: TSPINConfig
) -> list[int]:
    """SFT's `eos_token` and `chat_template_path`, applied as `SFTTrainer` applies them: the eos token set on the
    tokenizer and added to the model's generation eos tokens; the chat template read from a Jinja file, or cloned from
    a tokenizer with TRL's `clone_chat_template` (which adds its special tokens and resizes the embeddings). Returns
    the ids of the tokens the clone added."""
    if args.eos_token is not None:
        if args.eos_token not in processing_class.get_vocab():
            raise ValueError(
                f"`eos_token={args.eos_token!r}` is not in the vocabulary of the tokenizer "
                f"({type(processing_class).__name__}): add it to the tokenizer first, or set an existing token."
            )
        processing_class.eos_token = args.eos_token
        model.config.get_text_config().eos_token_id = processing_class.eos_token_id
        if getattr(model, "generation_config", None) is not None:
            configured = model.generation_config.eos_token_id
            configured = [] if configured is None else [configured] if isinstance(configured, int) else configured
            if processing_class.eos_token_id not in configured:
                model.generation_config.eos_token_id = [processing_class.eos_token_id, *configured]
    path = args.chat_template_path
    if path is None:
        return []
    if os.path.isfile(path) and path.endswith((".jinja", ".j2")):
        with open(path, encoding="utf-8") as template:
            processing_class.chat_template = template.read()
        return []
    _, _, added = clone_chat_template(model, processing_class, path)
    return processing_class.convert_tokens_to_ids([str(token) for token in added])


def _with_peft(
    model: PreTrainedModel, peft_config: "PeftConfig | None", args: TSPINConfig, added_tokens: list[int] | None = None
) -> PreTrainedModel:
    """The model wrapped with `peft_config` (if given), and a PEFT model checked and prepared: no adapter on `lm_head`,
    input gradients for activation checkpointing (re-entrant under ZeRO-3). Tokens a cloned chat template added
    (`added_tokens`) get trainable embeddings, as `SFTTrainer` makes them."""
    if peft_config is not None:
        if not is_peft_available():
            raise ImportError("`peft_config` needs the `peft` library: `pip install tspin-trl[peft]`.")
        if not isinstance(peft_config, PeftConfig):
            raise TypeError(f"`peft_config` must be a `peft.PeftConfig`, got {type(peft_config).__name__}.")
        if is_peft_model(model):
            raise ValueError(
                "You passed a PeftModel together with a `peft_config`: merge and unload the existing adapter "
                "first, or pass the PeftModel without `peft_config`."
            )
        if added_tokens:
            indices = peft_config.trainable_token_indices
            indices = {} if indices is None else indices if isinstance(indices, dict) else {"embed_tokens": indices}
            indices["embed_tokens"] = [*indices.get("embed_tokens", []), *added_tokens]
            peft_config.trainable_token_indices = indices
        is_quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        peft_kwargs = {}
        if args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3 and not is_quantized:
            peft_kwargs["autocast_adapter_dtype"] = False  # ZeRO-3 needs one dtype for its persistent params
        model = get_peft_model(model, peft_config, **peft_kwargs)
    if is_peft_model(model):
        if isinstance(model.get_output_embeddings(), BaseTunerLayer):
            raise ValueError(
                "An adapter on `lm_head` is not supported: log-probs are computed from `lm_head.weight` directly, "
                "so it would never train. Remove 'lm_head' from `target_modules`."
            )
        if args.activation_checkpointing or args.gradient_checkpointing:
            if args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3:
                # transformers 5 reads `activation_checkpointing_kwargs` (`gradient_checkpointing_kwargs` is its
                # deprecated alias)
                args.activation_checkpointing_kwargs = {
                    **(args.activation_checkpointing_kwargs or args.gradient_checkpointing_kwargs or {}),
                    "use_reentrant": True,  # PEFT + ZeRO-3 (trl#2514)
                }
            model.enable_input_require_grads()
    return model


def _checked_metrics(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` (a `compute_metrics`), raising a `TypeError` that names it when it returns anything but a dict of
    metrics (transformers would fail later on `None` with "'NoneType' object does not support item assignment").
    With `batch_eval_metrics`, only the result of the last batch (`compute_result=True`) is checked."""
    if getattr(function, "_tspin_checked", False):
        return function

    @functools.wraps(function)
    def checked(prediction: EvalPrediction, *args: Any, **kwargs: Any) -> Any:
        result = function(prediction, *args, **kwargs)
        if kwargs.get("compute_result", True) and not isinstance(result, Mapping):
            raise TypeError(
                f"compute_metrics ({getattr(function, '__name__', function)!r}) returned {type(result).__name__}: it "
                "must return a dict of metric names and numbers, e.g. {'accuracy': 0.75}."
            )
        return result

    checked._tspin_checked = True
    return checked


def _token_counts(is_top1: torch.Tensor | None, real: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor | None:
    """`(argmax-correct real-response tokens, real-response tokens, prompt + real-response tokens)` of a batch; `None`
    from a model whose fused head gives no `is_top1` (another trainer's, e.g. a reference model passed to
    `response_logps`)."""
    if is_top1 is None:
        return None
    return torch.stack([(is_top1 & real).sum(), real.sum(), sequence.sum()])


def _reset_optimizer_state(optimizer: torch.optim.Optimizer) -> int:
    """Clear the per-parameter state (moments, step counts) of the innermost optimizers, as a fresh optimizer has.

    Unwraps accelerate's and DeepSpeed's wrappers, so under ZeRO the partitioned fp32 states of every process are the
    ones cleared. PyTorch optimizers create their state lazily at the next step. Returns the number of states cleared.
    """
    inner = optimizer
    while hasattr(inner, "optimizer") and inner.optimizer is not inner:
        inner = inner.optimizer
    cleared = len(inner.state)
    inner.state.clear()
    return cleared


def _warn_unusable_generation_length(args: TSPINConfig, model: torch.nn.Module, dataset: TripletDataset) -> None:
    """Warn when generated tokens cannot be trained on: beyond `max_length` after the prompt, or the model's
    positions."""
    prompt_lengths = sorted(len(example["prompt_ids"]) for example in dataset.examples)
    if not prompt_lengths:
        return
    median_prompt = prompt_lengths[len(prompt_lengths) // 2]
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    limits = [limit for limit in (args.max_length, positions) if limit is not None]
    if limits and median_prompt + args.max_completion_length > min(limits):
        usable = max(min(limits) - median_prompt, 0)
        logger.warning(
            "max_completion_length=%d: with the median prompt of %d tokens, only %d generated tokens fit in "
            "max_length/the model's positions (%d); the rest (%.0f%%) would be generated and then cut before training. "
            "Lower max_completion_length or raise max_length.",
            args.max_completion_length,
            median_prompt,
            usable,
            min(limits),
            100 * (1 - usable / args.max_completion_length),
        )
