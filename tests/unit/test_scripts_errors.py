"""`tspin_trl/scripts/errors.py`: which errors are known (raised on purpose) and their exit codes."""

import pytest

from tspin_trl.scripts.errors import EXIT_ERROR, EXIT_UNEXPECTED, exit_code, raised_on_purpose


def test_only_errors_raised_on_purpose_are_known():
    from tspin_trl import TSPINConfig

    with pytest.raises(ValueError) as ours:
        TSPINConfig(output_dir="x", beta=float("nan"), use_cpu=True)
    assert raised_on_purpose(ours.value) and exit_code(ours.value) == EXIT_ERROR
    with pytest.raises(ZeroDivisionError) as bug:
        _ = 1 / 0
    assert not raised_on_purpose(bug.value) and exit_code(bug.value) == EXIT_UNEXPECTED
    with pytest.raises(KeyError) as theirs:
        {}["missing"]
    assert exit_code(theirs.value) == EXIT_UNEXPECTED
