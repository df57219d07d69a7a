"""NIST StRD nonlinear regression: read the certified problems, fit them, score by LRE.

NIST's Statistical Reference Datasets for nonlinear least squares are the
standard test of a least-squares code: 27 problems, two certified starting
points each, certified values, standard errors and residual sum of squares.
This module reads NIST's ``.dat`` files as published, gives each problem's
model in NumPy (Jacobian by finite differences) and torch (Jacobian by
autograd), and scores a fit by the log relative error
``LRE = -log10(|estimate - certified| / |certified|)`` (≥ 4 on every
parameter is the usual pass mark).

Nelson's model is ``log(y) = b1 - b2·x1·exp(-b3·x2)``: :func:`load` returns
``log(y)`` as its response and x as ``(n, 2)``.

Example:
    >>> import pathlib, tying.fit.nist as nist
    >>> text = '''
    ...   b1 =   500         250           2.3894212918E+02  2.7070075241E+00
    ...   b2 =     1.0E-04     5.0E-04     5.5015643181E-04  7.2668688436E-06
    ... Residual Sum of Squares:                    1.2455138894E-01
    ... Data:   y               x
    ...       10.07E0      77.6E0
    ...       14.73E0     114.9E0
    ...       17.94E0     141.1E0
    ... '''
    >>> p = nist.parse("Misra1a", text)
    >>> p.starts[1], float(p.certified[0]), p.x.tolist()
    ((250.0, 0.0005), 238.94212918, [77.6, 114.9, 141.1])
    >>> round(float(p.model("numpy")(p.x, b1=238.94212918, b2=5.5015643181e-4)[0]), 4)
    9.9863
    >>> nist.lre(1.0001, 1.0) > 3.9
    True
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import pathlib
import re
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from tying.fit.equality import ValueEquality

_NUMPY = types.SimpleNamespace(exp=np.exp, cos=np.cos, sin=np.sin, atan=np.arctan, pi=np.pi)


def _torch_ns() -> types.SimpleNamespace:
    import torch

    return types.SimpleNamespace(
        exp=torch.exp, cos=torch.cos, sin=torch.sin, atan=torch.atan, pi=math.pi
    )


def _enso(m, x, b1, b2, b3, b4, b5, b6, b7, b8, b9):
    w = 2 * m.pi * x
    return (
        b1
        + b2 * m.cos(w / 12)
        + b3 * m.sin(w / 12)
        + b5 * m.cos(w / b4)
        + b6 * m.sin(w / b4)
        + b8 * m.cos(w / b7)
        + b9 * m.sin(w / b7)
    )


def _gauss(m, x, b1, b2, b3, b4, b5, b6, b7, b8):
    return (
        b1 * m.exp(-b2 * x)
        + b3 * m.exp(-((x - b4) ** 2) / b5**2)
        + b6 * m.exp(-((x - b7) ** 2) / b8**2)
    )


def _rational33(m, x, b1, b2, b3, b4, b5, b6, b7):
    return (b1 + b2 * x + b3 * x**2 + b4 * x**3) / (1 + b5 * x + b6 * x**2 + b7 * x**3)


def _lanczos(m, x, b1, b2, b3, b4, b5, b6):
    return b1 * m.exp(-b2 * x) + b3 * m.exp(-b4 * x) + b5 * m.exp(-b6 * x)


def _chwirut(m, x, b1, b2, b3):
    return m.exp(-b1 * x) / (b2 + b3 * x)


def _misra1a(m, x, b1, b2):
    return b1 * (1 - m.exp(-b2 * x))


#: each problem's model ``f(namespace, x, b1, ..., bp)``, written once for NumPy and torch
MODELS: dict[str, Callable[..., Any]] = {
    "Bennett5": lambda m, x, b1, b2, b3: b1 * (b2 + x) ** (-1 / b3),
    "BoxBOD": _misra1a,
    "Chwirut1": _chwirut,
    "Chwirut2": _chwirut,
    "DanWood": lambda m, x, b1, b2: b1 * x**b2,
    "ENSO": _enso,
    "Eckerle4": lambda m, x, b1, b2, b3: (b1 / b2) * m.exp(-0.5 * ((x - b3) / b2) ** 2),
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "Gauss3": _gauss,
    "Hahn1": _rational33,
    "Kirby2": lambda m, x, b1, b2, b3, b4, b5: (b1 + b2 * x + b3 * x**2) / (1 + b4 * x + b5 * x**2),
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Lanczos3": _lanczos,
    "MGH09": lambda m, x, b1, b2, b3, b4: b1 * (x**2 + x * b2) / (x**2 + x * b3 + b4),
    "MGH10": lambda m, x, b1, b2, b3: b1 * m.exp(b2 / (x + b3)),
    "MGH17": lambda m, x, b1, b2, b3, b4, b5: b1 + b2 * m.exp(-x * b4) + b3 * m.exp(-x * b5),
    "Misra1a": _misra1a,
    "Misra1b": lambda m, x, b1, b2: b1 * (1 - (1 + b2 * x / 2) ** (-2)),
    "Misra1c": lambda m, x, b1, b2: b1 * (1 - (1 + 2 * b2 * x) ** (-0.5)),
    "Misra1d": lambda m, x, b1, b2: b1 * b2 * x * ((1 + b2 * x) ** (-1)),
    "Nelson": lambda m, x, b1, b2, b3: b1 - b2 * x[..., 0] * m.exp(-b3 * x[..., 1]),
    "Rat42": lambda m, x, b1, b2, b3: b1 / (1 + m.exp(b2 - b3 * x)),
    "Rat43": lambda m, x, b1, b2, b3, b4: b1 / ((1 + m.exp(b2 - b3 * x)) ** (1 / b4)),
    "Roszman1": lambda m, x, b1, b2, b3, b4: b1 - b2 * x - m.atan(b3 / (x - b4)) / m.pi,
    "Thurber": _rational33,
}

_PARAM = re.compile(r"^\s*b(\d+)\s*=\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")
_RSS = re.compile(r"Residual Sum of Squares:\s*(\S+)")
_N_OBS = re.compile(r"^Number of Observations:\s*(\d+)")


@dataclasses.dataclass(eq=False)  # == by value: equality.py
class Problem(ValueEquality):
    """One NIST StRD problem.

    Attributes:
        name: NIST's name, e.g. ``"MGH10"``.
        x: ``(n,)`` predictor (``(n, 2)`` for Nelson).
        y: ``(n,)`` response (``log(y)`` for Nelson).
        starts: the two certified starting points, each a tuple ``(b1, ..., bp)``.
        certified: certified values ``(p,)``.
        certified_stderr: certified standard errors ``(p,)``.
        certified_rss: certified residual sum of squares.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    starts: tuple[tuple[float, ...], tuple[float, ...]]
    certified: np.ndarray
    certified_stderr: np.ndarray
    certified_rss: float

    @property
    def param_names(self) -> list[str]:
        """``["b1", ..., "bp"]``."""
        return [f"b{i + 1}" for i in range(len(self.certified))]

    def init(self, start: int) -> dict[str, float]:
        """Certified start 1 or 2 as ``{"b1": ..., ...}``."""
        if start not in (1, 2):
            raise ValueError(
                f"{self.name}: start must be 1 or 2 (NIST's two starts), got {start!r}"
            )
        return dict(zip(self.param_names, self.starts[start - 1]))

    def model(self, backend: str = "numpy") -> Callable[..., Any]:
        """The model ``f(x, b1, ..., bp)`` written with NumPy or torch.

        Raises:
            ValueError: a backend other than ``"numpy"`` or ``"torch"``.
        """
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
        ns = _NUMPY if backend == "numpy" else _torch_ns()
        expr, names = MODELS[self.name], self.param_names

        def model(x, **params):
            return expr(ns, x, *(params[n] for n in names))

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        model.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("x", kind)] + [inspect.Parameter(n, kind) for n in names]
        )
        model.__name__ = f"{self.name}_{backend}"
        return model


def parse(name: str, text: str) -> Problem:
    """Read one problem from the text of NIST's ``.dat`` file.

    Args:
        name: the problem's name (a key of :data:`MODELS`).
        text: the file's content.

    Returns:
        The :class:`Problem`.

    Raises:
        ValueError: an unknown problem name, a file without parameters,
            residual sum of squares or data, a data block whose row count differs
            from its "Number of Observations", or parameter lines with a gap.
    """
    if name not in MODELS:
        raise ValueError(f"unknown NIST problem {name!r}; known: {sorted(MODELS)}")
    params: dict[int, tuple[float, ...]] = {}
    rss = n_obs = None
    rows: list[list[float]] = []
    in_data = False
    for line in text.splitlines():
        if in_data:
            if line.strip():
                rows.append([float(v) for v in line.split()])
            continue
        if (match := _PARAM.match(line)) is not None:
            params[int(match.group(1))] = tuple(float(match.group(i)) for i in range(2, 6))
        elif (match := _RSS.search(line)) is not None:
            rss = float(match.group(1))
        elif (match := _N_OBS.match(line)) is not None:
            n_obs = int(match.group(1))
        elif re.match(r"^Data:\s+y\b", line):
            in_data = True
    if not params or rss is None or not rows:
        raise ValueError(
            f"NIST file for {name!r}: expected parameter lines 'b1 = start1 start2 value "
            f"stderr', a 'Residual Sum of Squares' line and a 'Data:  y  x' block"
        )
    if n_obs is not None and len(rows) != n_obs:
        # a truncated or padded data block would fit other data against the certified values
        raise ValueError(
            f"NIST file for {name!r}: 'Number of Observations: {n_obs}' but the data block "
            f"has {len(rows)} row(s); restore the file from NIST StRD"
        )
    if sorted(params) != list(range(1, len(params) + 1)):
        raise ValueError(
            f"NIST file for {name!r}: parameter lines numbered {sorted(params)} do not run "
            f"b1 to b{len(params)} without gaps; restore the file from NIST StRD"
        )
    table = np.array(rows)
    values = np.array([params[i] for i in sorted(params)])  # (p, 4)
    y, x = table[:, 0], table[:, 1:]
    if name == "Nelson":
        y = np.log(y)
    else:
        x = x[:, 0]
    return Problem(
        name,
        x,
        y,
        (tuple(values[:, 0].tolist()), tuple(values[:, 1].tolist())),
        values[:, 2].copy(),
        values[:, 3].copy(),
        rss,
    )


def load(path: str | pathlib.Path) -> Problem:
    """Read one problem from NIST's ``.dat`` file (the name is the file's stem)."""
    path = pathlib.Path(path)
    return parse(path.stem, path.read_text())


def problems(directory: str | pathlib.Path) -> list[Problem]:
    """Every problem of :data:`MODELS` from ``directory/<name>.dat``, in name order.

    Raises:
        FileNotFoundError: a problem's file is missing (naming it).
    """
    directory = pathlib.Path(directory)
    out = []
    for name in sorted(MODELS):
        path = directory / f"{name}.dat"
        if not path.is_file():
            raise FileNotFoundError(
                f"NIST StRD file {path} is missing; expected all of {sorted(MODELS)}"
            )
        out.append(load(path))
    return out


def fit(problem: Problem, start: int, backend: str = "numpy", **kwargs: Any):
    """Fit one NIST problem from certified start 1 or 2 with :class:`~tying.fit.GlobalFit`.

    Args:
        problem: the :class:`Problem`.
        start: 1 or 2.
        backend: ``"numpy"`` (the NumPy model, finite differences; also passed
            as ``GlobalFit(backend=...)`` so that an arithmetic-only model is not
            taken for a torch one) or ``"torch"`` (the torch model, autograd).
        **kwargs: passed to :class:`~tying.fit.GlobalFit` (defaults otherwise).

    Returns:
        ``(result, value_lre, stderr_lre)``: the :class:`~tying.fit.FitResult`
        and the LRE of each parameter's value and standard error, ``(p,)`` each.
    """
    from tying.fit.global_fit import GlobalFit

    names = problem.param_names
    result = GlobalFit(
        problem.model(backend),
        [(problem.x, problem.y)],
        shared=names,
        init=problem.init(start),
        backend=backend,
        **kwargs,
    ).run()
    values = [result.values[n] for n in names]
    errors = [result.stderr[n] for n in names]
    return result, lre(values, problem.certified), lre(errors, problem.certified_stderr)


def fit_lmfit(problem: Problem, start: int, model: Any = None):
    """The same fit with lmfit's default (``leastsq``): the anchor of the NIST comparison.

    Args:
        problem: the :class:`Problem`.
        start: 1 or 2.
        model: the NumPy model to use (default ``problem.model("numpy")``; pass one
            built once when timing many fits).

    Returns:
        ``(result, value_lre, stderr_lre)`` as :func:`fit` does, with lmfit's
        ``MinimizerResult``; ``(None, 0, 0)`` when lmfit refuses a step where the
        model is NaN (a failed case).

    Raises:
        ImportError: when lmfit is not installed.
    """
    import warnings

    import lmfit

    model = problem.model("numpy") if model is None else model
    params = lmfit.Parameters()
    for name, value in problem.init(start).items():
        params.add(name, value=value)

    def residual(params):
        return model(problem.x, **params.valuesdict()) - problem.y

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            out = lmfit.minimize(residual, params)
        except ValueError:  # lmfit refuses a step where the model is NaN
            return None, 0.0, 0.0
    values = [out.params[n].value for n in problem.param_names]
    errors = [out.params[n].stderr or np.nan for n in problem.param_names]
    return out, lre(values, problem.certified), lre(errors, problem.certified_stderr)


def lre(estimate: Any, certified: Any) -> np.ndarray | float:
    """Log relative error ``-log10(|estimate - certified| / |certified|)``, capped at 15.

    Where the certified value is 0 the error is absolute, ``-log10(|estimate|)``
    (McCullough 1998, as the StRD comparisons score it): the relative error was 0/0 or
    x/0 there, and an exact 0 scored 0 digits, the worst score (stop 39). NaN estimates
    score 0.

    Example:
        >>> lre([1.0 + 1e-6, 0.0, 1e-9], [1.0, 0.0, 0.0]).round(6).tolist()
        [6.0, 15.0, 9.0]
    """
    est, cert = np.asarray(estimate, dtype=float), np.asarray(certified, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(est - cert) / np.where(cert == 0, 1.0, np.abs(cert))
        out = np.where(np.isfinite(rel), np.clip(-np.log10(rel), 0.0, 15.0), 0.0)
    return float(out) if out.ndim == 0 else out
