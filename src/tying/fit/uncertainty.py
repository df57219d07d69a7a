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
(``errorbars`` False) or no degree of freedom (``nfree <= 0``; for :func:`predict` only
under ``scale_covar=True``: with σ known its standard error needs none). ``sigma`` below 1
is refused (lmfit reads it as a probability; here it is always a number of σ).

(Each function carries a runnable example.)
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special, stats

from tying.fit.dataset_argument import per_dataset
from tying.fit.datasets import Dataset, _from_torch, stack
from tying.fit.model import ModelError, ModelEvaluator, NonFiniteModel
from tying.fit.result_argument import require_result
from tying.fit.roles import ParameterMap
from tying.fit.solvers import FitWarning, Tolerances

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


def _require(result: FitResult, what: str, quantile: bool = True) -> FitContext:
    """The result's fit context, or a clear error when ``what`` cannot be computed.

    ``quantile=False``: ``what`` needs no t quantile (a 1-σ standard error), so a fit with
    no degree of freedom passes where its covariance did not need one (``scale_covar=False``:
    σ known). The fit itself advises ``scale_covar=False`` then, and its ``stderr`` is
    given, but ``predict(stderr=True)`` refused "needs at least one degree of freedom"
    (stop 58).
    """
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
    if result._rank_dof <= 0 and (quantile or ctx.scale_covar):
        raise ValueError(
            f"{what} needs at least one degree of freedom, got nfree = {result.nfree} "
            f"({result.ndata} points, {result.nvarys} fitted parameters); add data or fix "
            f"parameters"
            + (
                "; with scale_covar=False (sigma known), result.predict(i, x, stderr=True) "
                "gives the 1-σ standard error, which needs no t quantile"
                if quantile and not ctx.scale_covar
                else ""
            )
        )
    return ctx


def _context(result: FitResult, what: str) -> FitContext:
    require_result(result, what)  # a GlobalFit or an lmfit result: the call that works
    ctx = getattr(result, "_context", None)
    if ctx is None:
        raise ValueError(
            f"{what} needs the model function of the fit, which this result does not carry "
            f"(a result unpickled from a model that cannot be pickled, a lambda say); run "
            f"the fit again, or define model_fn at module level before pickling"
        )
    return ctx


def _probability_hint(p: float, keyword: str) -> str:
    """The fix for a level given as lmfit's probability ``p`` (0 < p < 1), for that ``p``.

    Stop 60: the hint printed the level of p = 0.95 whatever p was, and for p below
    ``erf(1/√2)`` = 0.6827 (p = 0.68, 0.5) the sigma it led to is below 1 σ, refused again.
    """
    return (
        f"; lmfit reads a sigma below 1 as a probability, here it is always a number of σ "
        f"(sigma = sqrt(2)·erfinv(p)): {probabilities_advice(p, keyword)}"
    )


def probabilities_advice(probs: Any, keyword: str = "sigmas", sigmas_too: bool = False) -> str:
    """The ``sigmas=`` that lmfit's probabilities ``probs`` mean, or the rule where none does.

    Args:
        probs: what was passed as lmfit's ``prob``/``probs`` (a number or a list).
        keyword: ``"sigmas"`` (``conf_interval``, a tuple) or ``"sigma"``
            (``eval_uncertainty``, one number).
        sigmas_too: read entries of 1 or more as levels in σ (lmfit's ``sigmas``, which
            mixes both), not as invalid probabilities.

    Returns:
        ``"pass sigmas=(1.96,)"`` for probabilities of 1 σ or more (p ≥ 0.6827); else
        which one is below 1 σ, the lowest level offered; ``""`` for anything that is not
        probabilities.

    Example:
        >>> probabilities_advice([0.6827, 0.95])
        'pass sigmas=(1, 1.96)'
    """
    try:
        items = list(np.ravel(np.asarray(probs, dtype=object)))
        if any(isinstance(p, (bool, np.bool_)) for p in items):
            return ""
        ps = [float(p) for p in items]
    except (TypeError, ValueError):
        ps = []
    if not ps or not all(0 < p < 1 or (sigmas_too and p >= 1) for p in ps):
        return ""
    levels = [p if p >= 1 else float(np.sqrt(2) * special.erfinv(p)) for p in ps]
    if min(levels) < 1.0:
        low = ps[int(np.argmin(levels))]
        return (
            f"p = {low!r} is {min(levels):.6g} σ, below the lowest level offered, 1 σ "
            f"(p = {float(special.erf(np.sqrt(0.5))):.4f}); ask for 1 σ or more"
        )
    if max(levels) > MAX_SIGMA:  # lmfit's sigmas=[0.95, 20]: (1.96, 20) was refused again
        high = ps[int(np.argmax(levels))]
        return (
            f"{high!r} σ is above the highest level offered, {MAX_SIGMA:g} σ; ask for "
            f"{MAX_SIGMA:g} σ or less"
        )
    if keyword == "sigma" and len(levels) == 1:
        return f"pass sigma={levels[0]:.4g}"
    shown = ", ".join(f"{v:.4g}" for v in levels) + ("," if len(levels) == 1 else "")
    return f"pass {keyword}=({shown})"


def _sigma(value: Any, label: str) -> float:
    """A confidence level in σ: a real number in [1, MAX_SIGMA]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{label} must be a number of standard deviations, got {value!r}")
    value = float(value)
    if not 1.0 <= value <= MAX_SIGMA:
        keyword = "sigmas" if "sigmas" in label else "sigma"
        hint = _probability_hint(value, keyword) if 0 < value < 1 else ""
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
    except NonFiniteModel as err:
        # "at the starting values ...; check the starting values and bounds" was the advice
        # here (stop 58): the values are the fitted ones, and the fix is in x
        raise ValueError(
            f"model_fn at dataset {name!r}'s fitted parameters cannot be evaluated at the new "
            f"x: it returns NaN/inf at {_points(err.bad[0, : len(x)], x)}: the model is not "
            f"defined there; drop those points from x"
        ) from err
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
        _require(result, what, quantile=what == "result.eval_uncertainty")
    else:
        _context(result, what)  # a prediction alone needs no converged fit
    x = _new_x(result, i, x)
    ev, one = _evaluator(result, i, x)
    y = ev.start_model[0, : len(x)].copy()
    held = _held(result, i)
    if not need_cov and not held.any():
        return y, None
    try:
        jac = ev.jacobian(one.x0)
        if ev._complex_ok:  # verified on that first call: now exact (complex step)
            jac = ev.jacobian(one.x0)
        jac = jac[0, : len(x)]  # (n, P), free_names order
    except NonFiniteModel as err:
        if not need_cov:  # asked for values only, which are finite
            return y, None
        # the fit's advice came here too (stop 58): "start inside the domain, or bound c"
        raise ValueError(
            f"{what}: the derivative of model_fn at dataset "
            f"{result.dataset_names[i]!r}'s fitted parameters is NaN/inf at the new x, at "
            f"{_points(err.bad[0, : len(x)], x)}: model_fn is not differentiable there (the "
            f"edge of its domain?), so the error of the prediction is undefined; drop those "
            f"points from x (result.predict(i, x) gives the values alone)"
        ) from err
    except (ModelError, ValueError) as err:
        if not need_cov:
            # asked for values only, which are finite: the derivative serves the held-slot
            # warning alone (a difference step past a model's own domain check refused
            # result.predict(i, x) under the name "predict(..., stderr=True)", stop 58 review)
            return y, None
        if isinstance(err, ModelError):
            raise ValueError(
                f"{what}: the derivative of model_fn at the new x failed: {err}"
            ) from err
        raise
    reads = (jac[:, held] != 0).any(axis=1)  # (n,) points where a held slot moves the model
    if reads.any():
        _warn_held(result, i, held, reads, x, need_cov)
    if not need_cov:
        return y, None
    cov = result.dataset_covariance(i)  # (P, P), full covariance, cross terms included
    var = np.einsum("np,pq,nq->n", jac, cov, jac)
    # a held slot's zero covariance is "no uncertainty" only where the model ignores it
    var[reads] = np.nan
    return y, np.maximum(var, 0.0)  # J C Jᵀ >= 0; rounding can leave -1e-30


def _points(mask: np.ndarray, x: np.ndarray) -> str:
    """Names the True entries of ``mask``: ``k of the n points (point(s) [..], x = ..)``."""
    bad = np.flatnonzero(mask)
    more = ", ..." if len(bad) > 5 else ""
    shown = ", ".join(f"{v:.6g}" for v in x.reshape(len(x), -1)[bad[:5], 0])
    return (
        f"{len(bad)} of the {len(x)} points (point(s) {bad[:5].tolist()}{more}, x = {shown}{more})"
    )


def _held(result: FitResult, i: int) -> np.ndarray:
    """``(P,)`` True at data set ``i``'s slots the fit held at their start values.

    A local slot that data set ``i``'s data do not move (a derivative of 0 at each of its
    points) is held at its start (``GlobalFit``: standard error NaN, no covariance).
    """
    cov = result.dataset_covariance(i)
    if cov is None:
        return np.zeros(len(result._pmap.free_names), dtype=bool)
    idx = result._pmap.index[i]
    return np.isnan(result._stderr_x[idx]) & ~np.asarray(cov != 0).any(axis=1)


def _warn_held(result: FitResult, i: int, held, reads, x: np.ndarray, need_cov: bool) -> None:
    # stop 58: data set 1 of a + b·sin(x) fitted on x = 0 holds b[1] at its start (1.0);
    # predict(1, [1.0], stderr=True) gave 2.64 ± 0.0029, as if b[1] were known exactly
    pm = result._pmap
    labels = pm.labels_for(result.dataset_names)  # as the table, after a rename too
    slots = [labels[pm.index[i, j]] for j in np.flatnonzero(held)]
    warnings.warn(
        f"{', '.join(map(repr, slots))} held at its start value by the fit (dataset "
        f"{result.dataset_names[i]!r}'s data do not change the model through it), but the "
        f"model depends on it at {_points(reads, x)} of the new x: the prediction there uses "
        f"the unfitted start value"
        + (", and its standard error and band are NaN" if need_cov else "")
        + "; fit that data set with points where the parameter changes the model",
        FitWarning,
        stacklevel=5,
    )


@per_dataset
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
            a success, has no covariance, or no degree of freedom under ``scale_covar=True``
            (with ``scale_covar=False`` σ is known and none is needed).
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


@per_dataset
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
    # n - rank J beside a null direction, the held fit's nfree (review 61)
    scale = stats.t.isf(tail / 2, result._rank_dof)
    return float(scale) * np.sqrt(var)
