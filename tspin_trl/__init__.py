"""T-SPIN (triplet-based self-play fine-tuning) for Hugging Face TRL."""

from .collator import DataCollatorForTriplet
from .config import TSPINConfig
from .loss import tspin_loss
from .monitor import IterationMonitor
from .objective import ObjectivePolicy
from .scoring import ScoringCallback
from .self_play import SelfPlayCallback
from .trainer import TSPINTrainer


__version__ = "0.1.0"

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
