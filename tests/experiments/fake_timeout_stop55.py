"""Fake experiments for the timeout tests (stop 55), importable by worker processes.

A worker does not see experiments registered in the caller, so the tests name this
module in ``runner._WORKER_IMPORTS``: imported in a worker process it registers the
fakes; in the test process the tests call :func:`register` (and remove them after).
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import tempfile
import time

from tying.experiments import REGISTRY
from tying.experiments import claims as claims_module
from tying.experiments.claims import Claim
from tying.experiments.registry import Result, experiment

HANG, OK, OK2, HANG_IN_FIGURE = (
    "stop55-hang",
    "stop55-ok",
    "stop55-ok2",
    "stop55-hang-in-figure",
)


def pid_file(seed: int) -> pathlib.Path:
    """Where the hung experiment run with ``seed`` writes its worker's pid."""
    return pathlib.Path(tempfile.gettempdir()) / f"tying-stop55-hang-{seed}.pid"


def _hang(size, seed):
    pid_file(seed).write_text(str(os.getpid()))
    time.sleep(600)  # longer than any test: only the timeout ends it
    return Result(passed=True, measured={"x": 1.0})


def _ok(size, seed):
    time.sleep(0.05)
    return Result(passed=True, measured={"pid": os.getpid()})


class _HangingFigure:
    """A figure whose save writes part of a PNG and then hangs (a stuck backend)."""

    def savefig(self, path, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"\x89PNG partial")
        time.sleep(600)


def _hang_in_figure(size, seed):
    return Result(passed=True, measured={"x": 1.0}, figures={"stuck": _HangingFigure()})


FAKES = {HANG: _hang, OK: _ok, OK2: _ok, HANG_IN_FIGURE: _hang_in_figure}


def register() -> list[str]:
    """Register the fakes in this process (idempotent); the ids added now."""
    added = []
    for exp_id, fn in FAKES.items():
        if exp_id in REGISTRY:
            continue
        row = Claim("", exp_id, "test", ("004",), "004", exp_id, f"{exp_id} claims.", "")
        claims_module._BY_ID[exp_id] = row
        experiment(exp_id)(fn)
        added.append(exp_id)
    return added


if multiprocessing.parent_process() is not None:  # a worker: register on import
    register()
