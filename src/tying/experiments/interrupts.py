"""Ctrl-C and SIGTERM held while a report moves into place (stop 56).

:func:`tying.experiments.output.install_build` moves a finished report's page files
into ``--out`` one by one; a signal between two moves left the new ``index.html``
beside the old ``results.json``. :func:`interrupt_deferred` holds both signals until
the block is done, then delivers them to the handlers that were there before.

Example:
    >>> with interrupt_deferred():
    ...     pass  # files moved here are all moved, or none
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["interrupt_deferred"]


#: The signals held while a report moves into place: Ctrl-C, and SIGTERM (``kill``, a
#: CI timeout), which ``tying`` turns into a Ctrl-C. Holding SIGINT alone let a SIGTERM
#: stop the move between ``index.html`` and ``results.json``: the new page stood beside
#: the old results, and the command said the earlier report was left as it was (stop 56).
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then deliver them (main thread only).

    Once the block is done each held signal is sent again to the handler that was
    there before: ``tying``'s for SIGTERM raises ``KeyboardInterrupt``, a caller's own
    handler is called, an ignored SIGTERM stays ignored; a held Ctrl-C over Python's
    default, an ignored or the OS-default SIGINT raises ``KeyboardInterrupt``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    try:
        for signum in _DEFERRED:
            if signal.getsignal(signum) is None:  # set outside Python: cannot be put back
                continue
            previous[signum] = signal.signal(signum, lambda n, frame: caught.append(n))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # each held signal goes to the handler that was there before: tying's and Python's
    # default raise KeyboardInterrupt, a caller's own (a flag for a graceful stop) is
    # called (raising KeyboardInterrupt over it made write_report fail after both page
    # files had moved). A Ctrl-C held over an ignored or OS-default SIGINT is raised as
    # before: a process started in the background (SIGINT ignored) still learns of it
    for signum in _DEFERRED:
        if signum not in caught:
            continue
        own = callable(previous.get(signum)) and previous[signum] is not signal.default_int_handler
        if signum == signal.SIGINT and not own:
            raise KeyboardInterrupt
        signal.raise_signal(signum)
