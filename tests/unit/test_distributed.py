"""`tspin_trl/distributed.py`: `main_decides`, in one process."""

import pytest

from tests.support import make_context
from tspin_trl.distributed import main_decides


def test_main_decides_in_one_process(tmp_path, tokenizer):
    context, _ = make_context(tmp_path, tokenizer)
    assert main_decides(context.accelerator, lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(KeyError, match="missing"):
        main_decides(context.accelerator, lambda: {}["missing"])
