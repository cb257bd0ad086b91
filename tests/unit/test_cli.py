"""`tspin_trl/cli.py`: the `tspin-trl` command's subcommands, `--version` and `--help`."""

import pytest


def test_version_and_plot_help_name_themselves(capsys):
    from tspin_trl.cli import main as cli_main

    assert cli_main(["--version"]) == 0 and capsys.readouterr().out == "tspin-trl 0.1.0\n"
    with pytest.raises(SystemExit):
        cli_main(["plot", "--help"])
    assert capsys.readouterr().out.startswith("usage: tspin-trl plot [-h]")
    assert cli_main([]) == 0 and "tspin-trl [--version]" in capsys.readouterr().out
