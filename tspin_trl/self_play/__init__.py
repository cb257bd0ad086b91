"""Self-play, split by job: the schedule ([`SelfPlayCallback`]), the responses ([`ResponseMaker`]: proto, synthetic,
reference log-probs), the iteration files ([`IterationFiles`]), the run's identity and the binding of its folder
([`RunBinding`]), prompt selection ([`PromptSelection`]), the likelihood inversion, and the responses of a dataset
passed to `evaluate()` ([`EvaluationResponses`])."""

from .callback import SelfPlayCallback
from .evaluation import EvaluationResponses
from .identity import IDENTITY_FIELDS, RunBinding, SelfPlayError, dataset_digest, run_identity
from .iteration_files import ITERATION_COLUMNS, IterationFiles
from .responses import ResponseMaker
from .selection import PromptSelection


__all__ = [
    "IDENTITY_FIELDS",
    "ITERATION_COLUMNS",
    "EvaluationResponses",
    "IterationFiles",
    "PromptSelection",
    "ResponseMaker",
    "RunBinding",
    "SelfPlayCallback",
    "SelfPlayError",
    "dataset_digest",
    "run_identity",
]
