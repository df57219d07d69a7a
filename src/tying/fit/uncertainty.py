"""Prediction bands of a global fit (lmfit's ``ModelResult.eval_uncertainty``).

:func:`eval_uncertainty` gives the band of the model prediction of data set ``i`` at
new x, by the delta method ``√(J C Jᵀ)``: ``J`` is the derivative of the model at the
new x with respect to the data set's fitted parameters (shared, per-group and its own
local ones), ``C`` their covariance read from the full covariance of the global fit, so
the cross terms between shared and local parameters are in. ``sigma`` is turned into a
probability and scaled by Student's t with ``nfree`` degrees of freedom, as lmfit does,
with ``scale_covar`` True or False alike (stop 53: the normal quantile used with
``scale_covar=False`` made bands 1.4 % narrower than lmfit's at 37 degrees of freedom, and
narrower than the profile intervals, whose F-test is t² for one parameter).
:func:`predict` gives the model and its 1-σ standard error ``√(J C Jᵀ)`` alone.
Profile-likelihood intervals are in :mod:`tying.fit.profile`.

Both refuse a result that cannot carry them: not a success, no covariance
(``errorbars`` False) or no degree of freedom (``nfree <= 0``). ``sigma`` below 1
is refused (lmfit reads it as a probability; here it is always a number of σ).

(Each function carries a runnable example.)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special, stats

from tying.fit.datasets import Dataset, _from_torch, stack
from tying.fit.model import ModelError, ModelEvaluator
from tying.fit.roles import ParameterMap
from tying.fit.solvers import Tolerances

if TYPE_CHECKING:
    from tying.fit.result import FitResult

#: the largest σ accepted: the two-sided tail erfc(σ/√2) is still far from underflow
MAX_SIGMA = 10.0


@dataclasses.dataclass
class FitContext:
    """What a result needs to evaluate its model again and to refit (set by ``GlobalFit``)."""

    ev: ModelEvaluator
    tol: Tolerances
    scale_covar: bool
    vectorized: bool | str


# -- checks -------------------------------------------------------------------------------


def _require(result: FitResult, what: str) -> FitContext:
    """The result's fit context, or a clear error when ``what`` cannot be computed."""
    ctx = _context(result, what)
    if not result.success:
        raise ValueError(
            f"{what} needs a converged fit, but this result has success=False: "
            f"{result.message}; fix the fit first (its message says how)"
        )
    if not result.errorbars:
        raise ValueError(
            f"{what} needs the covariance of the fitted parameters, but this result has "
            f"none (errorbars=False): {result.message}"
        )
    if result.nfree <= 0:
        raise ValueError(
            f"{what} needs at least one degree of freedom, got nfree = {result.nfree} "
            f"({result.ndata} points, {result.nvarys} fitted parameters); add data or fix "
            f"parameters"
        )
    return ctx


def _context(result: FitResult, what: str) -> FitContext:
    ctx = getattr(result, "_context", None)
    if ctx is None:
        raise ValueError(
            f"{what} needs the model function of the fit, which this result does not carry "
            f"(a result unpickled from a model that cannot be pickled, a lambda say); run "
            f"the fit again, or define model_fn at module level before pickling"
        )
    return ctx


def _sigma(value: Any, label: str) -> float:
    """A confidence level in σ: a real number in [1, MAX_SIGMA]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{label} must be a number of standard deviations, got {value!r}")
    value = float(value)
    if not 1.0 <= value <= MAX_SIGMA:
        hint = (
            f"; lmfit reads a sigma below 1 as a probability, here it is always a number of "
            f"σ: for a probability p pass sigma = sqrt(2)·erfinv(p) "
            f"(p = 0.95: {np.sqrt(2) * special.erfinv(0.95):.4f})"
            if 0 < value < 1
            else ""
        )
        raise ValueError(f"{label} must be between 1 and {MAX_SIGMA:g} σ, got {value!r}{hint}")
    return value


# -- prediction at new x ------------------------------------------------------------------


def _new_x(result: FitResult, i: int, x: Any) -> np.ndarray:
    """The new x of data set ``i``, checked against the kind of x it was fitted on."""
    arr = np.asarray(_from_torch(f"new x of dataset {result.dataset_names[i]!r}", "x", x))
    # a boolean x is read as 0/1, as the fit read it (stop 39: the fit took a boolean x,
    # predict and eval_uncertainty refused it)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"x must be real numbers, got {arr.dtype} ({type(x).__name__}); pass a float array"
        )
    arr = np.asarray(arr, dtype=float)
    old = result._data.xs[i]
    name = result.dataset_names[i]
    if arr.ndim == 0 or arr.shape[1:] != old.shape[1:]:
        want = "(n,)" if old.ndim == 1 else f"(n, {', '.join(map(str, old.shape[1:]))})"
        raise ValueError(
            f"x must have the shape of the x that dataset {name!r} was fitted on, one entry "
            f"per point along the first axis: {want}, got {arr.shape}"
            + ("; wrap a single point as [x]" if arr.ndim == 0 else "")
        )
    if arr.shape[0] == 0:
        raise ValueError("x has no points")
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"x has {int(bad.sum())} NaN/inf point(s), the first at point "
            f"{int(np.flatnonzero(bad)[0])}; drop them"
        )
    return arr


def _evaluator(result: FitResult, i: int, x: np.ndarray) -> tuple[ModelEvaluator, ParameterMap]:
    """A one-data-set evaluator of data set ``i``'s model at ``x``, its fitted values as start.

    Every free parameter of data set ``i`` is a local parameter of this map (in
    ``free_names`` order), with its bounds, so the derivatives are taken as in the fit
    (complex step where verified, else central differences inside the bounds, or
    autograd for a torch model).
    """
    ctx = result._context
    pm = result._pmap
    name = result.dataset_names[i]
    idx = pm.index[i]
    data = stack([Dataset(x, np.zeros(len(x)), name=f"new x of {name}")])
    fixed = {n: float(pm.fixed_values[i, j]) for j, n in enumerate(pm.fixed_names)}
    one = ParameterMap(
        None,
        data.metadata,
        local=list(pm.free_names),
        fixed=fixed,
        init={n: float(result.x[idx[j]]) for j, n in enumerate(pm.free_names)},
        bounds={
            n: (
                None if np.isinf(pm.lower[idx[j]]) else float(pm.lower[idx[j]]),
                None if np.isinf(pm.upper[idx[j]]) else float(pm.upper[idx[j]]),
            )
            for j, n in enumerate(pm.free_names)
        },
    )
    try:
        ev = ModelEvaluator(
            ctx.ev.model_fn, data, one, ctx.ev.backend, False if ctx.vectorized is False else "auto"
        )
    except ValueError as err:
        raise ValueError(
            f"model_fn at dataset {name!r}'s fitted parameters cannot be evaluated at the new "
            f"x: {err}"
        ) from err
    return ev, one


def _predict(result: FitResult, i: int | str, x: Any, what: str, need_cov: bool):
    """``(model (n,), J C Jᵀ (n,) or None)`` of data set ``i`` at ``x``."""
    i = result._index(i)
    if need_cov:
        _require(result, what)
    else:
        _context(result, what)  # a prediction alone needs no converged fit
    x = _new_x(result, i, x)
    ev, one = _evaluator(result, i, x)
    y = ev.start_model[0, : len(x)].copy()
    if not need_cov:
        return y, None
    try:
        jac = ev.jacobian(one.x0)
        if ev._complex_ok:  # verified on that first call: now exact (complex step)
            jac = ev.jacobian(one.x0)
        jac = jac[0, : len(x)]  # (n, P), free_names order
    except ModelError as err:
        raise ValueError(f"{what}: the derivative of model_fn at the new x failed: {err}") from err
    cov = result.dataset_covariance(i)  # (P, P), full covariance, cross terms included
    var = np.einsum("np,pq,nq->n", jac, cov, jac)
    return y, np.maximum(var, 0.0)  # J C Jᵀ >= 0; rounding can leave -1e-30


def predict(result: FitResult, i: int | str, x: Any, stderr: bool = False):
    """Data set ``i``'s model at new x, optionally with its standard error.

    Args:
        result: a :class:`~tying.fit.FitResult` of :meth:`GlobalFit.run`.
        i: data set index or name.
        x: the new points, shaped like the x the data set was fitted on.
        stderr: also return the 1-σ standard error of the prediction, ``√(J C Jᵀ)``
            (the delta method with the full covariance; no t quantile).

    Returns:
        The model values ``(n,)``, or ``(values, stderr)`` when ``stderr=True``.

    Raises:
        ValueError: x of another shape than the data set's x, NaN/inf in x, a model
            that cannot be evaluated there; with ``stderr=True``, a result that is not
            a success, has no covariance or no degree of freedom.
        TypeError: x not real numbers.

    Example:
        >>> import numpy as np
        >>> from tying.fit import GlobalFit
        >>> x = np.linspace(0, 1, 20)
        >>> res = GlobalFit(lambda x, a, b: a * x + b, [(x, 2 * x + 1), (x, 2 * x + 3)],
        ...                 shared=["a"], local=["b"], init={"a": 0.0, "b": 0.0}).run()
        >>> res.predict(1, np.array([0.0, 2.0])).round(6).tolist()
        [3.0, 7.0]
    """
    y, var = _predict(result, i, x, "result.predict(..., stderr=True)", stderr)
    return (y, np.sqrt(var)) if stderr else y


def eval_uncertainty(result: FitResult, i: int | str, x: Any, sigma: float = 1.0) -> np.ndarray:
    """The ``sigma`` confidence band of data set ``i``'s model at new x (lmfit's ``dely``).

    ``t·√(J C Jᵀ)`` with ``t`` the two-sided quantile of Student's t with ``nfree``
    degrees of freedom at probability ``erf(sigma/√2)``, as lmfit's
    ``ModelResult.eval_uncertainty``, with ``scale_covar=False`` too (lmfit keeps t there,
    and so does its F-test in :func:`~tying.fit.conf_interval`). ``J`` is exact where the
    fit's Jacobian is (lmfit steps each parameter by ``0.01·stderr``).

    Args:
        result: a :class:`~tying.fit.FitResult` of :meth:`GlobalFit.run`.
        i: data set index or name.
        x: the new points, shaped like the x the data set was fitted on.
        sigma: the level in standard deviations, 1 to 10 (below 1 is refused: lmfit
            reads it as a probability).

    Returns:
        The half-width of the band at each point ``(n,)``.

    Raises:
        ValueError: a result that is not a success, has no covariance or no degree of
            freedom; sigma outside [1, 10]; x of another shape than the data set's x or
            with NaN/inf; a model that cannot be evaluated there.
        TypeError: sigma or x not real numbers.

    Example:
        >>> import numpy as np
        >>> from tying.fit import GlobalFit
        >>> rng = np.random.default_rng(2)
        >>> x = np.linspace(0, 1, 40)
        >>> res = GlobalFit(lambda x, a, b: a * x + b, [(x, x + rng.normal(0, 0.1, 40), 0.1)],
        ...                 shared=["a", "b"], init={"a": 0.0, "b": 0.0}).run()
        >>> one, two = (res.eval_uncertainty(0, [0.5], sigma=s)[0] for s in (1, 2))
        >>> bool(1.9 < two / one < 2.1)
        True
    """
    level = _sigma(sigma, "sigma")
    what = "result.eval_uncertainty"
    _require(result, what)
    _, var = _predict(result, i, x, what, True)
    tail = special.erfc(level / np.sqrt(2.0))  # two-sided: 1 - erf(σ/√2)
    # Student's t whatever scale_covar says, as lmfit's t.ppf((prob + 1) / 2, ndata - nvarys)
    scale = stats.t.isf(tail / 2, result.nfree)
    return float(scale) * np.sqrt(var)
