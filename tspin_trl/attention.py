"""Attention masks of the packed layout: the prompt once, then one segment per response that sees the prompt and itself.

`segment_ids` (from [`DataCollatorForTriplet`] with `share_prompt=True`) is `0` on the shared prefix, `1 + role index`
on a response segment and `-1` on padding. Two ways to give that pattern to the model:

- `"dense"`: a `(batch, 1, L, L)` boolean mask (additive for the eager implementation). Works with every model whose
  attention takes a 4D mask, but takes SDPA off its flash kernel on GPUs: the masked kernel computes the whole
  `L x L` square.
- `"flex"`: a FlexAttention `BlockMask` built from the same rule (`mask_mod`), so that the kernel skips the blocks
  that are fully masked (a segment never looks at another segment). The model's `sdpa` implementation is swapped for
  one that runs FlexAttention when it is given a `BlockMask` and SDPA otherwise (generation is unchanged).
  FlexAttention has no backward pass on CPU (torch <= 2.13), so `"flex"` needs a CUDA device for training.
"""

import functools
import logging

import torch
from accelerate.utils import is_peft_model


logger = logging.getLogger(__name__)

PACKED_ATTENTION_CHOICES = ("auto", "dense", "flex")
# The attention implementation installed on a model for `"flex"`: FlexAttention for a `BlockMask`, SDPA otherwise.
SDPA_OR_FLEX = "tspin_sdpa_or_flex"

try:
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # torch < 2.5
    BlockMask = create_block_mask = flex_attention = None


def packed_mask_mod(segment_ids: torch.Tensor):
    """The packed layout's attention rule as a FlexAttention `mask_mod`: causal, and a key is visible to a query if it
    is on the shared prefix or in the query's own segment. Padding (`-1`) sees the prefix and earlier padding, so no
    row is empty."""

    def mask_mod(batch, head, query, key):
        query_segment, key_segment = segment_ids[batch, query], segment_ids[batch, key]
        return (query >= key) & ((key_segment == 0) | (key_segment == query_segment))

    return mask_mod


def dense_block_mask(segment_ids: torch.Tensor, additive_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The rule of [`packed_mask_mod`] as a `(batch, 1, L, L)` mask: boolean (`True` = attend), or additive in
    `additive_dtype` (`0` or the dtype's minimum) for the eager implementation."""
    query, key = segment_ids[:, None, :, None], segment_ids[:, None, None, :]
    length = segment_ids.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = causal & ((key == 0) | (key == query))
    if additive_dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=additive_dtype, device=segment_ids.device).masked_fill(
        ~allowed, torch.finfo(additive_dtype).min
    )


def flex_block_mask(segment_ids: torch.Tensor) -> "BlockMask":
    """The rule of [`packed_mask_mod`] as a FlexAttention `BlockMask` (one per batch, shared by every layer)."""
    batch_size, length = segment_ids.shape
    return create_block_mask(packed_mask_mod(segment_ids), batch_size, None, length, length, device=segment_ids.device)


@functools.cache
def _compiled_flex_attention():
    # Compiled once per process; dynamo recompiles once for a second sequence length and then treats the lengths as
    # dynamic, so varying batch lengths cost at most two compilations (`pad_to_multiple_of` keeps the shapes few).
    return torch.compile(flex_attention)


def flex_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: "BlockMask",
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """FlexAttention with a `BlockMask`, in the signature of transformers' `AttentionInterface` functions. Compiled on
    CUDA; eager elsewhere (the reference implementation, forward only on CPU)."""
    if module.training and kwargs.get("dropout", 0.0) > 0:
        raise ValueError("FlexAttention does not apply attention dropout: set `disable_dropout=True`.")
    if kwargs.get("s_aux") is not None:
        raise ValueError("FlexAttention here does not support attention sinks; use packed_attention='dense'.")
    score_mod = None
    if softcap is not None:

        def score_mod(score, batch, head, query_index, key_index):
            return softcap * torch.tanh(score / softcap)

    num_heads, num_key_value_heads = query.size(1), key.size(1)
    enable_gqa = num_heads != num_key_value_heads
    if enable_gqa and num_heads & (num_heads - 1):  # the GQA kernel wants a power-of-two head count (as transformers)
        key = key.repeat_interleave(num_heads // num_key_value_heads, dim=1)
        value = value.repeat_interleave(num_heads // num_key_value_heads, dim=1)
        enable_gqa = False
    attend = _compiled_flex_attention() if query.device.type == "cuda" else flex_attention
    output = attend(
        query, key, value, score_mod=score_mod, block_mask=attention_mask, enable_gqa=enable_gqa, scale=scaling
    )
    return output.transpose(1, 2).contiguous(), None


def sdpa_or_flex_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """FlexAttention for the packed layout's `BlockMask`, transformers' SDPA for everything else (generation)."""
    if BlockMask is not None and isinstance(attention_mask, BlockMask):
        return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _install_sdpa_or_flex(model: torch.nn.Module) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SDPA_OR_FLEX, sdpa_or_flex_attention_forward)
    AttentionMaskInterface.register(SDPA_OR_FLEX, sdpa_mask)
    model.set_attn_implementation(SDPA_OR_FLEX)


def _flex_unavailable(model: torch.nn.Module, implementation: str | None, device: torch.device, dropout: bool):
    """Why the packed layout cannot run on FlexAttention here, or `None` if it can."""
    if flex_attention is None:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs >= 2.5)"
    if not getattr(model, "_supports_flex_attn", False):
        return f"{type(model).__name__} does not support FlexAttention"
    if implementation not in ("sdpa", "flex_attention", SDPA_OR_FLEX):
        return f"the {implementation!r} attention implementation cannot take a BlockMask (use 'sdpa')"
    if device.type != "cuda":
        return f"FlexAttention has no backward pass on {device.type} (torch {torch.__version__})"
    if dropout and getattr(model.config, "attention_dropout", 0.0):
        return "FlexAttention does not apply attention dropout (set disable_dropout=True)"
    return None


def packed_attention_backend(
    model: torch.nn.Module, requested: str, device: torch.device, dropout: bool = False
) -> str | None:
    """
    Choose how the packed layout's mask reaches the model: `"flex"`, `"dense"`, or `None` when the packed layout
    cannot be used at all (then each response is computed behind its own copy of the prompt). Logs one line whenever
    it falls back from what was asked. For `"flex"` on an `sdpa` model, installs [`sdpa_or_flex_attention_forward`].

    Args:
        model (`torch.nn.Module`):
            The policy, possibly a `PeftModel`.
        requested (`str`):
            `"auto"` (`"flex"` for a model loaded with `attn_implementation="flex_attention"`, `"dense"` otherwise: on
            GPUs FlexAttention is not measured faster yet, on CPUs it has no backward pass), `"dense"` or `"flex"`.
        device (`torch.device`):
            Where training runs.
        dropout (`bool`, *optional*, defaults to `False`):
            Whether attention dropout stays on during training.
    """
    if requested not in PACKED_ATTENTION_CHOICES:
        raise ValueError(f"packed_attention must be one of {PACKED_ATTENTION_CHOICES}, got {requested!r}.")
    if is_peft_model(model) and model.active_peft_config.is_prompt_learning:
        logger.warning("share_prompt is off: prompt-learning PEFT methods prepend virtual tokens.")
        return None
    base = model.get_base_model() if is_peft_model(model) else model
    implementation = getattr(base.config, "_attn_implementation", None)
    if requested == "flex" or (requested == "auto" and implementation == "flex_attention"):
        reason = _flex_unavailable(base, implementation, device, dropout)
        if reason is None:
            if implementation == "sdpa":
                _install_sdpa_or_flex(base)
            return "flex"
        if requested == "flex":
            logger.warning("packed_attention='flex' falls back to the dense mask: %s.", reason)
    if implementation in ("sdpa", "eager", SDPA_OR_FLEX, None):
        return "dense"
    logger.warning(
        "share_prompt is off: the %r attention implementation does not take the block attention mask the packed "
        "layout needs; each response is computed with its own copy of the prompt. Use attn_implementation='sdpa' to "
        "compute each prompt once.",
        implementation,
    )
    return None
