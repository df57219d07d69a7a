"""The one way tying's process pools get their start method (stop 57).

Never ``fork``: torch's thread pools do not survive a fork of a process that used them.
``forkserver`` where the platform has it, else ``spawn``. The fork server imports the
given modules once; every worker forked from it starts with them (a worker that imports
torch, tying and its extras itself spends seconds of CPU). The modules are *added* to the
server's list, never replacing it, so two of tying's pools in one process (the experiment
runner's and ``assign_many``'s) and a caller's own list keep each other's preloads. The
list is read when the server starts: once it runs, a new list is ignored and each worker
imports what it lacks when it unpickles its task, as before.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver


def pool_context(preload: list[str]) -> multiprocessing.context.BaseContext:
    """The start method for a pool of tying's workers, with ``preload`` added to the fork
    server's imports.

    Args:
        preload: module names the fork server imports once.

    Returns:
        The ``forkserver`` context (or ``spawn`` where the platform has no fork server).

    Example:
        >>> pool_context(["json"]).get_start_method() in ("forkserver", "spawn")
        True
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    earlier = list(getattr(server, "_preload_modules", None) or [])
    context.set_forkserver_preload(list(dict.fromkeys([*earlier, *preload])))
    return context
