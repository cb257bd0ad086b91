"""`tspin_trl/cli.py`: the `tspin-trl` command's subcommands, `--version` and `--help`, SIGTERM during training."""

import os
import signal
import time

import pytest


def test_version_and_plot_help_name_themselves(capsys):
    from tspin_trl.cli import main as cli_main

    assert cli_main(["--version"]) == 0 and capsys.readouterr().out == "tspin-trl 0.1.0\n"
    with pytest.raises(SystemExit):
        cli_main(["plot", "--help"])
    assert capsys.readouterr().out.startswith("usage: tspin-trl plot [-h]")
    assert cli_main([]) == 0 and "tspin-trl [--version]" in capsys.readouterr().out


def test_sigterm_while_training_ends_the_run_as_ctrl_c_does():
    from tspin_trl.cli import sigterm_as_interrupt
    from tspin_trl.scripts.errors import Terminated

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at the next bytecode: never reached
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the run
    with sigterm_as_interrupt():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_train_help_comes_from_the_record_and_exits_0(capsys):
    from tspin_trl.cli import main as cli_main
    from tspin_trl.scripts.help import load_record

    assert load_record() is not None, "the shipped help record is stale (tests/unit/test_scripts_help.py)"
    assert cli_main(["train", "--task", "sorting", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: tspin-trl train [--config FILE]")
