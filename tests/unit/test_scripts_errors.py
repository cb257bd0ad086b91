"""`tspin_trl/scripts/errors.py`: which errors are known (raised on purpose), their exit codes, an interruption's note."""

import pytest

from tspin_trl.scripts.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    Terminated,
    exit_code,
    raised_on_purpose,
    report,
)


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


def test_an_interruption_prints_its_resume_note_and_sigterm_has_its_own_code(capsys):
    interrupt = KeyboardInterrupt()
    interrupt.resume_note = "The last complete checkpoint is out/checkpoint-3 (step 3 of 16). To resume from it, run"
    assert report(interrupt, "tspin-trl train") == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == f"\ntspin-trl train: interrupted. {interrupt.resume_note}\n"
    assert report(Terminated(), "tspin-trl train") == EXIT_TERMINATED == 143
    assert capsys.readouterr().err == "\ntspin-trl train: stopped by SIGTERM.\n"
    assert isinstance(Terminated(), KeyboardInterrupt)  # no `except Exception` swallows it
