"""`DataCollatorForTriplet`: pads prompt+real, prompt+synthetic and prompt+proto into one batch."""

from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.utils import pad


ROLES = ("real", "synthetic", "proto")


@dataclass
class DataCollatorForTriplet(DataCollatorMixin):
    """
    Data collator for response triplets. Inputs are dynamically padded (on the right) to the longest sequence.

    Each example is a dictionary with `"prompt_ids"`, `"real_ids"`, `"synthetic_ids"` and optionally `"proto_ids"`
    (left out when the historical term is off, so proto rows cost nothing). The collator returns:

    - `"input_ids"`: the prompt followed by each response, stacked role by role: the first `batch_size` rows hold the
      real responses, the next `batch_size` the synthetic ones and, if present, the last `batch_size` the proto ones.
    - `"attention_mask"`: `1` on tokens, `0` on padding.
    - `"completion_mask"`: `1` on response tokens.
    - `"prompt_lengths"`: the prompt length of each example, shape `(batch_size,)`.
    - `"ref_real_logps"`, `"ref_synthetic_logps"`, `"ref_proto_logps"`: tensors of the reference log-probs when the
      examples carry them.

    A prompt + response longer than `max_length` keeps the whole prompt and cuts the response at the end (the prompt
    must stay what generation saw; prompts are truncated at tokenization time, see `max_prompt_length`).

    Args:
        pad_token_id (`int`):
            Token id used for padding.
        max_length (`int`, *optional*):
            Maximum length of a prompt + response.
        pad_to_multiple_of (`int`, *optional*):
            If set, sequences are padded to a multiple of this value.
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            Only `"pt"` is supported.

    Example:

    ```python
    >>> from tspin_trl import DataCollatorForTriplet

    >>> collator = DataCollatorForTriplet(pad_token_id=0)
    >>> batch = collator([{"prompt_ids": [1, 2], "real_ids": [3, 4], "synthetic_ids": [5], "proto_ids": [6, 7, 8]}])
    >>> batch["input_ids"]
    tensor([[1, 2, 3, 4, 0],
            [1, 2, 5, 0, 0],
            [1, 2, 6, 7, 8]])
    >>> batch["completion_mask"]
    tensor([[0, 0, 1, 1, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 1]])
    ```
    """

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        roles = [role for role in ROLES if f"{role}_ids" in examples[0]]
        sequences, completion_masks = [], []
        for role in roles:
            for example in examples:
                prompt, response = example["prompt_ids"], example[f"{role}_ids"]
                if self.max_length is not None:
                    response = response[: max(self.max_length - len(prompt), 0)]
                sequences.append(torch.tensor(prompt + response, dtype=torch.long))
                completion_masks.append(torch.tensor([0] * len(prompt) + [1] * len(response), dtype=torch.long))

        def right_pad(tensors: list[torch.Tensor], value: int) -> torch.Tensor:
            return pad(tensors, padding_value=value, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)

        output = {
            "input_ids": right_pad(sequences, self.pad_token_id),
            "attention_mask": right_pad([torch.ones_like(s) for s in sequences], 0),
            "completion_mask": right_pad(completion_masks, 0),
            # One entry per example: its shape tells the trainer how many rows each role has, without a sync.
            "prompt_lengths": torch.tensor([len(example["prompt_ids"]) for example in examples], dtype=torch.long),
        }
        for role in roles:
            key = f"ref_{role}_logps"
            if key in examples[0]:
                output[key] = torch.tensor([example[key] for example in examples], dtype=torch.float32)
        return output
