"""`TSPINTrainer`: model/tokenizer/PEFT set-up, the triplet forward pass, metrics and checkpoints."""

import contextlib
import glob
import logging
import os
import textwrap
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object, is_peft_model
from datasets import Dataset, IterableDataset
from transformers import (
    AutoTokenizer,
    DataCollator,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    TrainerCallback,
    set_seed,
)
from transformers.optimization import get_scheduler
from transformers.trainer_utils import EvalPrediction
from transformers.utils import is_peft_available
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import add_fused_lm_head, create_model_from_path, disable_dropout_in_model, get_config_model_id

from .attention import dense_block_mask, flex_block_mask, packed_attention_backend
from .cache import model_fingerprint, tokenizer_fingerprint
from .collator import ROLES as COLLATED_ROLES
from .collator import DataCollatorForTriplet
from .config import TSPINConfig
from .data import TripletDataset, TripletTokenizer, check_columns, eos_token_ids, tokenize_dataset
from .loss import clamped, rewards, tspin_loss
from .monitor import IterationMonitor
from .objective import ObjectivePolicy
from .run_folder import (
    NodeLayout,
    RunFolder,
    RunLock,
    atomic_write,
    check_dataset_name,
    checkpoint_is_complete,
    complete_checkpoint_steps,
    detect_node_layout,
)
from .scoring import ScoringCallback
from .self_play import SelfPlayCallback


if is_peft_available():
    from peft import PeftConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer


logger = logging.getLogger(__name__)

# Log-likelihood (and reward) differences within this many nats are ties: neither an accuracy win nor a disagreement.
# Identical real and synthetic responses differ by about 2e-6 nats through floating-point noise alone.
TIE_TOLERANCE = 1e-3


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
            Model to train: a Hub id or local path (loaded with `args.model_init_kwargs`), a causal LM instance, or a
            PEFT model.
        args ([`TSPINConfig`], *optional*):
            Configuration. Defaults to `TSPINConfig("<model name>-TSPIN")`.
        data_collator (`DataCollator`, *optional*):
            Defaults to [`DataCollatorForTriplet`].
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Prompts with real responses, in any format listed in the docs (prompt/completion, messages, SPIN's
            real/generated, DPO's prompt/chosen), optionally with `synthetic` and `proto` responses.
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
        scorer (`Callable[[list[str], list[dict]], float]`, *optional*):
            Evaluation between iterations: called with the greedy responses of the current policy to the prompts of
            `scorer_dataset` and that dataset's rows, it returns a score, logged as `self_play/score` before training
            and after every iteration, and written with the responses to `output_dir/self_play/scores.jsonl`.
        scorer_dataset ([`~datasets.Dataset`], *optional*):
            Held-out rows with a `prompt` column (text or messages) for `scorer`.
        ref_model (`None`, *optional*):
            Accepted so that a `DPOTrainer(..., ref_model=None)` call keeps working; T-SPIN never loads a reference
            model (for `objective="spin"`/`"tspin_ref"` the reference log-probs are computed once per iteration).
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
        ref_model: None = None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = TSPINConfig(f"{str(model_name).split('/')[-1]}-TSPIN")
        elif not isinstance(args, TSPINConfig):
            raise TypeError(f"`args` must be a TSPINConfig, got {type(args).__name__}.")
        if ref_model is not None:
            raise ValueError(
                "TSPINTrainer takes no `ref_model`: T-SPIN is reference-free, and `objective='spin'`/`'tspin_ref'` "
                "compute the reference log-probs from the policy at the start of each iteration. Remove `ref_model`."
            )

        # Validate the data before loading anything
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
        data_formats = {"train": check_columns(train_dataset, "train")}
        data_formats.update({name: check_columns(dataset, name) for name, dataset in eval_datasets.items()})

        # Model
        set_seed(args.seed)  # PEFT initialises adapters randomly
        if isinstance(model, str):
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
            model_revision = model_init_kwargs.get("revision")
            model = create_model_from_path(model, **model_init_kwargs)
        else:
            model_revision = None
            if args.model_init_kwargs is not None:
                logger.warning("`model_init_kwargs` is ignored because the model is already instantiated.")
            if quantization_config is not None:
                raise ValueError(
                    "`quantization_config` applies only when the model is given as a string (Hub id or path); "
                    "quantize your model instance yourself or pass its name instead."
                )
        is_quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)

        # Tokenizer
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

        # PEFT
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

        # Data
        self.eos_token_ids = eos_token_ids(processing_class, getattr(model, "generation_config", None))
        triplet_tokenizer = TripletTokenizer(
            processing_class, args.max_length, args.max_prompt_length, args.truncation_mode, self.eos_token_ids
        )
        train_dataset = TripletDataset(
            tokenize_dataset(train_dataset, data_formats["train"], triplet_tokenizer, "train"),
            mix_previous=args.mix_previous_iteration,
        )
        prepared_eval = {
            name: TripletDataset(tokenize_dataset(dataset, data_formats[name], triplet_tokenizer, name))
            for name, dataset in eval_datasets.items()
        }
        _warn_unusable_generation_length(args, model, train_dataset)
        if not prepared_eval:
            eval_dataset = None
        elif isinstance(eval_dataset, dict):
            eval_dataset = prepared_eval
        else:
            eval_dataset = prepared_eval["eval"]
        self.packed_attention = (
            packed_attention_backend(model, args.packed_attention, args.device, dropout=not args.disable_dropout)
            if args.share_prompt
            else None
        )
        self.share_prompt = self.packed_attention is not None
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
        )
        if args.n_gpu > 1:
            raise ValueError(
                "TSPINTrainer does not support `nn.DataParallel` (several GPUs visible to one process). Launch with "
                "`accelerate launch` or `torchrun`, or make one GPU visible with `CUDA_VISIBLE_DEVICES`."
            )

        if args.disable_dropout:
            disable_dropout_in_model(self.model)
        # Per-token log-probs in tiles, without materialising the (batch, seq_len, vocab) logits
        add_fused_lm_head(self.model.get_base_model() if is_peft_model(self.model) else self.model)
        self.model.add_model_tags(self._tag_names)

        self._metrics: dict[str, dict[str, list]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._per_example: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._metrics_listeners: list[Callable[[str, dict[str, torch.Tensor]], None]] = []
        self._steps_per_epoch: int | None = None
        self.resumed_from_checkpoint: str | None = None
        self.policy = ObjectivePolicy.from_config(args, own_synthetic=train_dataset.has("synthetic"))
        self.iteration = 0
        self.beta = self.policy.beta_for(0)
        # Identity of the initial policy, taken before any sharding or training; it keys the proto cache.
        self.initial_model_fingerprint = model_fingerprint(self.model)
        self.tokenizer_fingerprint = tokenizer_fingerprint(processing_class)
        self.vocab_size = max(len(processing_class), self.model.config.get_text_config().vocab_size)
        self.run_folder = RunFolder(args.output_dir)
        self._run_lock = RunLock(self.run_folder.lock_path)
        self.node_layout = NodeLayout(1, True)  # found out at the start of `train()`

        self.self_play = SelfPlayCallback(self)
        self.monitor = IterationMonitor(self)
        self.add_callback(self.self_play)
        self.add_callback(self.monitor)
        self.scoring = None
        if scorer is not None or scorer_dataset is not None:
            self.scoring = ScoringCallback(self, scorer, scorer_dataset, triplet_tokenizer)
        if self.scoring is not None:
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

    # ---- the public surface the self-play callbacks use ----------------------------------------------------------

    @property
    def steps_per_iteration(self) -> int | None:
        """Optimizer steps of one self-play iteration (known once `train()` has sized its dataloader)."""
        if self._steps_per_epoch is None:
            return None
        return self._steps_per_epoch * self.args.epochs_per_iteration

    def iteration_of_step(self, step: int) -> int:
        """The iteration that optimizer step `step` (1-based, as `state.global_step` counts) belongs to."""
        return min(max(step - 1, 0) // self.steps_per_iteration, self.args.num_iterations - 1)

    def start_iteration(self, iteration: int) -> None:
        """Make `iteration` the current one: its beta for the loss, and, when every iteration is its own run
        (`restart_each_iteration`) and the previous iteration's optimizer steps are behind, a fresh optimizer state.

        The learning-rate schedule needs no action: it is a function of the step within the iteration. Resuming in the
        middle of an iteration keeps the checkpoint's optimizer state.
        """
        self.iteration = iteration
        self.beta = self.policy.beta_for(iteration)
        at_boundary = self.steps_per_iteration is not None and self.state.global_step == (
            iteration * self.steps_per_iteration
        )
        if self.args.restart_each_iteration and iteration > 0 and at_boundary and self.optimizer is not None:
            cleared = _reset_optimizer_state(self.optimizer)
            self.record_metric("self_play/optimizer_states_reset", float(cleared))
            logger.info("Iteration %d: optimizer state reset (%d parameter states cleared).", iteration, cleared)

    def record_metric(self, name: str, value: float, mode: str = "train") -> None:
        """Add a value to the next logged line (values of one name are averaged over the logging window)."""
        self._metrics[mode][name].append(value)

    def add_metrics_listener(self, listener: Callable[[str, dict[str, torch.Tensor]], None]) -> None:
        """Call `listener(mode, columns)` at every training or evaluation step with the step's per-example metrics,
        gathered over processes (`columns` maps a metric name to a `(global_batch,)` tensor, NaN where undefined)."""
        self._metrics_listeners.append(listener)

    # ---- training loop ----------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        self.node_layout = detect_node_layout(self.args.output_dir, self.accelerator)
        self._check_node_layout()
        if resume_from_checkpoint is True:
            resume_from_checkpoint = self._last_checkpoint_on_every_node()
        elif resume_from_checkpoint and self.node_layout.num_nodes > 1:
            complete = gather_object([checkpoint_is_complete(resume_from_checkpoint)])
            if not all(complete):
                raise ValueError(
                    f"The checkpoint {resume_from_checkpoint!r} is missing or incomplete on "
                    f"{complete.count(False)} of the {len(complete)} processes' nodes: every node reads it from its "
                    "own output_dir. Resume from a checkpoint every node has."
                )
        self.resumed_from_checkpoint = resume_from_checkpoint or None
        if self.args.should_save:
            self._run_lock.acquire()
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self._run_lock.release()

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        try:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        except Exception as error:
            raise _checkpoint_error("the model weights", resume_from_checkpoint, error) from error

    def _load_optimizer_and_scheduler(self, checkpoint):
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        except Exception as error:
            raise _checkpoint_error("the optimizer or scheduler state", checkpoint, error) from error

    def _check_node_layout(self) -> None:
        """Self-play files and checkpoints are written by the processes with `args.should_save`: the global main
        process, or with `save_on_each_node` every node's local main process. That must match the disk layout."""
        layout, output_dir = self.node_layout, self.args.output_dir
        if layout.num_nodes == 1:
            return
        if layout.shared and self.args.save_on_each_node:
            raise ValueError(
                f"`save_on_each_node=True`, but the {layout.num_nodes} nodes of this run share output_dir "
                f"{output_dir!r}: every node would write the same checkpoint and self-play files at once. Set "
                "`save_on_each_node=False` (the global main process then writes for all nodes)."
            )
        if not layout.shared and not self.args.save_on_each_node:
            raise ValueError(
                f"The {layout.num_nodes} nodes of this run do not share output_dir {output_dir!r} (each node sees only "
                "its own files there), and only the global main process would write checkpoints: the other nodes could "
                "not resume. Set `save_on_each_node=True` (each node then keeps a full copy of the checkpoints and "
                "self-play files), or put output_dir on a file system all nodes share."
            )

    def _last_checkpoint_on_every_node(self) -> str:
        """The highest-numbered checkpoint complete on every node (on separate disks, one node's last save may have
        been interrupted)."""
        output_dir = self.args.output_dir
        steps = complete_checkpoint_steps(output_dir)
        common = set(steps)
        if self.accelerator.num_processes > 1:
            for other in gather_object([steps]):
                common &= set(other)
        if not common:
            raise ValueError(
                f"No complete checkpoint found in {output_dir!r}"
                + (" on every node" if self.node_layout.num_nodes > 1 else "")
                + " to resume from (checkpoint-* folders with trainer_state.json and model weights). Start without "
                "`resume_from_checkpoint`."
            )
        step = max(common)
        if steps and steps[0] != step:
            logger.warning(
                "Resuming from checkpoint-%d, the last one every node has completely (this node also has "
                "checkpoint-%d).",
                step,
                steps[0],
            )
        return os.path.join(output_dir, f"checkpoint-{step}")

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = values[1]
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """With `restart_each_iteration`, the schedule (warm-up included) of one iteration, repeated every iteration:
        a function of the step within the iteration, so that a resume anywhere continues it exactly."""
        if not self.args.restart_each_iteration or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = self.optimizer if optimizer is None else optimizer
        steps = self.steps_per_iteration or num_training_steps
        probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        one_iteration = get_scheduler(
            self.args.lr_scheduler_type,
            optimizer=probe,
            num_warmup_steps=self.args.get_warmup_steps(steps),
            num_training_steps=steps,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
        )
        if not isinstance(one_iteration, torch.optim.lr_scheduler.LambdaLR):
            raise ValueError(
                f"lr_scheduler_type={self.args.lr_scheduler_type!r} cannot restart at every iteration. Use a "
                "step-based schedule (e.g. 'linear', 'cosine', 'constant_with_warmup') or restart_each_iteration=False."
            )
        factor = one_iteration.lr_lambdas[0]

        def per_iteration(step: int) -> float:
            return factor(step % steps)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, per_iteration)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ---- forward pass --------------------------------------------------------------------------------------------

    def response_logps(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed response log-probs of a collated batch, from one forward pass: shape `(num_roles, batch_size)`.

        Works with both layouts of [`DataCollatorForTriplet`]: rows stacked role by role, or one packed row per
        example whose segments see the shared prompt prefix and themselves (a block attention mask).
        """
        batch_size, num_roles = inputs["response_lengths"].shape
        with _score_response_positions_only():
            return self._response_logps(model, inputs, batch_size, num_roles)

    def _response_logps(self, model, inputs, batch_size: int, num_roles: int) -> torch.Tensor:
        if "segment_ids" in inputs:
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=self._block_attention_mask(inputs["segment_ids"]),
                position_ids=inputs["position_ids"],
                shift_labels=inputs["shift_labels"],
                fused_lm_head=True,
                use_cache=False,
            )
            valid = inputs["shift_labels"] != -100
            roles = (inputs["segment_ids"] - 1).clamp(min=0)
            per_token = outputs.log_probs.masked_fill(~valid, 0)
            logps = per_token.new_zeros(batch_size, num_roles).scatter_add_(1, roles, per_token)
            return logps.t()
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            fused_lm_head=True,
            use_cache=False,
        )
        # Prompt-learning PEFT methods prepend virtual tokens: keep the positions of the real tokens
        per_token = outputs.log_probs[:, -(completion_mask.size(1) - 1) :]
        return per_token.sum(dim=1).view(num_roles, batch_size)

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
        logps = self.response_logps(model, inputs)
        num_roles = logps.size(0)
        real_logps, synthetic_logps = logps[0], logps[1]
        proto_logps = logps[2] if num_roles == 3 else None
        if self.beta > 0 and proto_logps is None:
            raise RuntimeError(
                f"Iteration {self.iteration} uses beta={self.beta} but the batch has no proto responses."
            )
        refs = {}
        if self.policy.uses_reference:
            for role in ("real", "synthetic", "proto"):
                if f"ref_{role}_logps" in inputs:
                    refs[f"ref_{role}_logps"] = inputs[f"ref_{role}_logps"].to(logps.dtype)
        losses, current_losses, historical_losses = tspin_loss(
            real_logps,
            synthetic_logps,
            proto_logps,
            alpha=self.args.alpha,
            beta=self.beta,
            loss_type=self.args.loss_type,
            **refs,
        )
        loss = losses.mean()
        if self.args.real_nll_weight > 0:
            real_tokens = inputs["response_lengths"][:, 0].sum().clamp(min=1)
            real_nll = -real_logps.sum() / real_tokens
            loss = loss + self.args.real_nll_weight * real_nll
            self._metrics[mode]["loss/real_nll"].append(real_nll.detach())

        self._record_metrics(mode, inputs, logps.detach(), refs, losses.detach(), current_losses, historical_losses)
        if return_outputs:
            return loss, {"logps": logps.detach()}
        return loss

    def _record_metrics(self, mode, inputs, logps, refs, losses, current_losses, historical_losses):
        """Per-example metrics by name, gathered once per step as one tensor; averaged and converted to floats only in
        `log` (no host sync in the training step). NaN marks a value an example does not have."""
        num_roles, batch_size = logps.shape
        nan = torch.full((batch_size,), float("nan"), device=logps.device)
        columns: dict[str, torch.Tensor] = {}
        role_rewards = {}
        for index, role in enumerate(("real", "synthetic", "proto")):
            role_logps = logps[index] if index < num_roles else nan
            role_rewards[role] = rewards(role_logps, refs.get(f"ref_{role}_logps"), self.args.alpha)
            columns[f"logps/{role}"] = role_logps
            columns[f"rewards/{role}"] = role_rewards[role]
            columns[f"length/{role}"] = inputs["response_lengths"][:, index].float() if index < num_roles else nan
        current = role_rewards["real"] - role_rewards["synthetic"]
        historical = role_rewards["synthetic"] - role_rewards["proto"]
        likelihood_margin = logps[0] - logps[1]
        identical = inputs["synthetic_equals_real"].to(logps.device)
        reward_tolerance = TIE_TOLERANCE * self.args.alpha
        # Identical pairs and ties (within the tolerance) are neither wins nor disagreements; shares are over all pairs.
        decided = ~identical & (current.abs() > reward_tolerance)
        columns["advantage/current"] = current
        columns["advantage/historical"] = historical
        columns["logps/abs_margin"] = likelihood_margin.abs()
        columns["advantage/current_accuracy"] = (decided & (current > 0)).float()
        columns["advantage/historical_accuracy"] = torch.where(
            historical.isnan(), nan, (historical > reward_tolerance).float()
        )
        columns["rewards/ties"] = (~identical & ~decided).float()
        columns["rewards/disagreement"] = (
            decided & (likelihood_margin.abs() > TIE_TOLERANCE) & (current * likelihood_margin < 0)
        ).float()
        columns["self_play/synthetic_equals_real"] = identical.float()
        columns["advantage/saturated"] = (current > self.args.saturation_threshold).float()
        terms = torch.cat([current, historical]) if num_roles == 3 else current
        columns["loss/clamped"] = clamped(terms, self.args.loss_type).float().view(-1, batch_size).mean(0)
        columns["loss/current"] = current_losses.detach()
        columns["loss/historical"] = historical_losses.detach() if num_roles == 3 else nan
        columns["loss/per_example"] = losses

        names = list(columns)
        stacked = self.accelerator.gather_for_metrics(torch.stack([columns[n].float() for n in names], dim=1))
        gathered = dict(zip(names, stacked.unbind(1), strict=True))
        for name, values in gathered.items():
            self._per_example[mode][name].append(values)
        for listener in self._metrics_listeners:
            listener(mode, gathered)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics: dict[str, float] = {}
        per_example = self._per_example[mode]
        if per_example:
            names = list(per_example)
            means = torch.stack([torch.cat(per_example[name]) for name in names], dim=1).nanmean(dim=0).tolist()
            metrics.update({name: value for name, value in zip(names, means, strict=True) if value == value})
            per_example.clear()
        for key, values in self._metrics[mode].items():
            metrics[key] = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values]).mean().item()
        self._metrics[mode].clear()
        if mode == "eval":
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        elif "loss" in logs:  # a training line: a logging window never spans two iterations (see IterationMonitor)
            metrics.update({"self_play/iteration": self.iteration, "beta": self.beta})
        logs.update(metrics)
        super().log(logs, start_time)

    def log_now(self, metrics: dict[str, float], iteration: int | None = None) -> None:
        """Log self-play metrics (of `iteration`, if given) as their own line, not merged into a training-step line."""
        super().log(metrics if iteration is None else {**metrics, "self_play/iteration": iteration})

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys: list[str] | None = None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

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
        )
        try:
            checkpointing_kwargs = self.args.activation_checkpointing_kwargs or self.args.gradient_checkpointing_kwargs
            with disable_gradient_checkpointing(self.model, checkpointing_kwargs):
                for start in range(0, num_examples, per_chunk):
                    chunk = list(range(start, min(start + per_chunk, num_examples)))
                    mine = chunk[rank::world]
                    # the collator's response slots, filled with the requested roles in order
                    examples = [
                        {"prompt_ids": dataset.examples[i]["prompt_ids"]}
                        | {
                            f"{slot}_ids": dataset.examples[i][f"{role}_ids"]
                            for slot, role in zip(COLLATED_ROLES, roles)
                        }
                        for i in (mine or chunk[:1])
                    ]
                    batch = self._prepare_inputs(collator(examples))
                    values = self.response_logps(model, batch).float().t().tolist()
                    local = list(zip(mine, values, strict=False))
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
                return super()._save(output_dir, state_dict)
            finally:
                del model.should_save_on_this_rank
        return super()._save(output_dir, state_dict)

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

        iterations = iteration_table(self.args.output_dir)
        revision = (self.args.model_init_kwargs or {}).get("revision")
        num_prompts = len(getattr(self.train_dataset, "examples", self.train_dataset))  # one example per prompt
        add_tspin_sections(
            card,
            settings=settings_table(self.args, num_prompts, self.accelerator.num_processes),
            iterations=None if iterations == NO_RECORDS else iterations,
            license_=base_model_license(base_model, revision),
            base_model=Path(base_model).name if base_model and Path(base_model).is_dir() else base_model,
        )

    def _save_checkpoint(self, model, trial):
        model_name = Path(self.args.output_dir).name if self.args.hub_model_id is None else self.args.hub_model_id
        self.create_model_card(model_name=model_name.split("/")[-1])
        checkpoint_dir = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        if self.args.should_save:
            self.monitor.save(checkpoint_dir)
        super()._save_checkpoint(model, trial)
        if self.is_deepspeed_enabled and self.args.should_save and self.accelerator.process_index != 0:
            # DeepSpeed writes the `latest` tag file on global rank 0 only; a node with its own disk needs it to resume
            tags = sorted(glob.glob(os.path.join(checkpoint_dir, "global_step*")))
            if len(tags) == 1 and not os.path.isfile(os.path.join(checkpoint_dir, "latest")):
                atomic_write(os.path.join(checkpoint_dir, "latest"), os.path.basename(tags[0]))


@contextlib.contextmanager
def _score_response_positions_only():
    """Make TRL's fused LM head project only the labelled (response) positions on every device.

    TRL projects only labelled positions where Triton runs (CUDA) and every position elsewhere, because on some
    accelerators (Neuron) a varying number of rows recompiles the kernel. A CPU has no such cost, and the prompt and
    padding positions are most of the head's work there: the LM head was 68% of a CPU step (docs/benchmarks.md).
    Scoped to this trainer's forward passes, so other TRL trainers in the process keep TRL's behaviour.
    """
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


class CheckpointLoadError(RuntimeError):
    """A checkpoint's files exist but cannot be read (damaged or truncated)."""


def _checkpoint_error(what: str, checkpoint: str | None, error: Exception) -> CheckpointLoadError:
    earlier = None
    if checkpoint:
        steps = [
            s
            for s in complete_checkpoint_steps(os.path.dirname(os.path.abspath(checkpoint)))
            if s < _step_of(checkpoint)
        ]
        earlier = os.path.join(os.path.dirname(checkpoint), f"checkpoint-{max(steps)}") if steps else None
    fix = f"resume from an earlier checkpoint (`resume_from_checkpoint={earlier!r}`)" if earlier else "start over"
    return CheckpointLoadError(
        f"Could not load {what} from the checkpoint {checkpoint!r} ({type(error).__name__}: {error}); a file there is "
        f"damaged or truncated. Delete that checkpoint folder and {fix}."
    )


def _step_of(checkpoint: str) -> int:
    name = os.path.basename(os.path.normpath(checkpoint))
    return int(name.rsplit("-", 1)[1]) if name.rsplit("-", 1)[-1].isdigit() else 10**18


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
