"""`python -m tspin_trl` (and `accelerate launch -m tspin_trl train ...`): the `tspin-trl` command."""

import sys

from tspin_trl.cli import main


if __name__ == "__main__":
    sys.exit(main())
