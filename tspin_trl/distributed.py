"""One process decides, every process hears: the pattern every decision that reads a file follows.

Under several processes, two processes reading the same file at different moments could disagree about what to train
on. So a decision (is this iteration file valid, is the proto response cached, was this label scored) is taken on the
global main process and its result broadcast; an error there is raised on every process, so that none waits forever
for a main process that failed.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from accelerate.utils import broadcast_object_list, gather_object


if TYPE_CHECKING:
    from accelerate import Accelerator


T = TypeVar("T")


class OtherProcessError(RuntimeError):
    """The deciding process failed; raised on the processes that waited for it, naming its error."""


def main_decides(
    accelerator: "Accelerator",
    function: Callable[..., T],
    *arguments: Any,
    every_writer: bool = False,
    is_writer: bool = False,
) -> T:
    """Run `function(*arguments)` on the main process only and give every process its result.

    An error is raised on every process: the original on the process that raised it, an [`OtherProcessError`] naming
    it on the others. With `every_writer`, `function` also runs on every other process for which `is_writer` is true
    (with `save_on_each_node`, each node's local main process keeps its node's copy of the files); an error on any of
    them is raised everywhere, and the main process's result is returned.

    Collective: every process must call it.
    """
    runs_here = accelerator.is_main_process or (every_writer and is_writer)
    outcome: list[Any] = [None]
    error: Exception | None = None
    if runs_here:
        try:
            outcome = [("ok", function(*arguments))]
        except Exception as raised:  # re-raised below, after the other processes have been told
            error = raised
            outcome = [("error", f"{type(raised).__name__}: {raised}")]
    if accelerator.num_processes > 1:
        if every_writer:
            outcomes = gather_object(outcome)  # in rank order: the main process's first
            errors = [entry for entry in outcomes if entry is not None and entry[0] == "error"]
            outcome = errors[:1] or outcomes[:1]
        else:
            outcome = broadcast_object_list(outcome)
    status, value = outcome[0]
    if error is not None:
        raise error
    if status == "error":
        raise OtherProcessError(f"Self-play stopped on another process: {value}")
    return value
