"""The experiment registry: one registered function per claim id in CLAIMS.md.

An experiment is a plain function ``fn(size: str, seed: int) -> Result``
registered with :func:`experiment` under its claim id, and nothing else: its
title, claim sentence and chapter come from the one table in
:mod:`tying.experiments.claims`. ``size`` is ``"quick"`` (seconds; tests and CI)
or ``"report"`` (the report's size; under a minute each on a 2-core machine).
The function builds its own data from ``seed`` and must be deterministic for a
given seed. The registry also records where the function lives (``file:line``),
which ``tying list`` and the report show.

Example:
    >>> from tying.experiments.registry import experiment, Result, Table, REGISTRY
    >>> @experiment("param-counts", register=False)
    ... def demo(size: str, seed: int) -> Result:
    ...     value = 1 + 1
    ...     return Result(
    ...         tables=[Table("sum", rows=[{"a": 1, "b": 1, "a+b": value}])],
    ...         passed=value == 2,
    ...         measured={"a+b": value},
    ...         key_figure=f"a+b = {value}",
    ...     )
    >>> demo.spec.id, demo.spec.chapter, demo("quick", 0).passed
    ('param-counts', '003', True)
    >>> demo.spec.source.startswith("<doctest")  # where it was defined: here, a doctest
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import operator
import pathlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from tying.experiments.claims import CLAIMS, EXTRA_CLAIMS, Claim, claim_for

SIZES = ("quick", "report")

#: Seeds reach numpy (which takes 0 .. 2**32 - 1 for its global RNG) and torch
#: generators, after experiments derive more seeds from them (``seed * 1000 + i``).
MAX_SEED = 2**32 - 1


@dataclasses.dataclass
class Table:
    """A table of results: a title and rows of named values (one dict per row)."""

    title: str
    rows: list[dict[str, Any]]

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            for key in row:
                if key not in cols:
                    cols.append(key)
        return cols


@dataclasses.dataclass
class Result:
    """What an experiment returns.

    Args:
        tables: tables of measured values.
        figures: matplotlib figures, by file stem (saved as PNG by the runner).
        passed: the claim's check, decided by ``measured``.
        measured: the numbers that decided ``passed`` (shown beside PASS/FAIL).
        key_figure: one short line for the report's summary table.
        notes: free text shown under the claim (what the check means).
        seed: filled in by the runner.
    """

    tables: list[Table] = dataclasses.field(default_factory=list)
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    passed: bool = False
    measured: dict[str, Any] = dataclasses.field(default_factory=dict)
    key_figure: str = ""
    notes: str = ""
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """Registration data of one experiment: its claim's row, its function, where it lives.

    Attributes:
        id, title, claim, chapter: from the claim's row in :data:`~tying.experiments.claims.CLAIMS`.
        fn: the experiment function.
        requires: import names of optional extras it needs.
        source: ``file:line`` of the function's definition, the file relative to the
            folder holding the ``tying`` package (``tying/experiments/principles.py:45``).
    """

    id: str
    title: str
    claim: str
    chapter: str
    fn: Callable[[str, int], Result]
    requires: tuple[str, ...] = ()
    source: str = ""


REGISTRY: dict[str, ExperimentSpec] = {}


def _source(fn: Callable) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return "<unknown>"
    path = pathlib.Path(code.co_filename)
    root = pathlib.Path(__file__).resolve().parents[2]  # the folder holding tying/
    try:
        path = path.resolve().relative_to(root)
    except (OSError, ValueError):  # defined elsewhere (a test, a doctest)
        pass
    return f"{path.as_posix()}:{code.co_firstlineno}"


def experiment(
    id: str,
    *,
    requires: tuple[str, ...] = (),
    register: bool = True,
    **legacy: Any,
) -> Callable[[Callable[[str, int], Result]], Callable[[str, int], Result]]:
    """Register ``fn(size, seed) -> Result`` under the claim id ``id``.

    Args:
        id: the claim id from CLAIMS.md, e.g. ``"param-counts"``; its title, sentence
            and chapter are read from :data:`tying.experiments.claims.CLAIMS`.
        requires: optional import names the experiment needs (e.g. ``("rdkit",)``);
            the runner reports a clear error naming the extra when one is missing.
        register: False to build the spec without adding it to the registry.

    Returns:
        A decorator that returns the function unchanged, with ``fn.spec`` set.

    Raises:
        KeyError: when ``id`` has no row in the claims table (naming the closest id
            and where to add the row).
        TypeError: when given ``title=``, ``claim=`` or ``seed_file=`` (they live in the table).
        ValueError: when ``id`` is already registered by another function.
    """
    if legacy:
        raise TypeError(
            f"@experiment({id!r}) takes the claim id only, got {', '.join(sorted(legacy))}=: "
            "the title, claim sentence and chapter live in one table, "
            "tying/experiments/claims.py (a Claim row kept in step with CLAIMS.md); "
            f"write @experiment({id!r}) and add or edit that row"
        )
    row = claim_for(id)
    if row is None:
        close = difflib.get_close_matches(id, [c.id for c in CLAIMS], n=1, cutoff=0.6)
        hint = f" (closest: {close[0]!r})" if close else ""
        raise KeyError(
            f"experiment id {id!r} is not a claim id in tying/experiments/claims.py{hint}; "
            "add a Claim row for it there (and to CLAIMS.md), or fix the id"
        )

    def deco(fn: Callable[[str, int], Result]) -> Callable[[str, int], Result]:
        spec = ExperimentSpec(
            row.id, row.title, row.claim, row.chapter, fn, tuple(requires), _source(fn)
        )
        if register:
            if id in REGISTRY and REGISTRY[id].fn is not fn:
                raise ValueError(
                    f"experiment id {id!r} is registered twice: {REGISTRY[id].source} and "
                    f"{spec.source}; one claim, one experiment"
                )
            REGISTRY[id] = spec
        fn.spec = spec  # type: ignore[attr-defined]
        return fn

    return deco


def get(id: str) -> ExperimentSpec:
    """Return the spec registered under ``id``.

    Raises:
        KeyError: naming the closest valid id (however far it is); for a claim's id
            with no experiment registered, saying why instead: the module that declares
            it failed to import (named, with its error), or it is not yet implemented;
            for a claim's number (``"A1"``), naming that claim's experiment id.
    """
    if isinstance(id, str) and not id.strip():  # "did you mean 'translation-equivariance'?"
        raise KeyError(
            f"experiment id {id!r} is empty: most likely an unset variable (`tying run "
            "\"$ID\"`); give an id such as 'param-counts' (`tying list` shows them all)"
        )
    if id not in REGISTRY:
        row = claim_for(id)
        if row is not None:  # a claim's id: "unknown", and a guess at another id, misled
            module = failed_module(id)
            if module is not None:
                from tying.experiments import IMPORT_ERRORS  # the package imports this module

                last = (IMPORT_ERRORS[module].strip().splitlines() or ["(no message)"])[-1]
                why = (
                    f"its module tying.experiments.{module} failed to import ({last}); "
                    "fix that import (`tying list` shows the error)"
                )
            else:
                why = "it is not yet implemented (`tying list` shows which claims are)"
            raise KeyError(f"claim {row.code or id} ({id!r}) has no experiment here: {why}")
        numbered = _numbered(id)
        if numbered is not None:  # the closest spelling of "A1" is a guess at another claim
            raise KeyError(
                f"{id!r} is the number of claim {numbered.code} in CLAIMS.md, not an "
                f"experiment id; its experiment id is {numbered.id!r}: pass {numbered.id!r} "
                "(`tying run`, `tying report --only` take the number too)"
            )
        spelt = _spelt_otherwise(id)
        if spelt is not None:  # 'PARAM-COUNTS' was "did you mean 'dp-sgd'?" (stop 60)
            raise KeyError(
                f"unknown experiment id {id!r}: ids are lower-case, without spaces; "
                f"pass {spelt!r} (`tying list` shows them all)"
            )
        close = difflib.get_close_matches(id, list(REGISTRY), n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown experiment id {id!r}{hint} (`tying list` shows them all)")
    return REGISTRY[id]


def _spelt_otherwise(given: object) -> str | None:
    """The registered id that ``given`` spells in another case or with spaces around it
    (``"PARAM-COUNTS"``, ``" param-counts"``), or None."""
    if not isinstance(given, str):
        return None
    key = given.strip().lower()
    return next((known for known in REGISTRY if known.lower() == key), None)


def _numbered(given: object) -> Claim | None:
    """The claim whose CLAIMS.md number ``given`` is (``"A1"``, ``"b10"``, any case), or None."""
    if not isinstance(given, str):
        return None
    code = given.strip().upper()
    return next((c for c in (*CLAIMS, *EXTRA_CLAIMS) if c.code and c.code.upper() == code), None)


def failed_module(id: str) -> str | None:
    """The experiment module that registers ``id`` but failed to import, or None.

    A module that fails to import registers nothing, so its claims would read as
    unknown ids or "not yet implemented"; its source is read for ``@experiment("id"``
    to name the module instead (stop 54).

    Args:
        id: an experiment id.

    Returns:
        The module's name (``"hmm"``), when ``id`` is not registered and a module
        recorded in :data:`tying.experiments.IMPORT_ERRORS` declares it; else None.

    Example:
        >>> failed_module("param-counts") is None  # registered: nothing failed
        True
    """
    from tying.experiments import IMPORT_ERRORS  # the package imports this module

    if id in REGISTRY:
        return None
    pattern = re.compile(rf"""@experiment\(\s*["']{re.escape(id)}["']""")
    folder = pathlib.Path(__file__).parent
    for module in IMPORT_ERRORS:
        try:
            text = (folder / f"{module}.py").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if pattern.search(text):
            return module
    return None


def check_size(size: str) -> None:
    """Raise ValueError unless ``size`` is one of :data:`SIZES`."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")


def _integer(value: object) -> int | None:
    """``value`` as a Python int when it is one integer, else None.

    An int, a NumPy integer or a 0-d integer array or tensor is (``torch.tensor(3)`` was
    refused where ``np.int64(3)`` was taken, stop 61); a bool of any library, a float
    and a tensor of one element but more dimensions are not.
    """
    dtype = str(getattr(value, "dtype", ""))
    if isinstance(value, bool | np.bool_) or dtype in ("bool", "torch.bool"):
        return None
    if getattr(value, "ndim", 0) != 0:
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_seed(seed: int) -> int:
    """The seed as a Python int, after checking it is an integer in ``0..MAX_SEED``.

    The ``tying`` command takes the same range. A NumPy integer is accepted (it is
    an integer), and so is a 0-d integer array or tensor; a bool, float or string is
    not (``seed=1.5`` would be truncated, ``seed=True`` is a slip), and a negative seed
    is refused: experiments derive more seeds from it, which NumPy's generators refuse
    or wrap.

    Args:
        seed: the seed a run was asked for.

    Returns:
        ``int(seed)``.

    Raises:
        TypeError: when ``seed`` is not an integer.
        ValueError: when it lies outside ``0..MAX_SEED``.

    Example:
        >>> import torch
        >>> check_seed(np.int64(7)), check_seed(0), check_seed(torch.tensor(3))
        (7, 0, 3)
    """
    value = _integer(seed)
    if value is None:
        raise TypeError(
            f"seed must be an integer in 0..{MAX_SEED}, got {seed!r} ({type(seed).__name__}); "
            "pass an int such as seed=0"
        )
    if not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"seed must be an integer in 0..{MAX_SEED}, got {value}; "
            f"{'seeds are not negative' if value < 0 else 'pick a smaller seed'}"
        )
    return value
