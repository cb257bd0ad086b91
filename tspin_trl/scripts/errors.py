"""How `tspin-trl` ends on an error: a known error prints one paragraph naming the cause and the fix (no traceback),
anything else prints its traceback; each kind has its own exit code.

| exit code | meaning |
| --- | --- |
| 0 | success |
| 1 | a known error: bad data, a missing file, folder or model, a self-play or checkpoint problem (the message says what to do) |
| 2 | the command line or the config file is wrong: an unknown flag or key, a bad value, an invalid setting |
| 3 | an unexpected error: its traceback is printed (a bug, or a failure of the environment) |
| 130 | interrupted (Ctrl-C) |
| 143 | stopped by SIGTERM (`kill`, a scheduler) |

An interrupted `train` prints the last complete checkpoint and the command that resumes from it
(`tspin_trl.scripts.resume`).

A known error is one this package raises on purpose (a `raise` statement in `tspin_trl`, whose message names the fix),
or one of the errors below that the command line raises after checking its inputs. `TSPIN_TRL_DEBUG=1` (or `--debug`)
prints the traceback of every error.
"""

import linecache
import os
import sys
import traceback
from pathlib import Path


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNEXPECTED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DEBUG_ENV = "TSPIN_TRL_DEBUG"
DEBUG_FLAG = "--debug"
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep


class UsageError(ValueError):
    """The command line or the config file is wrong (exit code 2): an unknown flag or key, a bad or invalid value."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is so that it ends as after Ctrl-C (exit code 143). A `KeyboardInterrupt`, so
    that no `except Exception` swallows it."""


class InputNotFoundError(FileNotFoundError):
    """A dataset, model or config file named on the command line does not exist, or its Hub id cannot be reached."""


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether tracebacks were asked for (`--debug` in `argv` or `TSPIN_TRL_DEBUG` set to a true value), and `argv`
    without `--debug`."""
    rest = [arg for arg in argv if arg != DEBUG_FLAG]
    from_env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
    return from_env or len(rest) != len(argv), rest


def raised_on_purpose(error: BaseException) -> bool:
    """Whether `error` comes from a `raise` statement of this package (a message written for the user), not from a
    failing operation inside it or from another library."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not os.path.abspath(filename).startswith(_PACKAGE):
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise ")


def exit_code(error: BaseException) -> int:
    """The exit code of `error` (see the module's table)."""
    if isinstance(error, Terminated):
        return EXIT_TERMINATED
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, InputNotFoundError) or (isinstance(error, Exception) and raised_on_purpose(error)):
        return EXIT_ERROR
    return EXIT_UNEXPECTED


def report(error: BaseException, prog: str, debug: bool = False) -> int:
    """
    Print `error` for a person at a terminal and return its exit code.

    A known error prints `<prog>: error: <message>` and a line on how to see the traceback; an unexpected one prints
    its traceback and a line on how to report it. With `debug`, every error prints its traceback. An interruption
    prints "interrupted." and the `resume_note` the command attached to it, if any.
    """
    code = exit_code(error)
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        what = "interrupted" if code == EXIT_INTERRUPTED else "stopped by SIGTERM"
        note = getattr(error, "resume_note", None)
        print(f"\n{prog}: {what}." + (f" {note}" if note else ""), file=sys.stderr, flush=True)
        return code
    if debug or code == EXIT_UNEXPECTED:
        traceback.print_exception(error, file=sys.stderr)
    if code == EXIT_UNEXPECTED:
        print(
            f"\n{prog}: unexpected error ({type(error).__name__}), traceback above. If it is not caused by your "
            "machine (memory, disk, network), please report it with the output of `tspin-trl env`.",
            file=sys.stderr,
        )
        return code
    if not debug:
        print(f"{prog}: error: {error}", file=sys.stderr)
        print(f"(The traceback is hidden: set {DEBUG_ENV}=1 or add {DEBUG_FLAG} to see it.)", file=sys.stderr)
    return code
