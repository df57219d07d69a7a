"""Run experiments: seeding, timing, figures saved as PNG, failures captured.

:func:`run_experiment` runs one registered experiment and always returns a
:class:`RunRecord`, whether the claim's check passed, failed, the experiment
raised, or an optional extra it needs is missing. :func:`run_many` runs several,
in this process or in worker processes (``jobs > 1``), and reports progress
through callbacks so that the CLI can draw a progress bar.

Example:
    >>> from tying.experiments.runner import run_experiment
    >>> record = run_experiment("param-counts", size="quick", seed=0)
    >>> record.status, record.passed
    ('pass', True)
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import importlib.util
import logging
import math
import multiprocessing
import numbers
import os
import pathlib
import random
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from tying.core.pools import pool_context
from tying.experiments import IMPORT_ERRORS, load_all
from tying.experiments.output import (
    claim_folder,
    folder_lock,
    out_path,
    record_files,
    remove_unlisted_figures,
)
from tying.experiments.registry import Result, Table, check_seed, check_size, get
from tying.experiments.values import jsonable
from tying.experiments.verdict import verdict_problem

__all__ = [
    "EXTRAS",
    "THREADS_PER_EXPERIMENT",
    "RunRecord",
    "jsonable",
    "check_timeout",
    "run_experiment",
    "run_many",
]

log = logging.getLogger(__name__)

#: Import name -> the pyproject extra that installs it (for "missing extra" messages).
EXTRAS: dict[str, str] = {
    "rdkit": "chem",
    "openff": "chem",
    "opacus": "privacy",
    "hmmlearn": "bench",
    "lmfit": "bench",
    "pomegranate": "bench",
    "e2cnn": "bench",
}

FIGURES_DIR = "figures"

#: torch intra-op threads an experiment runs on, in this process and in every worker:
#: the same numbers whatever ``jobs`` is (thread count changes float reduction order),
#: and no oversubscription (2 threads on tiny ops on a busy 2-core machine made B10
#: run 10x slower: 106 s CPU instead of 12 s).
THREADS_PER_EXPERIMENT = 1


@dataclasses.dataclass
class RunRecord:
    """What one run of one experiment produced; plain data, safe to pickle and to JSON.

    Attributes:
        id, title, claim, chapter: from the claim's row (via the registration).
        source: ``file:line`` of the experiment function.
        size, seed: how it was run.
        status: ``"pass"``, ``"fail"``, ``"error"`` (it raised, or its result is no
            verdict: ``passed`` not a bool, a pass beside a NaN or ±inf in ``measured``,
            or a pass with an empty ``measured``) or ``"missing-extra"``.
        measured: the numbers that decided the check.
        key_figure: one line for the summary table.
        notes: what the check means.
        tables: the result tables.
        figures: PNG paths relative to the output folder (``figures/<id>--<stem>.png``).
        runtime_s: wall time of the experiment function (figure saving excluded).
        error: the traceback (or the missing-extra message) when it did not finish.
        missing: import names of optional extras that are not installed.
        threads: torch intra-op threads of the process that ran it.
    """

    id: str
    title: str
    claim: str
    chapter: str
    size: str
    seed: int
    status: str
    measured: dict[str, Any] = dataclasses.field(default_factory=dict)
    key_figure: str = ""
    notes: str = ""
    tables: list[Table] = dataclasses.field(default_factory=list)
    figures: list[str] = dataclasses.field(default_factory=list)
    runtime_s: float = 0.0
    error: str | None = None
    missing: list[str] = dataclasses.field(default_factory=list)
    threads: int = 1
    source: str = ""

    @property
    def passed(self) -> bool:
        """True only when the experiment ran and its check passed."""
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tables as ``{"title", "columns", "rows"}``)."""
        out = dataclasses.asdict(self)
        out["passed"] = self.passed
        out["tables"] = [
            {"title": t.title, "columns": t.columns, "rows": jsonable(t.rows)} for t in self.tables
        ]
        out["measured"] = jsonable(self.measured)
        return out


def _missing_message(missing: Sequence[str]) -> str:
    extras = sorted({EXTRAS[m] for m in missing if m in EXTRAS})
    hint = (
        f"pip install -e '.[{','.join(extras)}]'"
        if extras
        else "install the package(s) that provide them"
    )
    return f"needs the optional package(s) {', '.join(missing)}, not installed here; {hint}"


def _seed_everything(seed: int) -> None:
    # Experiments seed their own generators explicitly; this also pins anything that
    # reaches for a global RNG (module initialisers, say), so a run is repeatable.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _figure_names(stems: Iterable[Any]) -> list[str]:
    """A distinct file-safe name per figure stem, in order.

    Stems that differ only in characters a file name drops (``"a b"``, ``"a/b"``,
    ``"a-b"``) would all be saved as ``a-b.png``: each save would overwrite the one
    before, and the page would show the last figure under every caption. A repeat gets
    ``-2``, ``-3``, ... instead (stop 38).

    Example:
        >>> _figure_names(["a b", "a/b", "a-b", "é", ""])
        ['a-b', 'a-b-2', 'a-b-3', 'figure', 'figure-2']
    """
    names: list[str] = []
    for stem in stems:
        safe = re.sub(r"[^A-Za-z0-9_-]+", "-", str(stem)).strip("-") or "figure"
        name, n = safe, 1
        while name in names:
            n += 1
            name = f"{safe}-{n}"
        names.append(name)
    return names


def _save_figures(figures: dict[str, Any], exp_id: str, out_dir: pathlib.Path | None) -> list[str]:
    paths: list[str] = []
    try:
        for safe, fig in zip(_figure_names(figures), figures.values(), strict=True):
            if out_dir is not None:
                rel = f"{FIGURES_DIR}/{exp_id}--{safe}.png"
                (out_dir / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
                paths.append(rel)
                fig.savefig(out_dir / rel, dpi=100, bbox_inches="tight")
    except Exception:
        # The run reports no figures, so none may stay: one left behind would be in no
        # manifest, and the next run into the folder refused it as a user's file (stop 38).
        for rel in paths:
            if out_dir is not None:
                (out_dir / rel).unlink(missing_ok=True)
        raise
    finally:
        # a pyplot figure stays registered until closed, saved or not: one left open by a
        # failed save stayed pyplot's current figure for the next experiment (stop 55)
        if "matplotlib.pyplot" in sys.modules:
            for fig in figures.values():
                with contextlib.suppress(Exception):
                    sys.modules["matplotlib.pyplot"].close(fig)
    return paths


def run_experiment(
    id: str,
    size: str = "quick",
    seed: int = 0,
    out_dir: str | pathlib.Path | None = None,
) -> RunRecord:
    """Run the experiment registered as ``id`` and capture everything it produced.

    Args:
        id: a registered experiment id.
        size: ``"quick"`` or ``"report"``.
        seed: the seed passed to the experiment (and to the global RNGs): an integer
            in ``0..2**32 - 1`` (a NumPy integer is taken as its int).
        out_dir: folder to save figures in (under ``figures/``); None to discard them.
            It is checked first (:func:`tying.experiments.output.claim_folder`): a
            folder holding files tying did not write is refused before anything runs.

    Returns:
        A :class:`RunRecord`; an exception raised by the experiment is captured in
        ``error`` with status ``"error"``, never propagated.

    Raises:
        KeyError: when ``id`` is not registered (naming the closest id).
        ValueError: when ``size`` is not one of the sizes, or ``seed`` is out of range.
        TypeError: when ``seed`` is not an integer, or ``id`` is not a str (a list of
            ids is named with :func:`run_many`).
        OutputFolderError: when ``out_dir`` cannot be used (see above).
    """
    check_size(size)
    seed = check_seed(seed)
    if not isinstance(id, str):  # a list said "unhashable type: 'list'", a tuple an unknown id
        several = isinstance(id, list | tuple | set | frozenset)
        raise TypeError(
            f"run_experiment() takes one experiment id (a str), got {id!r} "
            f"({type(id).__name__})"
            + (f"; run several with run_many({list(id)!r})" if several else "")
        )
    load_all()
    get(id)
    if out_dir is None:
        return _run(id, size, seed, None)
    out_dir = out_path(out_dir)  # bytes: claimed, then "argument should be a str" (stop 60)
    with folder_lock(out_dir):  # no other run writes there meanwhile (stop 54)
        claim_folder(out_dir, [id], fresh=False)
        record = _run(id, size, seed, out_dir)
        record_files(out_dir, record.figures)
    return record


def _run(
    id: str,
    size: str = "quick",
    seed: int = 0,
    out_dir: str | pathlib.Path | None = None,
) -> RunRecord:
    """:func:`run_experiment` without the folder check, on :data:`THREADS_PER_EXPERIMENT`
    torch threads and torch's fresh-process defaults (see :func:`_fresh_torch`); the
    caller's settings are restored afterwards."""
    before, cwd = torch.get_num_threads(), os.getcwd()
    torch.set_num_threads(THREADS_PER_EXPERIMENT)
    try:
        with _fresh_torch():
            return _run_here(id, size, seed, out_dir)
    finally:
        torch.set_num_threads(before)
        # an os.chdir() inside moved a relative --out (the default, "report"): the page
        # and the later figures went to another folder than the one checked (stop 38)
        os.chdir(cwd)


@contextlib.contextmanager
def _fresh_torch() -> Iterator[None]:
    """Run under a fresh process's torch defaults; restore the caller's afterwards.

    An experiment that sets ``torch.set_default_dtype(torch.float64)`` or turns grad
    mode off changed every experiment after it in the same process (``--jobs 1``) but
    not those in other workers, so a seed gave other numbers with ``--jobs 2``; and
    the change leaked to the caller (stop 38). Each run now starts from float32 and
    grad mode on, whatever ran before or the caller set, and NumPy's error state and
    torch's default dtype, grad mode and deterministic-algorithms flag are put back.
    """
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = _warn_only()
    np_err = np.geterr()
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        if (torch.are_deterministic_algorithms_enabled(), _warn_only()) != (
            deterministic,
            warn_only,
        ) or _inductor_deterministic() not in (None, deterministic):
            # only when changed: the call imports torch._inductor, 2-4 s in a fresh worker,
            # paid after its first experiment (it timed out a 0.3 s one under --timeout 1)
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        np.seterr(**np_err)


def _warn_only() -> bool:
    return torch.is_deterministic_algorithms_warn_only_enabled()


def _inductor_deterministic() -> bool | None:
    """torch._inductor.config.deterministic if inductor was imported (the flag that
    use_deterministic_algorithms also sets), else None: importing it costs 2-4 s."""
    config = sys.modules.get("torch._inductor.config")
    return None if config is None else bool(config.deterministic)


def _run_here(id: str, size: str, seed: int, out_dir: str | pathlib.Path | None) -> RunRecord:
    check_size(size)
    load_all()
    spec = get(id)
    out = pathlib.Path(out_dir) if out_dir is not None else None
    record = RunRecord(
        id=spec.id,
        title=spec.title,
        claim=spec.claim,
        chapter=spec.chapter,
        size=size,
        seed=seed,
        status="error",
        threads=torch.get_num_threads(),
        source=spec.source,
    )
    missing = [name for name in spec.requires if importlib.util.find_spec(name) is None]
    if missing:
        record.status, record.missing = "missing-extra", missing
        record.error = _missing_message(missing)
        log.warning("%s: %s", id, record.error)
        return record

    _seed_everything(seed)
    log.info("%s: running at size %s, seed %d", id, size, seed)
    t0 = time.perf_counter()
    try:
        result = spec.fn(size, seed)
        if not isinstance(result, Result):
            raise TypeError(
                f"experiment {id!r} returned {type(result).__name__}, expected a Result"
            )
    except ModuleNotFoundError as exc:
        record.error = traceback.format_exc()
        if (exc.name or "").split(".")[0] != "tying":  # ours missing is a bug, not an extra
            record.status, record.missing = "missing-extra", [exc.name or str(exc)]
            record.error = _missing_message(record.missing) + "\n\n" + record.error
    except (Exception, SystemExit):  # sys.exit() inside ended `tying report` with no page
        record.error = traceback.format_exc()
    record.runtime_s = time.perf_counter() - t0
    if record.error is not None:
        log.error("%s did not finish:\n%s", id, record.error)
        return record

    try:  # a value the record cannot hold is this run's error, never the caller's crash
        problem = verdict_problem(id, result)
        record.measured = jsonable(result.measured)
        # None is no text: the summary row read "None" beside the verdict (stop 62)
        record.key_figure = "" if result.key_figure is None else str(result.key_figure)
        record.notes = "" if result.notes is None else str(result.notes)
        record.tables = [_table(t) for t in result.tables]
    except Exception:
        record.error = (
            f"experiment {id!r} returned a Result the report cannot record (measured must "
            "be a dict of numbers, arrays or words; tables a list of Table):\n"
            + traceback.format_exc()
        )
        log.error("%s: %s", id, record.error)
        return record
    try:
        record.figures = _save_figures(result.figures, spec.id, out)
    except Exception:
        record.error = "saving a figure failed:\n" + traceback.format_exc()
        log.error("%s: %s", id, record.error)
        return record
    if problem is not None:  # status stays "error": no verdict is reported
        record.error = problem
        log.error("%s: %s", id, problem)
        return record
    record.status = "pass" if result.passed else "fail"
    log.info("%s: %s in %.2f s", id, record.status.upper(), record.runtime_s)
    return record


def _table(table: Table) -> Table:
    """A result table as plain data; every row must be a dict (the page reads its keys)."""
    rows = jsonable(list(table.rows))
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(
                f"table {table.title!r}: row {i} is {type(table.rows[i]).__name__}, expected "
                "a dict of column -> value"
            )
    return Table(str(table.title), rows)


#: Modules a worker imports after :func:`load_all` (tests register fake experiments
#: through it: a worker process does not see registrations made in the caller).
_WORKER_IMPORTS: tuple[str, ...] = ()
#: In a worker: the queue on which it says which experiment it starts (see :func:`_run_said`).
_STARTED: Any = None


def _init_worker(
    parent: int | None = None,
    started: Any = None,
    imports: tuple[str, ...] = (),
    log_level: int | None = None,
) -> None:
    global _STARTED
    # the caller's level (`tying -v`): a fresh worker's root logger shows warnings only,
    # so `tying -v run ID --timeout N` printed none of the experiment's INFO lines
    if log_level is not None and not logging.getLogger().handlers:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    # One intra-op thread per worker: `--jobs N` processes share the machine's cores.
    torch.set_num_threads(THREADS_PER_EXPERIMENT)
    if parent is not None:
        _exit_with(parent)
    import matplotlib

    matplotlib.use("Agg")
    load_all()
    for name in imports:
        importlib.import_module(name)
    _STARTED = started


def _run_said(id: str, size: str, seed: int, out_dir: str | pathlib.Path | None) -> RunRecord:
    """:func:`_run` in a worker, first telling the caller that ``id`` starts now.

    A timeout counts from this moment, not from the submit: a fresh worker spends
    seconds importing torch and the experiments before it takes its first task.
    """
    if _STARTED is not None:
        _STARTED.put(id)
    return _run(id, size, seed, out_dir)


def _exit_with(parent: int, every_s: float = 0.5) -> None:
    """End this worker soon after the process that started the pool is gone.

    A ``tying report`` stopped with SIGTERM or ``kill -9`` left its workers running
    their experiments to the end, minutes of CPU for a report nobody would see (the
    forkserver's children do not die with the caller). A daemon thread looks every
    ``every_s`` seconds whether ``parent`` still lives and ends the process if not.
    """
    import threading

    def watch() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.kill(parent, 0)
            # gone, or its pid taken by another user's process
            except (ProcessLookupError, PermissionError):
                os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="tying-parent-watch", daemon=True).start()


# the exit status of a worker that ended because its caller was gone
EXIT_PARENT_GONE = 143


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Stop the pool's worker processes now, not after their experiments end."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14 and later
        pool.terminate_workers()
        return
    # the pool's own list (private, so read with care): shutdown() empties it
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + 2.0
    for proc in procs:
        _wait_ended(proc, deadline)
    for proc in procs:  # SIGTERM ignored (a disposition the worker inherited) or stuck
        with contextlib.suppress(Exception):
            if proc.is_alive():
                proc.kill()
                _wait_ended(proc, time.monotonic() + 5.0)


def _wait_ended(proc, deadline: float) -> None:
    """Wait until ``proc`` reads as ended, or ``deadline`` (``time.monotonic``) passes.

    The pool's own thread joins its workers too; when it reaps one first, this thread's
    ``join`` returns at once and ``is_alive()`` reads True until that thread records the
    exit code, which it can do only once this one lets go of the GIL (the fresh-clone CI
    saw a stopped worker read as alive, stop 53): so poll, sleeping between looks.
    """
    with contextlib.suppress(Exception):
        while proc.is_alive() and time.monotonic() < deadline:
            proc.join(0.05)
            time.sleep(0.005)


def _error_record(id: str, size: str, seed: int, **fields: Any) -> RunRecord:
    """An ``"error"`` record of ``id`` that no run of it produced (its worker crashed, or
    was stopped at the timeout)."""
    spec = get(id)
    return RunRecord(
        id=spec.id,
        title=spec.title,
        claim=spec.claim,
        chapter=spec.chapter,
        size=size,
        seed=seed,
        status="error",
        source=spec.source,
        **fields,
    )


def _crashed_record(id: str, size: str, seed: int, exc: BaseException) -> RunRecord:
    return _error_record(
        id,
        size,
        seed,
        error="the worker process running it failed:\n"
        + "".join(traceback.format_exception(exc))
        + (_BROKEN_HINT if isinstance(exc, cf.process.BrokenProcessPool) else ""),
    )


# Python's own advice for worker processes, which import the caller's main module.
_BROKEN_HINT = (
    "\nA worker process died (out of memory, a crash, or killed). If run_many(jobs > 1) "
    "was called from a script, the workers import that script again: put the call under "
    '`if __name__ == "__main__":`, or pass jobs=1.'
)


def _mp_context() -> multiprocessing.context.BaseContext:
    # forkserver (never fork: torch's thread pools do not survive it); the server imports
    # torch and the experiments once, so a worker forked from it starts with them (each
    # worker imported them itself: ~4.5 s of CPU per worker, per pool)
    return pool_context(["tying.experiments._worker_preload"])


def run_many(
    ids: Iterable[str],
    size: str = "quick",
    seed: int = 0,
    out_dir: str | pathlib.Path | None = None,
    jobs: int = 1,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[RunRecord], None] | None = None,
    timeout: float | None = None,
) -> list[RunRecord]:
    """Run several experiments, in this process or in ``jobs`` worker processes.

    Args:
        ids: registered experiment ids (validated before anything runs).
        size, seed, out_dir: as for :func:`run_experiment`.
        jobs: the most worker processes; 1 runs everything in this process
            (:func:`workers_used` says how many run). Workers fork from one fork
            server per process, which imports torch and the experiments once (a
            second call starts its workers in well under a second) and stays until
            this process ends (about 330 MB resident: mind it in a long-lived
            notebook kernel).
        on_start: called with an id when its experiment starts.
        on_done: called with each record as it finishes.
        timeout: seconds one experiment may run (from when it starts in its worker),
            or None for no limit. With a limit every experiment runs in a worker
            process, ``jobs=1`` too (a hung experiment in this process could not be
            stopped): one that runs longer gets status ``"error"`` with the error
            ``"timed out after N s"``, the others go on. Its worker is stopped once the
            experiments running beside it have finished, and the rest of the queue
            runs in fresh workers; no other process is touched.

    Returns:
        The records, in the order of ``ids``.

    Raises:
        KeyError: for an unknown id; ValueError: for a bad size or seed, ``jobs < 1``,
        a ``timeout`` that is not a positive finite number, or an id given twice;
        TypeError: for a seed or timeout that is not a number, or ``ids`` given as one
        string (a list of ids is expected);
        OutputFolderError: when ``out_dir`` holds files tying did not write (checked
        before anything runs; see :mod:`tying.experiments.output`).

    Example:
        >>> [r.status for r in run_many(["param-counts", "rnn-unrolled"])]
        ['pass', 'pass']
    """
    check_size(size)
    seed = check_seed(seed)
    if isinstance(ids, str | bytes):  # it iterates its letters: "unknown id 'p'" (stop 59)
        one = ids.decode(errors="replace") if isinstance(ids, bytes) else ids  # ids are str
        raise TypeError(
            f"run_many() takes a list of experiment ids, got the string {ids!r}; pass "
            f"[{one!r}] (or run_experiment({one!r}) for one)"
        )
    load_all()
    ids = list(ids)
    for id in ids:
        get(id)
    twice = sorted({id for id in ids if ids.count(id) > 1})
    if twice:
        # one record per id: a repeat would be counted twice ("2 of 2 claims passed" for
        # one claim) and, in workers, two runs would write the same figure at once
        raise ValueError(
            f"run_many() got the id(s) {', '.join(map(repr, twice))} more than once; "
            "each experiment runs once per call: pass each id once "
            "(list(dict.fromkeys(ids)) keeps the first of each)"
        )
    if isinstance(jobs, bool | np.bool_) or not isinstance(jobs, int | np.integer) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    jobs = int(jobs)  # np.int64(2), as write_report and seed take it (stop 60)
    timeout = check_timeout(timeout)
    if out_dir is None:
        return _run_all(ids, size, seed, None, jobs, on_start, on_done, timeout)
    out_dir = out_path(out_dir)  # bytes: claimed, then "argument should be a str" (stop 60)
    with folder_lock(out_dir):  # no other run writes there meanwhile (stop 54)
        claim_folder(out_dir, ids, fresh=False)  # once, here: workers write only these
        records = _run_all(ids, size, seed, out_dir, jobs, on_start, on_done, timeout)
        record_files(out_dir, [f for r in records for f in r.figures])
    return records


def workers_used(jobs: int, n: int) -> int:
    """How many experiments :func:`run_many` runs at once for ``jobs`` and ``n`` ids.

    ``jobs`` is an upper bound: one experiment (or ``jobs=1``) runs in this process,
    and never more worker processes start than there are experiments. The report's
    header states this number, not the ``--jobs`` asked for (stop 54).

    Args:
        jobs: the ``jobs`` given to :func:`run_many` (>= 1).
        n: the number of experiment ids.

    Returns:
        The number of experiments running side by side: ``1`` or ``min(jobs, n)``.

    Example:
        >>> workers_used(8, 3), workers_used(8, 1), workers_used(1, 41)
        (3, 1, 1)
    """
    return 1 if jobs == 1 or n <= 1 else min(jobs, n)


def check_timeout(timeout: Any) -> float | None:
    """``timeout`` as seconds (a float), or None for no limit.

    Args:
        timeout: None, or a positive finite real number of seconds.

    Returns:
        The timeout as a float, or None.

    Raises:
        TypeError: for a bool or anything that is not a real number.
        ValueError: for zero, a negative number, NaN or infinity.

    Example:
        >>> check_timeout(90), check_timeout(None)
        (90.0, None)
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"timeout must be a number of seconds or None, got {timeout!r} "
            f"({type(timeout).__name__}); pass e.g. timeout=600, or None for no limit"
        )
    value = float(timeout)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"timeout must be a positive, finite number of seconds, got {timeout!r}; pass "
            "e.g. timeout=600, or None for no limit"
        )
    return value


def _seconds(timeout: float) -> str:
    """``90.0`` -> ``"90"``, ``0.5`` -> ``"0.5"``, ``1234567.0`` -> ``"1,234,567"``, the
    timeout given (``:g`` printed 1234567 as ``1.23457e+06``, 1234570 s; stop 61)."""
    from tying.report.format import format_number  # tying.report imports this module

    return format_number(timeout, 15)


def _timed_out_record(id: str, size: str, seed: int, timeout: float) -> RunRecord:
    spec = get(id)
    return _error_record(
        id,
        size,
        seed,
        key_figure=f"timed out after {_seconds(timeout)} s",
        runtime_s=timeout,
        error=(
            f"timed out after {_seconds(timeout)} s (the per-experiment timeout): the "
            "experiment did not finish and its worker process is stopped, so it has no "
            "verdict. It may hang, or need longer at this size: run it alone with "
            f"`tying -v run {spec.id} --size {size} --seed {seed}` to see where it spends "
            "its time, or raise --timeout"
        ),
    )


def _run_all(ids, size, seed, out_dir, jobs, on_start, on_done, timeout=None) -> list[RunRecord]:
    on_start = on_start or (lambda _id: None)
    on_done = on_done or (lambda _rec: None)
    records: dict[str, RunRecord] = {}

    if timeout is None and (jobs == 1 or len(ids) <= 1):
        for id in ids:
            on_start(id)
            records[id] = _run(id, size, seed, out_dir)
            on_done(records[id])
        return [records[id] for id in ids]

    queue = list(ids)
    # never more worker processes than experiments; with a timeout, jobs=1 runs in one
    # worker: an experiment that hangs in this process could not be stopped
    jobs = min(jobs, len(ids))
    context = _mp_context()

    def new_pool() -> tuple[cf.ProcessPoolExecutor, Any]:
        started = context.SimpleQueue() if timeout is not None else None
        pool = cf.ProcessPoolExecutor(
            jobs,
            mp_context=context,
            initializer=_init_worker,
            initargs=(
                os.getpid(),
                started,
                _WORKER_IMPORTS,
                logging.getLogger().getEffectiveLevel(),
            ),
        )
        return pool, started

    pool, started = new_pool()
    running: dict[cf.Future, str] = {}
    deadline: dict[str, float] = {}  # id -> time.monotonic() when its time is up
    hung: list[str] = []  # timed out; their workers are stopped once the others finish
    broken = False
    finished = False
    try:
        while queue or running:
            if (broken or hung) and not running:
                # A dead worker breaks the whole pool, and a hung one is stopped with its
                # pool (stopping one worker breaks the pool too): the rest of the queue
                # gets a new one. No experiment still running is stopped with it.
                if hung:
                    _stop_workers(pool)
                    _discard_figures(out_dir, hung, records)
                else:
                    pool.shutdown(wait=False, cancel_futures=True)
                hung, broken = [], False
                pool, started = new_pool()  # the queue is not empty: the loop goes on
            # Keep at most `jobs` in flight, so "started" means "running", not "queued".
            while queue and not broken and not hung and len(running) < jobs:
                id = queue.pop(0)
                running[pool.submit(_run_said, id, size, seed, out_dir)] = id
                on_start(id)
            wait_s = None if timeout is None else 0.1
            done, _ = cf.wait(running, timeout=wait_s, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                id = running.pop(fut)
                try:
                    records[id] = fut.result()
                except Exception as exc:  # the worker died (out of memory, a crash)
                    records[id] = _crashed_record(id, size, seed, exc)
                    broken = broken or isinstance(exc, cf.process.BrokenProcessPool)
                on_done(records[id])
            if timeout is None:
                continue
            while not started.empty():  # the experiments that began in a worker
                deadline[started.get()] = time.monotonic() + timeout
            now = time.monotonic()
            for fut, id in list(running.items()):
                if id in deadline and now >= deadline[id] and not fut.done():
                    del running[fut]
                    records[id] = _timed_out_record(id, size, seed, timeout)
                    hung.append(id)
                    log.error("%s: %s", id, records[id].error)
                    on_done(records[id])
        finished = True
    finally:
        if finished and not hung:
            pool.shutdown(wait=True, cancel_futures=True)
        else:  # interrupted (Ctrl-C, SIGTERM), failed or hung: the running experiments stop too
            _stop_workers(pool)
            _discard_figures(out_dir, hung, records)
    return [records[id] for id in ids]


def _discard_figures(out_dir, hung: list[str], records: dict[str, RunRecord]) -> None:
    """Remove the figures a stopped, timed-out experiment may have begun writing."""
    if out_dir is None or not hung:
        return
    kept = {f for r in records.values() for f in r.figures}
    for id in hung:
        remove_unlisted_figures(out_dir, id, keep=kept)


def import_errors() -> dict[str, str]:
    """Experiment modules that failed to import, by module name (after :func:`load_all`)."""
    load_all()
    return dict(IMPORT_ERRORS)
