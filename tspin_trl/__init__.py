"""T-SPIN (triplet-based self-play fine-tuning) for Hugging Face TRL.

The public names are imported on first use (PEP 562), so that `tspin-trl --version` and `tspin-trl train --help`,
which import this package first, answer without importing torch and transformers.
"""

import importlib
from typing import TYPE_CHECKING

from .compat import quiet_deepspeed_cpu_notice


quiet_deepspeed_cpu_notice()  # before anything imports accelerate, which imports DeepSpeed

if TYPE_CHECKING:
    from .collator import DataCollatorForTriplet
    from .config import TSPINConfig
    from .loss import tspin_loss
    from .monitor import IterationMonitor
    from .objective import ObjectivePolicy
    from .scoring import ScoringCallback
    from .self_play import SelfPlayCallback
    from .trainer import TSPINTrainer


__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "DataCollatorForTriplet": ".collator",
    "IterationMonitor": ".monitor",
    "ObjectivePolicy": ".objective",
    "ScoringCallback": ".scoring",
    "SelfPlayCallback": ".self_play",
    "TSPINConfig": ".config",
    "TSPINTrainer": ".trainer",
    "tspin_loss": ".loss",
}

__all__ = [
    "DataCollatorForTriplet",
    "IterationMonitor",
    "ObjectivePolicy",
    "ScoringCallback",
    "SelfPlayCallback",
    "TSPINConfig",
    "TSPINTrainer",
    "tspin_loss",
    "__version__",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
