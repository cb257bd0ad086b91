"""`DataCollatorForTriplet`: pads prompt+real, prompt+synthetic and prompt+proto into one batch."""

from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.utils import pad


ROLES = ("real", "synthetic", "proto")


def response_budget(prompt_length: int, max_length: int | None) -> int | None:
    """How many tokens of a response are kept (and scored) after a prompt of `prompt_length` tokens: a prompt +
    response longer than `max_length` keeps the whole prompt and cuts the response; `None` when nothing is cut."""
    return None if max_length is None else max(max_length - prompt_length, 0)


@dataclass
class DataCollatorForTriplet(DataCollatorMixin):
    """
    Data collator for response triplets. Inputs are dynamically padded (on the right) to the longest sequence.

    Each example is a dictionary with `"prompt_ids"`, `"real_ids"`, `"synthetic_ids"` and optionally `"proto_ids"`
    (left out when the historical term is off, so proto rows cost nothing), and optionally reference log-probs
    `"ref_<role>_logps"`. A prompt + response longer than `max_length` keeps the whole prompt and cuts the response at
    the end (prompts are truncated at tokenization time, see `max_prompt_length`, so that generation sees them too).

    Two layouts:

    - `share_prompt=False`: one row per (role, example), stacked role by role: the first `batch_size` rows hold
      prompt + real response, the next `batch_size` prompt + synthetic, then prompt + proto. Keys: `"input_ids"`,
      `"attention_mask"` and `"completion_mask"` (`1` on response tokens).
    - `share_prompt=True`: one row per example, the prompt computed once. The row is the prompt without its last
      token, then one segment per response made of the prompt's last token followed by the response. Keys:
      `"input_ids"`, `"attention_mask"` (`1` on tokens), `"position_ids"` (each segment continues the prompt's
      positions), `"segment_ids"` (`0` on the shared prefix, `1 + role index` on a segment, `-1` on padding; the
      trainer turns it into a block attention mask in which a segment sees the prefix and itself) and
      `"shift_labels"` (the next token within a segment, `-100` elsewhere).

    Both layouts also return `"response_lengths"` of shape `(batch_size, num_roles)` and `"synthetic_equals_real"`
    of shape `(batch_size,)`.

    Args:
        pad_token_id (`int`):
            Token id used for padding.
        max_length (`int`, *optional*):
            Maximum length of a prompt + response.
        pad_to_multiple_of (`int`, *optional*):
            If set, sequences are padded to a multiple of this value.
        share_prompt (`bool`, *optional*, defaults to `False`):
            Whether to use the packed layout that computes each prompt once.
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            Only `"pt"` is supported.
        require_synthetic (`bool`, *optional*, defaults to `True`):
            Refuse examples without `"synthetic_ids"`: a training batch needs the policy's responses, which self-play
            samples inside `trainer.train()`. Internal log-prob passes over other roles turn it off.

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
    >>> packed = DataCollatorForTriplet(pad_token_id=0, share_prompt=True)([{"prompt_ids": [1, 2], "real_ids": [3, 4], "synthetic_ids": [5]}])
    >>> packed["input_ids"], packed["segment_ids"]
    (tensor([[1, 2, 3, 4, 2, 5]]), tensor([[0, 1, 1, 1, 2, 2]]))
    >>> packed["shift_labels"]
    tensor([[-100,    3,    4, -100,    5, -100]])
    ```
    """

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    share_prompt: bool = False
    return_tensors: str = "pt"
    require_synthetic: bool = True

    def _responses(self, example: dict[str, Any], roles: list[str]) -> list[list[int]]:
        budget = response_budget(len(example["prompt_ids"]), self.max_length)
        return [example[f"{role}_ids"][:budget] for role in roles]

    def _right_pad(self, rows: list[list[int]], value: int) -> torch.Tensor:
        tensors = [torch.tensor(row, dtype=torch.long) for row in rows]
        return pad(tensors, padding_value=value, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        roles = [role for role in ROLES if f"{role}_ids" in examples[0]]
        if self.require_synthetic and "synthetic" not in roles:
            raise ValueError(
                "The batch has no synthetic responses: self-play has not sampled them yet. They are generated inside "
                "`trainer.train()` (at the start of each iteration), so the prepared dataset can be read before "
                "training but not collated into training or evaluation batches. Call `trainer.train()`, or give the "
                "dataset a 'synthetic' column."
            )
        for example in examples:
            if [role for role in ROLES if f"{role}_ids" in example] != roles:
                raise ValueError(
                    f"The examples of one batch carry different responses ({roles} and "
                    f"{[role for role in ROLES if f'{role}_ids' in example]}): every example needs the same roles."
                )
        responses = [self._responses(example, roles) for example in examples]
        output = self._packed(examples, responses) if self.share_prompt else self._stacked(examples, responses)
        output["response_lengths"] = torch.tensor([[len(r) for r in rs] for rs in responses], dtype=torch.long)
        output["synthetic_equals_real"] = torch.tensor(
            [len(rs) > 1 and rs[0] == rs[1] for rs in responses], dtype=torch.bool
        )
        for role in roles:
            key = f"ref_{role}_logps"
            if key in examples[0]:
                output[key] = torch.tensor([example[key] for example in examples], dtype=torch.float32)
        return output

    def _stacked(self, examples: list[dict[str, Any]], responses: list[list[list[int]]]) -> dict[str, torch.Tensor]:
        sequences, completion_masks = [], []
        for role_index in range(len(responses[0])):
            for example, example_responses in zip(examples, responses, strict=True):
                prompt, response = example["prompt_ids"], example_responses[role_index]
                sequences.append(prompt + response)
                completion_masks.append([0] * len(prompt) + [1] * len(response))
        return {
            "input_ids": self._right_pad(sequences, self.pad_token_id),
            "attention_mask": self._right_pad([[1] * len(s) for s in sequences], 0),
            "completion_mask": self._right_pad(completion_masks, 0),
        }

    def _packed(self, examples: list[dict[str, Any]], responses: list[list[list[int]]]) -> dict[str, torch.Tensor]:
        input_ids, position_ids, segment_ids, shift_labels = [], [], [], []
        for example, example_responses in zip(examples, responses, strict=True):
            prefix, last = example["prompt_ids"][:-1], example["prompt_ids"][-1]
            ids, positions, segments, labels = (
                list(prefix),
                list(range(len(prefix))),
                [0] * len(prefix),
                [-100] * len(prefix),
            )
            for role_index, response in enumerate(example_responses):
                segment = [last] + response
                ids += segment
                positions += range(len(prefix), len(prefix) + len(segment))
                segments += [role_index + 1] * len(segment)
                labels += response + [-100]
            input_ids.append(ids)
            position_ids.append(positions)
            segment_ids.append(segments)
            shift_labels.append(labels)
        return {
            "input_ids": self._right_pad(input_ids, self.pad_token_id),
            "attention_mask": self._right_pad([[1] * len(ids) for ids in input_ids], 0),
            "position_ids": self._right_pad(position_ids, 0),
            "segment_ids": self._right_pad(segment_ids, -1),
            "shift_labels": self._right_pad(shift_labels, -100),
        }
