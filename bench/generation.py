"""The SPIN-style generation loop (the baseline of the generation pass) and forced response lengths."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


def spin_style_generate(model, accelerator, tokenizer, prompts: Sequence[str], *, batch_size: int = 16,
                        max_new_tokens: int, sampling_kwargs: dict | None = None,
                        pad_to_multiple_of: int = 8) -> tuple[list[list[int]], list[str]]:  # fmt: skip
    """SPIN's generation loop (its `generate.py` before it moved to vLLM): split the prompts over processes, fixed
    batches of `batch_size` prompts in dataset order, left padding (to a multiple of 8), `model.generate` with a fixed
    `max_new_tokens`, prompt stripped, decoded to text, gathered. Returns the completions' token ids (as generated,
    padding after the end of sequence included) and their decoded texts, in prompt order."""
    from accelerate.utils import gather_object

    results = []
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    try:
        with accelerator.split_between_processes(list(prompts)) as mine:
            for start in range(0, len(mine), batch_size):
                batch = tokenizer(
                    mine[start : start + batch_size],
                    return_tensors="pt",
                    padding="longest",
                    truncation=False,
                    pad_to_multiple_of=pad_to_multiple_of,
                    add_special_tokens=False,
                ).to(device)
                with torch.no_grad():
                    output = model.generate(
                        **batch,
                        max_new_tokens=max_new_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        **(sampling_kwargs or {}),
                    )
                completions = output[:, batch["input_ids"].size(1) :]
                texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
                results.extend(zip(completions.tolist(), texts))
    finally:
        tokenizer.padding_side = "right"
    gathered = gather_object(results) if accelerator.num_processes > 1 else results
    return [ids for ids, _ in gathered], [text for _, text in gathered]


class ForcedLengthProcessor(LogitsProcessor):
    """A logits processor that ends each response at a length decided by its prompt (a stand-in for a trained model's
    realistic response lengths: a random model almost never samples the end of sequence).

    `lengths` maps the first `key_tokens` tokens of a prompt to its response length (end-of-sequence token included).
    The decision depends only on the prompt and the number of tokens generated, never on the batch or its padding, so
    every contender generates exactly the same number of useful tokens per prompt.
    """

    def __init__(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int], pad_id: int, eos_id: int,
                 key_tokens: int = 12):  # fmt: skip
        self.key_tokens, self.pad_id, self.eos_id = key_tokens, pad_id, eos_id
        self.table = {tuple(p[:key_tokens]): (len(p), n) for p, n in zip(prompts, lengths)}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        is_token = input_ids != self.pad_id
        start = is_token.int().argmax(dim=1)  # left padding: the first token of the prompt
        width = min(self.key_tokens, input_ids.size(1))
        index = (start[:, None] + torch.arange(width, device=input_ids.device)).clamp(max=input_ids.size(1) - 1)
        keys = input_ids.gather(1, index).tolist()
        starts = start.tolist()
        force = []
        for row, key in enumerate(keys):
            prompt_len, target = self.table.get(tuple(key), (None, None))
            generated = input_ids.size(1) - starts[row] - prompt_len if prompt_len is not None else -1
            force.append(target is not None and generated >= target - 1)
        if any(force):
            rows = torch.tensor(force, device=scores.device)
            forced = torch.full_like(scores[0], float("-inf"))
            forced[self.eos_id] = 0.0
            scores = torch.where(rows[:, None], forced, scores)
        return scores
