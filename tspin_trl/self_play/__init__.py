"""Self-play, split by job: the schedule ([`SelfPlayCallback`]), the responses ([`ResponseMaker`]: proto, synthetic,
reference log-probs), the iteration files ([`IterationFiles`]), the run's identity and the binding of its folder
([`RunBinding`]), and the likelihood inversion."""

from .callback import SelfPlayCallback
from .identity import IDENTITY_FIELDS, RunBinding, SelfPlayError, dataset_digest, run_identity
from .iteration_files import ITERATION_COLUMNS, IterationFiles
from .responses import ResponseMaker


__all__ = [
    "IDENTITY_FIELDS",
    "ITERATION_COLUMNS",
    "IterationFiles",
    "ResponseMaker",
    "RunBinding",
    "SelfPlayCallback",
    "SelfPlayError",
    "dataset_digest",
    "run_identity",
]
