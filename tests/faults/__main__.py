"""`python -m bench.faults` (or `python bench/faults`): the fault campaign."""

import os
import sys


if __package__ in (None, ""):  # `python bench/faults`: import `bench` from the repository root, as `-m` does
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.faults.campaign import main  # noqa: E402


sys.exit(main())
