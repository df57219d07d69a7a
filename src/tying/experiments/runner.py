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

import array
import concurrent.futures as cf
import contextlib
import dataclasses
import decimal
import importlib.util
import logging
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

from tying.experiments import IMPORT_ERRORS, load_all
from tying.experiments.output import claim_folder, folder_lock, record_files
from tying.experiments.registry import Result, Table, check_seed, check_size, get

__all__ = [
    "EXTRAS",
    "THREADS_PER_EXPERIMENT",
    "RunRecord",
    "jsonable",
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


def jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays (nested in dicts/lists) to plain Python.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` so the
    output is strict JSON. Anything else that holds numbers (an object with
    ``__array__``, an ``array.array``, a ``Decimal``) is read as its numbers, not as
    its ``repr``; any other object becomes its ``str``.

    Raises:
        ValueError: two keys of one dict read as the same text (``1`` and ``"1"``):
            one value would silently replace the other.

    Example:
        >>> jsonable({"a": np.float32(0.5), "b": [torch.tensor(3)], "c": float("inf")})
        {'a': 0.5, 'b': [3], 'c': 'inf'}
    """
    return _strict(_plain(value))


def _strict(value: Any) -> Any:
    """Plain data (:func:`_plain`) as strict JSON: non-finite floats spelt out, complex as text."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, complex):
        return str(value)
    return value


def _plain(value: Any) -> Any:
    """``value`` as nested dicts (str keys) and lists of bool, int, float, complex, str, None.

    The one reading of a measured value: what the page shows is what the NaN and inf
    checks of :func:`_verdict_problem` look at. A value read here as text (its ``repr``)
    was no number to those checks: an ``__array__`` object or an ``array.array``
    holding NaN passed as "pass" beside the text ``array('d', [nan])`` (stop 54).
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        given: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if key in out:
                raise ValueError(
                    f"the keys {given[key]!r} and {k!r} both read as {key!r} on the page and in "
                    "results.json, so one value would silently replace the other; give each "
                    "value its own key (as a string)"
                )
            out[key], given[key] = _plain(v), k
        return out
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):  # in a stable order, NaN kept as a number
        return _plain(sorted(value, key=repr))
    if isinstance(value, torch.Tensor):
        value = _tensor_numpy(value)
    elif isinstance(value, array.array | memoryview) or (
        hasattr(value, "__array__") and not isinstance(value, np.ndarray | np.generic)
    ):
        numbers_of = np.asarray(value)
        if numbers_of.dtype.kind == "O" and numbers_of.ndim == 0:  # no numbers: itself again
            return str(value)
        value = numbers_of
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | complex | str):
        return value
    if isinstance(value, numbers.Number):  # Decimal, Fraction, ...: its value, not its repr
        try:
            return (
                float(value)
                if isinstance(value, numbers.Real | decimal.Decimal)
                else complex(value)
            )
        except (TypeError, ValueError, ArithmeticError):  # Decimal("sNaN") will not convert
            return float("nan") if getattr(value, "is_nan", lambda: False)() else str(value)
    return str(value)


def _tensor_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a NumPy array, whatever its dtype, layout or device.

    ``Tensor.numpy()`` refuses bfloat16, float8 and complex32 (NumPy has no such
    dtype), conjugate views and sparse tensors; it raised out of the runner for a
    bfloat16 number in ``measured`` (stop 38). Those are widened exactly (bfloat16
    and float8 to float32, complex32 to complex64) or made dense first.

    Raises:
        ValueError: for a tensor on the meta device, which holds no values.
    """
    t = t.detach()
    if t.device.type == "meta":
        raise ValueError(
            f"a tensor on the meta device (shape {tuple(t.shape)}, {t.dtype}) holds no "
            "values to report; compute the number on a real device"
        )
    t = t.cpu()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.dtype == torch.complex32:
        t = t.to(torch.complex64)
    elif t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()  # bfloat16 and the float8 types: exact in float32
    return t.resolve_conj().resolve_neg().numpy()


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
            if "matplotlib.pyplot" in sys.modules:  # a pyplot figure stays registered until closed
                sys.modules["matplotlib.pyplot"].close(fig)
    except Exception:
        # The run reports no figures, so none may stay: one left behind would be in no
        # manifest, and the next run into the folder refused it as a user's file (stop 38).
        for rel in paths:
            if out_dir is not None:
                (out_dir / rel).unlink(missing_ok=True)
        raise
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
        TypeError: when ``seed`` is not an integer.
        OutputFolderError: when ``out_dir`` cannot be used (see above).
    """
    check_size(size)
    seed = check_seed(seed)
    load_all()
    get(id)
    if out_dir is None:
        return _run(id, size, seed, None)
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
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    np_err = np.geterr()
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        np.seterr(**np_err)


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
        problem = _verdict_problem(id, result)
        record.measured = jsonable(result.measured)
        record.key_figure = str(result.key_figure)
        record.notes = str(result.notes)
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


def _has_nan(value: Any) -> bool:
    """Whether a measured value (a number, array, tensor, or a list/dict of them) holds a NaN."""
    return _holds(value, np.isnan)


def _has_inf(value: Any) -> bool:
    """Whether a measured value (a number, array, tensor, or a list/dict of them) holds ±inf."""
    return _holds(value, np.isinf)


def _holds(value: Any, test: Callable[[Any], Any]) -> bool:
    if isinstance(value, np.ndarray) and value.dtype.kind in "fc":  # at NumPy's speed
        return bool(test(value).any())
    return _holds_plain(_plain(value), test)


def _holds_plain(value: Any, test: Callable[[Any], Any]) -> bool:
    if isinstance(value, dict):
        return any(_holds_plain(v, test) for v in value.values())
    if isinstance(value, list):
        return any(_holds_plain(v, test) for v in value)
    return isinstance(value, float | complex) and bool(test(value))


def _verdict_problem(id: str, result: Result) -> str | None:
    """Why ``result`` gives no verdict, or None when it does.

    ``passed`` must be a bool: ``bool()`` of a string, a float (NaN included) or a
    one-element array is True, and would report a pass no comparison made. A pass
    whose measured numbers hold a NaN did not use them: every comparison with NaN
    is False, so the NaN was dropped on the way (Python's ``max(0.0, nan)`` is 0.0)
    or never compared. A pass beside ±inf is no verdict either: ``inf > 3`` and
    ``x / inf < 0.5`` are True, so an overflow or a division by zero passes a check
    (stop 37). A pass with an empty ``measured`` shows no number that decided it
    (stop 54).
    """
    verdict = result.passed
    if not isinstance(verdict, bool | np.bool_):
        return (
            f"experiment {id!r} returned passed={verdict!r} ({type(verdict).__name__}); expected "
            "True or False, the outcome of its check's comparisons: fix the experiment so "
            "`passed` is a bool (its truth value is not a verdict)"
        )
    if verdict and isinstance(result.measured, dict) and not result.measured:
        return (
            f"experiment {id!r} reported a pass with no measured value (Result.measured is "
            "empty): a verdict the report cannot show the numbers of is not reported (a "
            "check that never ran reads the same). Put the numbers its check compared in "
            "Result(measured={...})"
        )
    nan = [str(k) for k, v in result.measured.items() if _has_nan(v)]
    if verdict and nan:
        return (
            f"experiment {id!r} reported a pass, but the measured value(s) "
            f"{', '.join(repr(k) for k in nan)} hold NaN: a comparison with NaN is always "
            "False, so its check cannot have used them, and a pass is not reported. Find "
            "where the NaN comes from (a diverged fit, a 0/0), or aggregate with "
            "tying.experiments.common.largest/smallest, which keep a NaN, not max/min"
        )
    inf = [str(k) for k, v in result.measured.items() if _has_inf(v)]
    if verdict and inf:
        return (
            f"experiment {id!r} reported a pass, but the measured value(s) "
            f"{', '.join(repr(k) for k in inf)} are infinite: an overflow, a division by "
            "zero or a diverged run passes any 'x > bound' (and 'bound > y / inf') check, so "
            "a pass beside one is not reported. Find where the inf comes from; an infinity "
            "that is the answer (ε of a run without noise) belongs in a table, or in "
            "measured as None or words, not as a number the check compared"
        )
    return None


def _init_worker(parent: int | None = None) -> None:
    # One intra-op thread per worker: `--jobs N` processes share the machine's cores.
    torch.set_num_threads(THREADS_PER_EXPERIMENT)
    if parent is not None:
        _exit_with(parent)
    import matplotlib

    matplotlib.use("Agg")
    load_all()


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


def _crashed_record(id: str, size: str, seed: int, exc: BaseException) -> RunRecord:
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
    # Never fork: torch's thread pools do not survive a fork of a process that used them.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_many(
    ids: Iterable[str],
    size: str = "quick",
    seed: int = 0,
    out_dir: str | pathlib.Path | None = None,
    jobs: int = 1,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[RunRecord], None] | None = None,
) -> list[RunRecord]:
    """Run several experiments, in this process or in ``jobs`` worker processes.

    Args:
        ids: registered experiment ids (validated before anything runs).
        size, seed, out_dir: as for :func:`run_experiment`.
        jobs: the most worker processes; 1 runs everything in this process
            (:func:`workers_used` says how many run).
        on_start: called with an id when its experiment starts.
        on_done: called with each record as it finishes.

    Returns:
        The records, in the order of ``ids``.

    Raises:
        KeyError: for an unknown id; ValueError: for a bad size or seed, ``jobs < 1``,
        or an id given twice; TypeError: for a seed that is not an integer;
        OutputFolderError: when ``out_dir`` holds files tying did not write (checked
        before anything runs; see :mod:`tying.experiments.output`).
    """
    check_size(size)
    seed = check_seed(seed)
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
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if out_dir is None:
        return _run_all(ids, size, seed, None, jobs, on_start, on_done)
    with folder_lock(out_dir):  # no other run writes there meanwhile (stop 54)
        claim_folder(out_dir, ids, fresh=False)  # once, here: workers write only these
        records = _run_all(ids, size, seed, out_dir, jobs, on_start, on_done)
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


def _run_all(ids, size, seed, out_dir, jobs, on_start, on_done) -> list[RunRecord]:
    on_start = on_start or (lambda _id: None)
    on_done = on_done or (lambda _rec: None)
    records: dict[str, RunRecord] = {}

    if jobs == 1 or len(ids) <= 1:
        for id in ids:
            on_start(id)
            records[id] = _run(id, size, seed, out_dir)
            on_done(records[id])
        return [records[id] for id in ids]

    queue = list(ids)
    jobs = workers_used(jobs, len(ids))  # never more worker processes than experiments
    start = {"mp_context": _mp_context(), "initializer": _init_worker, "initargs": (os.getpid(),)}
    pool = cf.ProcessPoolExecutor(jobs, **start)
    running: dict[cf.Future, str] = {}
    broken = False
    finished = False
    try:
        while queue or running:
            if broken and not running:
                # A dead worker breaks the whole pool; the rest of the queue gets a new one.
                pool.shutdown(wait=False, cancel_futures=True)
                pool = cf.ProcessPoolExecutor(jobs, **start)
                broken = False
            # Keep at most `jobs` in flight, so "started" means "running", not "queued".
            while queue and not broken and len(running) < jobs:
                id = queue.pop(0)
                running[pool.submit(_run, id, size, seed, out_dir)] = id
                on_start(id)
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                id = running.pop(fut)
                try:
                    records[id] = fut.result()
                except Exception as exc:  # the worker died (out of memory, a crash)
                    records[id] = _crashed_record(id, size, seed, exc)
                    broken = broken or isinstance(exc, cf.process.BrokenProcessPool)
                on_done(records[id])
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True, cancel_futures=True)
        else:  # interrupted (Ctrl-C, SIGTERM) or failed: the running experiments stop too
            _stop_workers(pool)
    return [records[id] for id in ids]


def import_errors() -> dict[str, str]:
    """Experiment modules that failed to import, by module name (after :func:`load_all`)."""
    load_all()
    return dict(IMPORT_ERRORS)
