"""SIGTERM and a killed caller stop a report's work (stop 52).

``kill <pid>`` of a ``tying report`` (a CI timeout, a closed terminal) ended the
process at once: no ``finally`` ran, the build folder stayed, and the pool's worker
processes (children of the forkserver, not of the caller) ran their experiments to the
end. Now SIGTERM ends a command as Ctrl-C does, an interrupted pool stops its workers,
and a worker whose caller is gone (``kill -9``) ends itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import signal
import subprocess
import sys
import time

import pytest

from tying.cli import EXIT_INTERRUPTED, main
from tying.experiments.registry import Result
from tying.experiments.runner import EXIT_PARENT_GONE, _stop_workers


def _caller_handler(signum, frame):
    raise AssertionError("SIGTERM reached the caller's handler, not the command's")


@pytest.fixture
def caller_sigterm():
    # a stand-in for the default handler, which would end the test process itself
    before = signal.signal(signal.SIGTERM, _caller_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_during_a_report_ends_it_as_ctrl_c_does(register, capsys, tmp_path, caller_sigterm):
    out = tmp_path / "rep"
    register("stop52-ok", lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    assert main(["report", "--size", "quick", "--only", "stop52-ok", "--out", str(out)]) == 0
    page = (out / "index.html").read_bytes()
    listing = sorted(p.name for p in out.iterdir())

    def terminated(size, seed):
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt the experiment")

    register("stop52-sigterm", terminated)
    capsys.readouterr()
    argv = ["report", "--size", "quick", "--only", "stop52-ok,stop52-sigterm", "--out", str(out)]
    assert main(argv) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted after 1 of 2 experiment(s): no report page was written" in err
    assert (out / "index.html").read_bytes() == page  # the earlier page, kept whole
    assert sorted(p.name for p in out.iterdir()) == listing  # no build folder left
    assert signal.getsignal(signal.SIGTERM) is _caller_handler  # the caller's again


@pytest.mark.parametrize("sigterm", ["default", "ignored"])
def test_an_interrupted_pool_stops_its_running_workers_at_once(sigterm):
    # a worker that ignores SIGTERM (a disposition it inherits through exec: a CI job's
    # process whose SIGTERM was set to SIG_IGN) is killed after a short wait
    disposition = signal.SIG_IGN if sigterm == "ignored" else signal.SIG_DFL
    before = signal.signal(signal.SIGTERM, disposition)
    try:
        pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        running = pool.submit(time.sleep, 60)  # the worker starts here, with that disposition
        deadline = time.monotonic() + 60
        while not running.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the worker has taken the task
    finally:
        signal.signal(signal.SIGTERM, before)
    procs = list(pool._processes.values())
    assert [p.is_alive() for p in procs] == [True]
    t0 = time.perf_counter()
    _stop_workers(pool)
    assert [p.is_alive() for p in procs] == [False]
    assert time.perf_counter() - t0 < 15  # not the 60 s the task would have taken
    # the pool's own thread marks the future once it sees the dead worker; on a loaded
    # machine that comes a moment after _stop_workers returns (stop 54: a CI flake)
    cf.wait([running], timeout=10)
    assert running.done()


_WORKER = """
import sys, time
from tying.experiments.runner import _exit_with
_exit_with(int(sys.argv[1]), every_s=0.05)
time.sleep(60)
"""


def test_a_worker_whose_caller_was_killed_ends_itself():
    caller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, str(caller.pid)])
    try:
        time.sleep(1.0)
        assert worker.poll() is None  # the caller lives: the worker goes on
        caller.kill()  # kill -9: nothing of the caller's runs
        caller.wait()  # reaped, so the pid is free (a zombie still answers kill 0)
        assert worker.wait(timeout=20) == EXIT_PARENT_GONE
    finally:
        for p in (caller, worker):
            if p.poll() is None:
                p.kill()
                p.wait()
