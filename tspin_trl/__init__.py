"""T-SPIN (triplet-based self-play fine-tuning) for Hugging Face TRL."""

from .compat import quiet_deepspeed_cpu_notice


quiet_deepspeed_cpu_notice()  # first: the imports below import accelerate, which imports DeepSpeed

# isort: split
from .collator import DataCollatorForTriplet  # noqa: E402
from .config import TSPINConfig  # noqa: E402
from .loss import tspin_loss  # noqa: E402
from .monitor import IterationMonitor  # noqa: E402
from .objective import ObjectivePolicy  # noqa: E402
from .scoring import ScoringCallback  # noqa: E402
from .self_play import SelfPlayCallback  # noqa: E402
from .trainer import TSPINTrainer  # noqa: E402


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
