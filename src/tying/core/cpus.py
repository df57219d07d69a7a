"""How many CPUs this process may use: one answer for every package's ``n_jobs=-1``."""

from __future__ import annotations

import os

__all__ = ["usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS keeps one.

    ``os.cpu_count()`` counts the machine's CPUs, not the ones a Slurm job, a
    ``taskset`` or a container's cpuset gives this process: ``n_jobs=-1`` on 4 CPUs
    of a 128-core node started 128 workers (stop 35).

    Example:
        >>> 1 <= usable_cpus() <= (os.cpu_count() or 1)
        True
    """
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity mask (macOS, Windows)
        return os.cpu_count() or 1
