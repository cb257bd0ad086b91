"""`TSPINTrainer`: model/tokenizer/PEFT set-up, the triplet forward pass, metrics and checkpoints."""

import logging
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
from transformers.trainer_utils import EvalPrediction
from transformers.utils import is_peft_available
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import add_fused_lm_head, create_model_from_path, disable_dropout_in_model, get_config_model_id

from .cache import model_fingerprint, tokenizer_fingerprint
from .collator import DataCollatorForTriplet
from .config import TSPINConfig
from .data import TripletDataset, TripletTokenizer, check_columns, eos_token_ids, tokenize_dataset
from .loss import rewards, tspin_loss
from .self_play import SelfPlayCallback


if is_peft_available():
    from peft import PeftConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer


logger = logging.getLogger(__name__)

# Columns of the per-example metrics tensor gathered once per step (no `.item()` in the training step).
_METRIC_COLUMNS = (
    "logps/real",
    "logps/synthetic",
    "logps/proto",
    "rewards/real",
    "rewards/synthetic",
    "rewards/proto",
    "advantage/current",
    "advantage/historical",
    "logps/abs_margin",
    "advantage/current_accuracy",
    "advantage/historical_accuracy",
    "loss/current",
    "loss/historical",
    "rewards/disagreement",
    "length/real",
    "length/synthetic",
    "length/proto",
    "self_play/synthetic_equals_real",
)


class TSPINTrainer(_BaseTrainer):
    """
    Trainer for Triplet-based Self-Play fIne-tuNing (T-SPIN), from the paper [Triplets Better Than Pairs: Towards
    Stable and Effective Self-Play Fine-Tuning for LLMs](https://huggingface.co/papers/2601.08198).

    One `train()` runs every self-play iteration: a [`SelfPlayCallback`], installed by the trainer, samples the
    proto-synthetic responses of the initial policy once (cached on disk), regenerates the synthetic responses with
    the current policy at each iteration boundary, and keeps every iteration's responses under
    `output_dir/self_play/`. No reference model is loaded.

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
            if args.gradient_checkpointing:
                if args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3:
                    args.gradient_checkpointing_kwargs = {
                        **(args.gradient_checkpointing_kwargs or {}),
                        "use_reentrant": True,  # PEFT + ZeRO-3 (trl#2514)
                    }
                model.enable_input_require_grads()

        # Data
        self.eos_ids = eos_token_ids(processing_class, getattr(model, "generation_config", None))
        triplet_tokenizer = TripletTokenizer(
            processing_class, args.max_length, args.max_prompt_length, args.truncation_mode, self.eos_ids
        )
        train_dataset = TripletDataset(
            tokenize_dataset(train_dataset, data_formats["train"], triplet_tokenizer, "train")
        )
        prepared_eval = {
            name: TripletDataset(tokenize_dataset(dataset, data_formats[name], triplet_tokenizer, name))
            for name, dataset in eval_datasets.items()
        }
        if not prepared_eval:
            eval_dataset = None
        elif isinstance(eval_dataset, dict):
            eval_dataset = prepared_eval
        else:
            eval_dataset = prepared_eval["eval"]
        self.share_prompt = args.share_prompt and _supports_block_masks(model)
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
        self.current_beta = args.beta_first_iteration
        self.current_iteration = 0
        # Identity of the initial policy, taken before any sharding or training; it keys the proto cache.
        self.initial_model_fingerprint = model_fingerprint(self.model)
        self.tokenizer_fingerprint = tokenizer_fingerprint(processing_class)
        self.scorer = scorer
        self.scorer_rows, self.scorer_prompts = self._prepare_scorer(scorer, scorer_dataset, triplet_tokenizer)
        self.self_play = SelfPlayCallback(self)
        self.add_callback(self.self_play)

    # ---- data plumbing -------------------------------------------------------------------------------------------

    @staticmethod
    def _prepare_scorer(scorer, scorer_dataset, triplet_tokenizer) -> tuple[list[dict], list[list[int]]]:
        if scorer is None and scorer_dataset is None:
            return [], []
        if scorer is None or scorer_dataset is None:
            raise ValueError("Pass both `scorer` and `scorer_dataset` (held-out prompts for the scorer), or neither.")
        if "prompt" not in scorer_dataset.column_names:
            raise ValueError(
                f"`scorer_dataset` needs a 'prompt' column (text or messages); it has {scorer_dataset.column_names}."
            )
        rows = list(scorer_dataset)
        prompts = [triplet_tokenizer.encode_prompt(row["prompt"], index)[1] for index, row in enumerate(rows)]
        return rows, prompts

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

    @property
    def uses_reference(self) -> bool:
        """Whether the objective measures rewards against the policy at the start of each iteration."""
        return self.args.objective in ("spin", "tspin_ref")

    # ---- forward pass --------------------------------------------------------------------------------------------

    def response_logps(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed response log-probs of a collated batch, from one forward pass: shape `(num_roles, batch_size)`.

        Works with both layouts of [`DataCollatorForTriplet`]: rows stacked role by role, or one packed row per
        example whose segments see the shared prompt prefix and themselves (a block attention mask).
        """
        batch_size, num_roles = inputs["response_lengths"].shape
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

    def _block_attention_mask(self, segment_ids: torch.Tensor) -> torch.Tensor:
        """4D mask of the packed layout: causal, and a segment sees only the shared prefix and itself.

        Boolean (`True` = attend) for SDPA, which then works under autocast whatever the query dtype; additive in the
        model's dtype for the eager implementation.
        """
        query, key = segment_ids[:, None, :, None], segment_ids[:, None, None, :]
        length = segment_ids.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
        allowed = causal & ((key == 0) | (key == query))  # padding (-1) sees earlier padding: no empty rows
        if getattr(self.model.config, "_attn_implementation", "sdpa") != "eager":
            return allowed
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        return torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        logps = self.response_logps(model, inputs)
        num_roles = logps.size(0)
        real_logps, synthetic_logps = logps[0], logps[1]
        proto_logps = logps[2] if num_roles == 3 else None
        refs = {}
        if self.uses_reference:
            for role in ("real", "synthetic", "proto"):
                if f"ref_{role}_logps" in inputs:
                    refs[f"ref_{role}_logps"] = inputs[f"ref_{role}_logps"].to(logps.dtype)
        beta = 0.0 if self.args.objective == "spin" or proto_logps is None else self.current_beta
        losses, current_losses, historical_losses = tspin_loss(
            real_logps,
            synthetic_logps,
            proto_logps,
            alpha=self.args.alpha,
            beta=beta,
            loss_type=self.args.loss_type,
            **refs,
        )
        loss = losses.mean()
        if self.args.real_nll_weight > 0:
            real_tokens = inputs["response_lengths"][:, 0].sum().clamp(min=1)
            real_nll = -real_logps.sum() / real_tokens
            loss = loss + self.args.real_nll_weight * real_nll
            self._metrics[mode]["loss/real_nll"].append(real_nll.detach())

        self._record_metrics(mode, inputs, logps.detach(), refs, current_losses, historical_losses)
        if return_outputs:
            return loss, {"logps": logps.detach()}
        return loss

    def _record_metrics(self, mode, inputs, logps, refs, current_losses, historical_losses):
        """Gather one `(batch, columns)` tensor per step; averaged and converted to floats only in `log`."""
        num_roles, batch_size = logps.shape
        nan = torch.full((batch_size,), float("nan"), device=logps.device)
        by_role = list(logps.unbind(0)) + [nan] * (3 - num_roles)
        lengths = list(inputs["response_lengths"].float().t().unbind(0)) + [nan] * (3 - num_roles)
        role_rewards = [
            rewards(by_role[i], refs.get(f"ref_{role}_logps"), self.args.alpha)
            for i, role in enumerate(("real", "synthetic", "proto"))
        ]
        current = role_rewards[0] - role_rewards[1]
        historical = role_rewards[1] - role_rewards[2]
        likelihood_margin = by_role[0] - by_role[1]
        columns = [
            *by_role,
            *role_rewards,
            current,
            historical,
            likelihood_margin.abs(),
            (current > 0).float(),
            torch.where(historical.isnan(), nan, (historical > 0).float()),
            current_losses.detach(),
            historical_losses.detach() if num_roles == 3 else nan,
            (current * likelihood_margin < 0).float(),  # a tie is no order, so no disagreement
            *lengths,
            inputs["synthetic_equals_real"].float(),
        ]
        stacked = torch.stack([c.float() for c in columns], dim=1)
        self._metrics[mode]["_per_example"].append(self.accelerator.gather_for_metrics(stacked))
        self._metrics[mode]["beta"].append(self.current_beta)
        self._metrics[mode]["self_play/iteration"].append(self.current_iteration)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics: dict[str, float] = {}
        per_example = self._metrics[mode].pop("_per_example", [])
        if per_example:
            means = torch.cat(per_example).nanmean(dim=0).tolist()
            metrics.update({name: value for name, value in zip(_METRIC_COLUMNS, means, strict=True)})
            metrics = {k: v for k, v in metrics.items() if v == v}  # drop columns that had no values (NaN)
        for key, values in self._metrics[mode].items():
            metrics[key] = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values]).mean().item()
        if mode == "eval":
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()

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
        """Summed log-probs of the given response roles for every example, under the current policy.

        The work is sharded over processes (each makes the same number of forward passes, as ZeRO-3 requires) and
        gathered back in order.
        """
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        batch_size = self.args.logps_batch_size or self.args.per_device_eval_batch_size
        model = self.model  # a plain forward; ZeRO-3 gathers parameters through its module hooks
        was_training = model.training
        model.eval()
        results: dict[int, list[float]] = {}
        per_chunk = batch_size * world
        collator = DataCollatorForTriplet(
            pad_token_id=self.processing_class.pad_token_id,
            max_length=self.args.max_length,
            share_prompt=self.share_prompt,
        )
        try:
            with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                for start in range(0, len(dataset), per_chunk):
                    chunk = list(range(start, min(start + per_chunk, len(dataset))))
                    mine = chunk[rank::world]
                    examples = [
                        {"prompt_ids": dataset.examples[i]["prompt_ids"]}
                        | {f"{role}_ids": dataset.examples[i][f"{role}_ids"] for role in roles}
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
        return {role: [results[i][r] for i in range(len(dataset))] for r, role in enumerate(roles)}

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: str | list[str] | None = None,
    ):
        """
        TRL's model card, without Hub links to what is not on the Hub: a base model loaded from a local folder is named
        by its folder name, and a local dataset (or a mixture) is named without a link and left out of the metadata.

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

    def _save_checkpoint(self, model, trial):
        model_name = Path(self.args.output_dir).name if self.args.hub_model_id is None else self.args.hub_model_id
        self.create_model_card(model_name=model_name.split("/")[-1])
        super()._save_checkpoint(model, trial)


def _supports_block_masks(model: torch.nn.Module) -> bool:
    """Whether the packed layout can be used: an attention backend that takes a 4D mask, no virtual tokens."""
    if is_peft_model(model) and model.active_peft_config.is_prompt_learning:
        logger.warning("share_prompt is off: prompt-learning PEFT methods prepend virtual tokens.")
        return False
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in ("sdpa", "eager", None):
        logger.warning(
            "share_prompt is off: the %r attention implementation does not take the block attention mask the packed "
            "layout needs; each response is computed with its own copy of the prompt. Use attn_implementation='sdpa' "
            "to compute each prompt once.",
            implementation,
        )
        return False
    return True
