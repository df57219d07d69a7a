"""What the report was run on: versions, CPU, threads."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata

__all__ = ["collect_environment"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


#: This module's folder and file name: git runs there, and asks whether it tracks the file.
_HERE, _THIS = os.path.split(os.path.abspath(__file__))


def _git(*args: str) -> str | None:
    """``git args...`` run in this package's folder: its output, or None when it failed."""
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=_HERE,
            check=False,
            # a plain `git status` refreshes .git/index under index.lock: a report run
            # beside the user's own `git commit` could make that commit fail ("index.lock:
            # File exists"); a git without this setting (before 2.15) ignores it
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str:
    """The commit of the code that ran, or why there is none to name.

    HEAD alone named a commit whose code did not produce the numbers: with uncommitted
    changes to the package it is marked so, and a tying installed into a virtual
    environment that lies inside some other git repository (``project/.venv``) is no
    file of that repository, whose HEAD is not tying's (stop 58).
    """
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    if not _git("ls-files", "--", _THIS):
        return "unknown (tying does not run from a git checkout of its own)"
    changed = _git("status", "--porcelain", "--", "..")  # the tying package folder
    if changed is None:
        return f"{commit} (uncommitted changes unknown)"
    return f"{commit} + uncommitted changes to tying" if changed else commit


def collect_environment(**run: object) -> dict[str, object]:
    """Versions, CPU and thread counts of this machine, plus the given run settings.

    Args:
        **run: settings of the run to record beside them (size, seed, jobs, threads).

    Returns:
        A flat dict, JSON-ready, in display order.

    Example:
        >>> env = collect_environment(size="quick", seed=0)
        >>> env["size"], "torch" in env
        ('quick', True)
    """
    env: dict[str, object] = {
        "python": sys.version.split()[0],
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "matplotlib": _version("matplotlib"),
        "tying": _version("tying"),
        "git commit": _git_commit(),
        "platform": platform.platform(),
        "CPU": _cpu_model(),
        "logical CPUs": os.cpu_count(),
    }
    env.update(run)
    env["generated (UTC)"] = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    return env
