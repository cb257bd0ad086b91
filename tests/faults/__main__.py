"""`python -m tests.faults` (or `python tests/faults`): the fault campaign."""

import os
import sys


if __package__ in (None, ""):  # `python tests/faults`: import `tests` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.faults.campaign import main  # noqa: E402


sys.exit(main())
