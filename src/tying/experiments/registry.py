"""The experiment registry: one registered function per claim id in CLAIMS.md.

An experiment is a plain function ``fn(size: str, seed: int) -> Result``
registered with :func:`experiment`. ``size`` is ``"quick"`` (seconds; tests and
CI) or ``"report"`` (at most about a minute on a 2-core machine). The function
builds its own data from ``seed`` and must be deterministic for a given seed.

Example:
    >>> from tying.experiments.registry import experiment, Result, Table, REGISTRY
    >>> @experiment("demo-claim", title="Demo", claim="1 + 1 is 2.", seed_file="003",
    ...             register=False)
    ... def demo(size: str, seed: int) -> Result:
    ...     value = 1 + 1
    ...     return Result(
    ...         tables=[Table("sum", rows=[{"a": 1, "b": 1, "a+b": value}])],
    ...         passed=value == 2,
    ...         measured={"a+b": value},
    ...         key_figure=f"a+b = {value}",
    ...     )
    >>> demo.spec.id, demo("quick", 0).passed
    ('demo-claim', True)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

SIZES = ("quick", "report")


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
    """Registration data of one experiment."""

    id: str
    title: str
    claim: str
    seed_file: str
    fn: Callable[[str, int], Result]
    requires: tuple[str, ...] = ()


REGISTRY: dict[str, ExperimentSpec] = {}


def experiment(
    id: str,
    *,
    title: str,
    claim: str,
    seed_file: str,
    requires: tuple[str, ...] = (),
    register: bool = True,
) -> Callable[[Callable[[str, int], Result]], Callable[[str, int], Result]]:
    """Register ``fn(size, seed) -> Result`` under the claim id ``id``.

    Args:
        id: the claim id from CLAIMS.md, e.g. ``"param-counts"``.
        title: a short title.
        claim: the claim, in one sentence.
        seed_file: which seed chapter states it (``"000"`` … ``"004"``).
        requires: optional import names the experiment needs (e.g. ``("rdkit",)``);
            the runner reports a clear error naming the extra when one is missing.
        register: False to build the spec without adding it to the registry.

    Returns:
        A decorator that returns the function unchanged, with ``fn.spec`` set.

    Raises:
        ValueError: when ``id`` is already registered.
    """

    def deco(fn: Callable[[str, int], Result]) -> Callable[[str, int], Result]:
        spec = ExperimentSpec(id, title, claim, seed_file, fn, tuple(requires))
        if register:
            if id in REGISTRY and REGISTRY[id].fn is not fn:
                raise ValueError(f"experiment id {id!r} is registered twice")
            REGISTRY[id] = spec
        fn.spec = spec  # type: ignore[attr-defined]
        return fn

    return deco


def get(id: str) -> ExperimentSpec:
    """Return the spec registered under ``id``.

    Raises:
        KeyError: naming the closest valid id (however far it is).
    """
    if id not in REGISTRY:
        close = difflib.get_close_matches(id, list(REGISTRY), n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown experiment id {id!r}{hint} (`tying list` shows them all)")
    return REGISTRY[id]


def check_size(size: str) -> None:
    """Raise ValueError unless ``size`` is one of :data:`SIZES`."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
