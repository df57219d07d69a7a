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


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(__file__),
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


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
