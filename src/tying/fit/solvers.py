"""The two solvers of a global fit: Schur-complement Levenberg–Marquardt, and SciPy's trf.

- ``"lm"`` (default): Levenberg–Marquardt. A small problem without bounds
  (one data set, or shared parameters only; at most
  :data:`DENSE_MAX_PARAMETERS` fitted parameters) goes to MINPACK's ``lmder`` (``scipy.optimize.leastsq``, the code
  behind lmfit's default) with our exact or finite-difference Jacobian: its
  trust-region control solves NIST problems (MGH10 from start 1) that a
  plain damping schedule does not. Larger problems, and bounded ones, use our
  Levenberg–Marquardt with Marquardt's diagonal scaling (as in MINPACK), each
  step solved by the Schur complement (:mod:`tying.fit.schur`) in O(K).
  Bounds are kept by a projected step: parameters at a bound whose gradient
  points outward are held for that step, and the step is clipped to the box.
  A step after which some parameter no longer changes the model (its Jacobian column
  collapsed into the underflow of ``exp``, :data:`LOST_COLUMN`) is taken back and damped.
- ``"trf"``: ``scipy.optimize.least_squares(method="trf")``: the exact trust-region
  solver on the dense Jacobian for a small problem that ``"lm"`` gives MINPACK (one data
  set or shared parameters only, at most :data:`DENSE_MAX_PARAMETERS` parameters and
  :data:`TRF_DENSE_MAX_ENTRIES` entries), as lmfit's ``least_squares``; else ``tr_solver="lsmr"`` on the sparse Jacobian of
  :func:`tying.fit.jacobian.assemble`, its converged result finished by the
  Levenberg–Marquardt above (lsmr's inexact steps stop early in flat valleys).

Both stop on the tests of MINPACK/SciPy: ``ftol`` (relative reduction of χ²,
actual and predicted), ``xtol`` (relative step), ``gtol`` (largest scaled
gradient component). Those tests are relative to the total χ², so every stop is
confirmed by the Gauss-Newton step there (:func:`_newton_short`; MINPACK's and trf's
through :func:`_confirm`), and the Schur LM goes on where it is short. Running out of
iterations is reported, not hidden: ``success`` is False and ``message`` says which
limit was hit.

Example:
    >>> import numpy as np
    >>> from tying.fit import GlobalFit
    >>> x = np.linspace(0, 1, 20)
    >>> fit = GlobalFit(lambda x, a, b: a * x + b, [(x, 2 * x + 1), (x, 2 * x + 3)],
    ...                 shared=["a"], local=["b"], init={"a": 0.0, "b": 0.0})
    >>> res = fit.run()
    >>> res.success, round(res.values["a"], 6), res.values["b"].round(6).tolist()
    (True, 2.0, [1.0, 3.0])
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.sparse as sp

from tying.core.errors import ConvergenceWarning as _BudgetWarning
from tying.fit import jacobian as jac_mod
from tying.fit import schur
from tying.fit.datasets import StackedData
from tying.fit.model import ModelEvaluator
from tying.fit.roles import ParameterMap

SOLVERS = ("lm", "trf")
#: "lm" hands an unbounded problem with at most this many fitted parameters to MINPACK
DENSE_MAX_PARAMETERS = 50
#: "trf" solves its trust region exactly on the dense Jacobian (at most
#: DENSE_MAX_PARAMETERS columns) up to this many entries (80 MB); lsmr on the sparse one past it
TRF_DENSE_MAX_ENTRIES = 10_000_000
#: a fit whose residuals have a cosine above this with a free parameter's Jacobian column
#: is not at a minimum, whatever its solver's tests said (stop 25 review: NIST MGH10 from
#: start 1 stalled under trf's ftol at 4.4e7 x the certified chi2, cosine 0.79; a minimum
#: has it near 0: <= 1.7e-3 on all 54 NIST cases, Lanczos1's rounding-noise residuals
#: the largest)
MAX_COSINE = 0.05
#: the Schur LM stops only where a Gauss-Newton step would move no parameter by more
#: than this many standard errors (stop 50: its ftol/xtol/gtol tests are relative to the
#: total chi2, and a local parameter of a data set with a small share of it stopped 6e-4
#: standard errors short of lmfit's optimum, reported converged)
NEWTON_SIGMAS = 1e-6
#: stop tests overruled by that check before the fit is reported not converged
MAX_PUSHES = 50
#: steps refused in a row while the stop tests are held, before the same verdict
MAX_REFUSED = 20
#: a step after which a Jacobian column's largest entry is below this fraction of what it
#: was is taken back (:func:`_lost_columns`)
LOST_COLUMN = 1e-100
_EPS = float(np.finfo(float).eps)  # the smallest tolerance scipy's trf tests honour
_MINPACK_SUCCESS = {
    1: "ftol: relative reduction of chi2 <= ftol",
    2: "xtol: relative step <= xtol",
    3: "ftol and xtol both met",
    4: "gtol: the residuals are orthogonal to the Jacobian columns to within gtol",
    # 6-8: the tolerance cannot be met in floating point: converged to machine precision
    6: "converged to machine precision (no further reduction of chi2 is possible)",
    7: "converged to machine precision (no further improvement of the parameters is possible)",
    8: "converged to machine precision (residuals orthogonal to the Jacobian columns)",
}


class FitWarning(UserWarning):
    """Something about a fit's result that must not pass unnoticed (see ``FitResult.message``)."""


class ConvergenceWarning(FitWarning, _BudgetWarning):
    """A fit stopped before its convergence tests were met (see ``FitResult.message``).

    Also a :class:`tying.ConvergenceWarning`, the base the HMMs' budget warning shares.
    """


@dataclasses.dataclass
class SolverOutput:
    """What a solver hands back: the solution and how it got there."""

    theta: np.ndarray
    model: np.ndarray  # (K, n_max) model values at theta
    cost: float  # ½ χ²
    niter: int
    success: bool
    message: str
    units: np.ndarray | None = None  # (P,) the parameter units trf solved in (_units)


@dataclasses.dataclass
class Tolerances:
    """Stopping tests, as in ``scipy.optimize.least_squares``.

    Attributes:
        ftol: stop when χ² drops by less than ``ftol`` relative (actual and predicted).
        xtol: stop when the scaled step is below ``xtol`` × (scaled parameter norm).
        gtol: stop when the largest scaled gradient component is below ``gtol``.
        max_iter: the iteration limit of ``"lm"`` (model evaluations when
            MINPACK solves it); ``"trf"`` gets ``max_nfev = max_iter``
            function evaluations.
    """

    ftol: float = 1e-10
    xtol: float = 1e-10
    gtol: float = 1e-10
    max_iter: int = 2000


def _state(ev: ModelEvaluator, data: StackedData, theta: np.ndarray):
    model = ev.predict(theta)
    r = jac_mod.residuals(model, data)
    cost = 0.5 * float(np.sum(r * r))
    return model, r, cost if np.isfinite(cost) else np.inf


def levenberg_marquardt(
    ev: ModelEvaluator,
    data: StackedData,
    pmap: ParameterMap,
    tol: Tolerances,
    theta0: np.ndarray | None = None,
    units: np.ndarray | None = None,
) -> SolverOutput:
    """Levenberg–Marquardt on the block-arrowhead normal equations (see module docstring).

    ``theta0`` starts it elsewhere than ``pmap.x0`` (trf's lsmr result, polished), with
    the parameter ``units`` trf solved in (:func:`_units`; else read at the start)."""
    lo, hi = pmap.lower, pmap.upper
    has_bounds = bool(np.isfinite(lo).any() or np.isfinite(hi).any())
    theta = (pmap.x0 if theta0 is None else np.clip(theta0, lo, hi)).copy()
    model, r, cost = _state(ev, data, theta)
    lam, nu = 1e-3, 2.0
    scale = None
    # (n_physical,) solved in u = θ / units (see _units), read at the start values: a
    # polish gets trf's. From trf's end point instead, an asymptote (b → 1e-156 in
    # a·log(b·x)) gave b a unit of 1e-156 and LM walked it into subnormals (stop 47)
    message, success = "", False
    need_jac = True
    niter = 0
    # a stop test that fired (ftol, xtol, gtol: relative to the TOTAL chi2) is confirmed by
    # the Gauss-Newton step at that point (_newton_short) before the fit is called converged
    pending, pushes, short, hold, refused = "", 0, "", False, 0
    nfree = max(data.n_points - pmap.n_physical, 1)
    ynorm = float(np.linalg.norm((data.y * data.weight)[data.mask]))
    # the point before the last accepted step, its Jacobian's largest entries and blocks:
    # a step that left a parameter no effect on the model is taken back (_lost_columns)
    back, lost = None, 0
    for niter in range(1, tol.max_iter + 1):  # noqa: B007 (niter is reported after the loop)
        if need_jac:
            jw = jac_mod.weighted(ev.jacobian(theta), data)
            big = column_max(jw, pmap)
            if back is not None and lost < MAX_REFUSED and _lost_columns(back[-1], big):
                # stop 55: a step with a poor gain ratio (accepted, as MINPACK accepts
                # one over 1e-4) cut a Gaussian's width 0.34 -> -2.5e-4, where the peak
                # underflows at every x and no derivative can bring it back (chi2 5539
                # where lmfit, whose step landed at -3.5e-3, reaches 244): back to the
                # point before, with the damping raised as for a refused step
                theta, model, r, cost, h, g, grad, frozen, _ = back
                lam, nu, lost, back, need_jac = lam * nu, nu * 2, lost + 1, None, False
                pending = ""
                continue
            if units is None:  # fixed at the first Jacobian: one set of units throughout
                units = _units(big)
            h, g = jac_mod.normal_blocks(jw * units[pmap.index][:, None, :], r)
            grad = jac_mod.gradient(g, pmap)
            diag = schur.diagonal(h, pmap.index, pmap.n_physical)
            # Marquardt scaling: the largest diagonal seen so far; a zero column starts at 1
            # (MINPACK's rule). Stop 30 review: an absolute floor of 1e-30 over-damped a
            # parameter whose column is that small (a density near 1e22 times a cross
            # section of 1e-22; data near 1e-20 without sigma), and the xtol test then
            # fired at once: success at the start values
            scale = np.where(diag > 0, diag, 1.0) if scale is None else np.maximum(scale, diag)
            frozen = None
            if has_bounds:
                frozen = ((theta <= lo) & (grad > 0)) | ((theta >= hi) & (grad < 0))
            gnorm = np.abs(grad) / np.sqrt(scale * max(2 * cost, 1e-300))
            if frozen is not None:
                gnorm = np.where(frozen, 0.0, gnorm)
            if gnorm.max(initial=0.0) <= tol.gtol and not (pending or hold):
                pending = f"gtol: largest scaled gradient {gnorm.max():.2e} <= {tol.gtol:g}"
            need_jac = False
        if pending:
            # a float32/float16 model (flagged in the result) carries rounding in its values
            # and differences far above what the check allows: its stop tests stand
            short = (
                ""
                if ev.low_precision
                else _newton_short(
                    h, g, theta, units, pmap, frozen, cost, nfree, ynorm, data.n_points
                )
            )
            if not short:
                message, success = pending, True
                break
            # stop 50: the test fired on a step too small for the TOTAL chi2 while a
            # parameter (a local one of a data set with a small share of chi2) was still
            # moving: go on, the stop tests held until a step is taken (the GN step itself
            # can overshoot where the model is far from quadratic: 2x in k of exp(-k x))
            pending, pushes, hold = "", pushes + 1, True
            if pushes > MAX_PUSHES:
                break
        try:
            step = schur.solve(h, g, pmap.index, pmap.n_global, lam * scale, frozen)
        except np.linalg.LinAlgError:
            lam, nu = lam * nu, nu * 2
            continue
        new = np.clip(theta + step * units, lo, hi)
        step = (new - theta) / units
        d = np.sqrt(scale)
        # MINPACK's test, relative only: SciPy's extra "xtol +" is absolute in the scaled
        # units, which data near 1e-18 make tiny (a stop 4.5e-4 short of the minimum)
        if not hold and np.linalg.norm(d * step) <= tol.xtol * np.linalg.norm(d * theta / units):
            pending = f"xtol: relative step <= {tol.xtol:g}"
            continue  # h and g are those of theta: checked at the top of the loop
        new_model, new_r, new_cost = _state(ev, data, new)
        s_log = step[pmap.index]  # (K, P)
        predicted = -(np.sum(g * s_log) + 0.5 * np.sum(s_log * (h @ s_log[:, :, None])[:, :, 0]))
        actual = cost - new_cost
        rho = actual / predicted if predicted > 0 else -1.0
        small = abs(actual) <= tol.ftol * cost and 0 <= predicted <= tol.ftol * cost
        if rho > 1e-4:
            back = (theta, model, r, cost, h, g, grad, frozen, big)
            theta, model, r, cost = new, new_model, new_r, new_cost
            lam *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
            nu = 2.0
            need_jac, hold, refused = True, False, 0
        else:
            lam, nu = lam * nu, nu * 2
            refused += hold
            # held, and no step lowers chi2 any more (the damping grows as 2^(n²/2): 20
            # refusals reach 1e63, 40 overflowed)
            if refused > MAX_REFUSED:
                break
        if cost == 0.0:
            message, success = "chi2 is zero", True
            break
        if small and rho <= 2 and not hold:
            # checked at theta's Jacobian, at the top of the loop (need_jac after a step)
            pending = f"ftol: relative reduction of chi2 <= {tol.ftol:g}"
    else:
        message = (
            f"max_iter={tol.max_iter} reached before ftol/xtol/gtol were met; raise max_iter, "
            f"or check the starting values and bounds"
        )
        if short:
            message += f" (the last stop test that fired was overruled: {short})"
    if pushes > MAX_PUSHES or refused > MAX_REFUSED:
        why = (
            f"the stop tests fired {pushes} times"
            if pushes > MAX_PUSHES
            else f"no step lowered chi2 in {refused} tries after a stop test fired"
        )
        message = (
            f"{why} while {short}: this is not a minimum; raise max_iter, or try "
            f"solver='trf' or other starting values"
        )
    return SolverOutput(theta, model, cost, niter, success, message)


def _lost_columns(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether a step left some parameter with no effect on the model: its Jacobian
    column's largest entry ``after`` fell below :data:`LOST_COLUMN` of ``before`` (0 where
    a peak's width or a rate crossed into the underflow of ``exp``). From there no
    derivative can bring the parameter back; a column shrinking towards a true minimum
    (``b`` of ``a·x + b**2``) shrinks by far less in one step."""
    ok = (before > 0) & np.isfinite(before)  # an overflowing column is named elsewhere
    return bool(np.any(ok & (after <= LOST_COLUMN * np.where(ok, before, 0.0))))


def minpack(
    ev: ModelEvaluator, data: StackedData, pmap: ParameterMap, tol: Tolerances
) -> SolverOutput:
    """MINPACK ``lmder`` (``scipy.optimize.leastsq``) on the dense Jacobian: small unbounded fits."""
    from scipy.optimize import leastsq

    mask = data.mask
    cache: dict[str, np.ndarray] = {}

    def fun(theta):
        model = ev.predict(theta)
        cache["theta"], cache["model"] = theta.copy(), model
        r = jac_mod.residuals(model, data)[mask]
        return np.where(np.isfinite(r), r, 1e150)

    def jac(theta):
        jw = jac_mod.weighted(ev.jacobian(theta), data)  # (K, n_max, P)
        if data.n_datasets == 1:
            return jw[0, : data.lengths[0]]
        return jac_mod.assemble(jw, data, pmap).toarray()

    with warnings.catch_warnings():
        # leastsq's full_output also forms cov_x = R⁻¹R⁻ᵀ, unused here (the covariance is
        # computed on scaled columns in global_fit), whose overflow for a parameter near
        # 1e±299 warned; warnings of model_fn (another module) still pass (stop 47)
        warnings.filterwarnings(
            "ignore", category=RuntimeWarning, module=r"scipy\.optimize\._minpack_py"
        )
        theta, _, info, _, ier = leastsq(
            fun,
            pmap.x0.copy(),
            Dfun=jac,
            full_output=True,
            ftol=tol.ftol,
            xtol=tol.xtol,
            gtol=tol.gtol,
            maxfev=tol.max_iter,
        )
    model = cache["model"] if np.array_equal(cache.get("theta"), theta) else ev.predict(theta)
    r = jac_mod.residuals(model, data)
    cost = 0.5 * float(np.sum(r * r))
    if ier in _MINPACK_SUCCESS:
        message, success = f"MINPACK lmder: {_MINPACK_SUCCESS[ier]}", True
    else:
        message, success = (
            f"max_iter={tol.max_iter} reached before ftol/xtol/gtol were met (MINPACK lmder "
            f"counts model evaluations; info={ier}); raise max_iter, or check the starting values",
            False,
        )
    out = SolverOutput(
        theta, model, cost if np.isfinite(cost) else np.inf, int(info["nfev"]), success, message
    )
    return _confirm(ev, data, pmap, tol, out)


def trust_region(
    ev: ModelEvaluator, data: StackedData, pmap: ParameterMap, tol: Tolerances
) -> SolverOutput:
    """``scipy.optimize.least_squares(method="trf")``: the exact trust-region solver on the
    dense Jacobian of a small problem, lsmr on the sparse one of a large global fit."""
    from scipy.optimize import least_squares

    cache: dict[str, np.ndarray] = {}

    def fun(theta):
        model = ev.predict(theta)
        cache["theta"], cache["model"] = theta.copy(), model
        r = jac_mod.residuals(model, data)[data.mask]
        return np.where(np.isfinite(r), r, 1e150)

    # scipy's trf with tr_solver="lsmr" solves its trust region on a 2-D subspace and
    # raises a bare IndexError for one free parameter (a shared rate alone, a local
    # parameter of one data set, everything else fixed). Stop 42 sweep: on a small problem
    # lsmr's inexact steps also made trf's ftol test fire in flat valleys, success=True
    # with wrong digits on 8 of the 54 NIST cases (Lanczos2 LRE 3.0 at 1e-3 above the
    # certified chi2, MGH17 s1 LRE 0, Hahn1 s2 1.6), where lmfit's least_squares (the
    # exact solver) reached them. A problem MINPACK would take under "lm" (one data set,
    # or shared parameters only) whose dense Jacobian is small takes the exact solver on
    # it, as lmfit and SciPy's default do; a global fit with local parameters keeps lsmr
    # (the exact solver's SVD per step cost 3x lsmr at K = 48, 50 parameters) and is
    # finished by _polish
    dense = pmap.x0.size == 1 or (
        (data.n_datasets == 1 or pmap.n_local == 0)
        and pmap.n_physical <= DENSE_MAX_PARAMETERS
        and data.n_points * pmap.n_physical <= TRF_DENSE_MAX_ENTRIES
    )

    def jac(theta):
        if np.array_equal(cache.get("jac_theta"), theta):
            return cache["jac"]
        jm = jac_mod.assemble(jac_mod.weighted(ev.jacobian(theta), data), data, pmap)
        jm = jm.toarray() if dense else jm
        cache["jac_theta"], cache["jac"] = theta.copy(), jm
        return jm

    def solve(x0, gtol, max_nfev, free):
        # a parameter whose Jacobian column is exactly 0 is held out of the exact solver:
        # its SVD mixes rounding into that direction and moved a local parameter model_fn
        # does not read in its data set from 0 to -6120 (lsmr leaves it where it is)
        full = x0.copy()
        ps = units[free]

        def put(t):
            full[free] = t * ps
            return full.copy()

        def jac_free(t):
            jm = jac(put(t))[:, free]
            return jm * ps if dense else jm @ sp.diags(ps)

        with np.errstate(over="ignore"):
            # a wall of 1e150 residuals (NaN from model_fn) overflows trf's trust-radius
            # ratio; the result is judged by the checks on it, not by that warning
            out = least_squares(
                lambda t: fun(put(t)),
                x0[free] / ps,
                jac=jac_free,
                bounds=(pmap.lower[free] / ps, pmap.upper[free] / ps),
                method="trf",
                tr_solver="exact" if dense else "lsmr",
                x_scale="jac",
                # below machine epsilon scipy disables a test with a warning, and refuses
                # all three with a bare ValueError, where MINPACK reads 0 as "to machine
                # precision" (stop 51: ftol=xtol=0 ran trf to max_nfev into NaN steps)
                ftol=max(tol.ftol, _EPS),
                xtol=max(tol.xtol, _EPS),
                gtol=None if gtol is None else max(gtol, _EPS),
                max_nfev=max_nfev,
            )
        out.x = put(out.x)
        return out

    every = np.ones(pmap.x0.size, dtype=bool)
    free = every
    units = _parameter_units(jac(pmap.x0))
    if dense and pmap.x0.size > 1:
        column = np.abs(jac(pmap.x0)).max(axis=0)
        free = ~(column == 0) if (column > 0).any() else every
    out = solve(pmap.x0, tol.gtol, tol.max_iter, free)
    nfev = int(out.nfev)
    if not free.all() and (np.abs(jac(out.x)).max(axis=0)[~free] > 0).any():
        # a column zero at the start only (b in a*b*x from a = 0): refit them all
        free = every
        out = solve(out.x, tol.gtol, max(tol.max_iter - nfev, 1), free)
        nfev += int(out.nfev)
    cos, _ = residual_cosines(sp.csr_matrix(out.jac), out.fun)
    if out.status == 1 and np.where(out.active_mask == 0, cos, 0.0).max() > MAX_COSINE:
        # stop 30 review: trf's gtol test bounds |J^T r| in the residuals' and the
        # parameters' own units, so residuals near 1e-12 (data in amperes, no sigma) or a
        # column near 1e-22 passed it at the start values. The cosine says it is not a
        # minimum: go on from there with the other (relative) tests only
        out = solve(out.x, None, max(tol.max_iter - nfev, 1), free)
        nfev += int(out.nfev)
    model = cache["model"] if np.array_equal(cache.get("theta"), out.x) else ev.predict(out.x)
    message = out.message
    if out.status == 0:
        # scipy's "The maximum number of function evaluations is exceeded." named neither
        # max_iter nor the fix, where MINPACK's and the LM's stops say both (stop 54)
        message = (
            f"max_iter={tol.max_iter} reached before ftol/xtol/gtol were met (trf counts "
            f"model evaluations, max_nfev); raise max_iter, or check the starting values and "
            f"bounds"
        )
    result = SolverOutput(out.x, model, float(out.cost), nfev, out.status > 0, message)
    if result.success and (not dense or out.status == 1):
        # stop 47: trf's gtol test is absolute, so with sigma x 1e5 (chi2 x 1e-10) it
        # stopped 5.7e-7 (relative) short of the minimum in `a`, success=True, at a cosine
        # under MAX_COSINE; the LM's tests are relative and finish it
        result.units = units
        result = _polish(ev, data, pmap, tol, result)
    else:
        # trf's exact solver stopped on ftol or xtol (relative to the TOTAL chi2): as
        # MINPACK's stops, confirmed by the Gauss-Newton step (stop 51)
        result = _confirm(ev, data, pmap, tol, result, units)
    # whether this is a minimum at all (trf's ftol test also fires on a stall) is checked
    # for every solver on the result (global_fit._not_stationary)
    return result


def _confirm(
    ev: ModelEvaluator,
    data: StackedData,
    pmap: ParameterMap,
    tol: Tolerances,
    out: SolverOutput,
    units: np.ndarray | None = None,
) -> SolverOutput:
    """Confirm a converged MINPACK (or exact trf) result by the Gauss-Newton step, as the
    Schur LM confirms its own stops (:func:`_newton_short`); where it is short, go on
    with the Schur LM from there, whose stops are confirmed the same way.

    MINPACK's ftol/xtol tests are relative to the total chi2 and the whole parameter
    vector: under ``ftol=1e-2`` it stopped 2.5e-4 standard errors short of lmfit's
    optimum (0.016 under ``ftol=0.1``; trf 3e-3), and with ``ftol=xtol=1e-4`` 18 of 54
    NIST cases read LRE < 4 (ENSO 1.1), each reported success (stop 51). A result the LM
    cannot lower chi2 from is reported not converged.
    """
    if not out.success or ev.low_precision or not np.isfinite(out.cost):
        # a float32/float16 model's rounding is far above what the check allows: its
        # solver's stop tests stand (as in levenberg_marquardt)
        return out
    theta, lo, hi = out.theta, pmap.lower, pmap.upper
    jw = jac_mod.weighted(ev.jacobian(theta), data)
    if units is None:
        units = _units(column_max(jw, pmap))
    r = jac_mod.residuals(out.model, data)
    h, g = jac_mod.normal_blocks(jw * units[pmap.index][:, None, :], r)
    grad = jac_mod.gradient(g, pmap)
    frozen = ((theta <= lo) & (grad > 0)) | ((theta >= hi) & (grad < 0))
    nfree = max(data.n_points - pmap.n_physical, 1)
    ynorm = float(np.linalg.norm((data.y * data.weight)[data.mask]))
    short = _newton_short(
        h, g, theta, units, pmap, frozen if frozen.any() else None, out.cost, nfree, ynorm,
        data.n_points,
    )  # fmt: skip
    if not short:
        return out
    budget = max(tol.max_iter - out.niter, 1)
    lm = levenberg_marquardt(
        ev, data, pmap, dataclasses.replace(tol, max_iter=budget), theta, units
    )
    head = f"{out.message}; but {short}, so the Schur-complement LM went on from there"
    if lm.cost <= out.cost:
        return SolverOutput(
            lm.theta, lm.model, lm.cost, out.niter + lm.niter, lm.success, f"{head}: {lm.message}"
        )
    return SolverOutput(
        out.theta, out.model, out.cost, out.niter + lm.niter, False,
        f"{head} and lowered chi2 no further ({lm.message}): this is not a minimum; try "
        f"smaller ftol/xtol or other starting values",
    )  # fmt: skip


def _newton_short(
    h: np.ndarray,
    g: np.ndarray,
    theta: np.ndarray,
    units: np.ndarray,
    pmap: ParameterMap,
    frozen: np.ndarray | None,
    cost: float,
    nfree: int,
    ynorm: float,
    n_points: int,
) -> str:
    """Why the LM is not at its minimum although a stop test fired, or "".

    ftol, xtol and gtol are relative to the TOTAL chi2 and the whole parameter vector
    (MINPACK's), so a local parameter of a data set with a small share of chi2 can still
    be moving when they fire (stop 50: 6e-4 standard errors short of lmfit's optimum in a
    noisy data set among 20, reported converged). The Gauss-Newton step at theta
    (damping 1e-10 of each diagonal, frozen parameters held, clipped to the box) predicts
    a chi2 decrease ``2·pred``; no parameter then lies more than
    ``sqrt(2·pred / (chi2/nfree))`` standard errors from the minimum of the local
    quadratic model. It must be at most :data:`NEWTON_SIGMAS`, or below what the
    rounding of chi2 can show.
    """
    diag = schur.diagonal(h, pmap.index, pmap.n_physical)
    try:
        step = schur.solve(
            h, g, pmap.index, pmap.n_global, 1e-10 * np.where(diag > 0, diag, 1.0), frozen
        )
    except np.linalg.LinAlgError:
        return ""
    step = (np.clip(theta + step * units, pmap.lower, pmap.upper) - theta) / units
    s_log = step[pmap.index]  # (K, P)
    pred = -(np.sum(g * s_log) + 0.5 * np.sum(s_log * (h @ s_log[:, :, None])[:, :, 0]))
    rnorm = float(np.sqrt(2 * cost))
    # the rounding of cost differences: each residual is off by about eps·|y/sigma|,
    # at random, so their sum by eps·‖y/sigma‖·‖r‖/sqrt(N)
    rounding = 16 * np.finfo(float).eps * (ynorm * rnorm / np.sqrt(n_points) + cost)
    exact = rnorm <= 1e-10 * ynorm  # residuals of rounding only: nothing to converge to
    if exact or not (pred > NEWTON_SIGMAS**2 * cost / nfree and pred > rounding):
        return ""
    lead = np.argsort(-np.abs(step * np.sqrt(diag)))[:2]
    names = " and ".join(repr(pmap.labels[i]) for i in sorted(lead) if step[i] != 0)
    sigmas = float(np.sqrt(pred * nfree / cost))
    return (
        f"a Gauss-Newton step along {names} would still lower chi2 by {2 * pred:.3g} "
        f"(up to {sigmas:.2g} standard errors)"
    )


def column_max(jw: np.ndarray, pmap: ParameterMap) -> np.ndarray:
    """``(n_physical,)`` each parameter's largest ``|weighted Jacobian|`` entry, over
    every data set that reads it."""
    big = np.zeros(pmap.n_physical)
    np.maximum.at(big, pmap.index.ravel(), np.max(np.abs(jw), axis=1).ravel())
    return big


def pow2_floor(big: np.ndarray) -> np.ndarray:
    """The largest power of 2 at most each entry of ``big`` (1 where it is 0 or not
    finite): dividing a column by it is exact and leaves its largest entry in [1, 2).
    The one rule behind the column scales of the standard errors, the residual cosines
    and the solvers' parameter units (stop 47)."""
    _, e = np.frexp(np.where((big > 0) & np.isfinite(big), big, 1.0))
    return np.ldexp(1.0, e - 1)


def _units(big: np.ndarray) -> np.ndarray:
    """``(P,)`` from each column's largest entry ``big``: all 1, unless one lies outside
    1e±100, then ``1 / (a power of 2 at most big)`` per column (exact; 1 for a zero one).

    A column near 1e-299 (sigma or x near 1e±299) squares to 0 in ``JᵀJ`` and one near
    1e299 to inf; solved in ``u = θ / units`` its column is near 1. Stop 47: the
    Schur-complement LM stopped 50 % off with overflow warnings there, and trf's
    ``x_scale="jac"`` ran out of evaluations at the start values.
    """
    ok = (big > 0) & np.isfinite(big)
    if not np.any(ok & ((big < 1e-100) | (big > 1e100))):
        return np.ones(big.size)
    return 1.0 / pow2_floor(big)  # exact: the reciprocal of a power of 2


def _parameter_units(jm) -> np.ndarray:
    """``(P,)`` the unit trf solves each parameter in: 1, unless a Jacobian column's largest
    entry lies outside 1e±100, then a power of 2 that brings it near 1 (exact).

    trf's ``x_scale="jac"`` squares the column norms: a column near 1e-299 (sigma or x near
    1e±299) squared to 0, its scale to inf, and trf ran out of evaluations at the start
    values where lm gave the rescaled problem's answers (stop 47). Where every column is
    inside 1e±100 nothing changes.
    """
    return _units(np.asarray(abs(sp.csr_matrix(jm)).max(axis=0).toarray()).ravel())


def _polish(
    ev: ModelEvaluator,
    data: StackedData,
    pmap: ParameterMap,
    tol: Tolerances,
    out: SolverOutput,
) -> SolverOutput:
    """Go on from a converged lsmr trf result with the Schur-complement LM.

    lsmr solves each trust-region step inexactly, and in a flat valley trf's ftol test
    then fires far from the minimum (stop 42 sweep: NIST Lanczos2, Hahn1, MGH17, Nelson,
    Thurber on lsmr, success=True with LRE 0-3.9). The LM's exact Schur-complement
    steps, in O(K) as lsmr's, finish them; at a true minimum it stops within a few
    Jacobians. Its result is taken only where its chi2 is no higher.
    """
    budget = max(tol.max_iter - out.niter, 1)
    tol = dataclasses.replace(tol, max_iter=budget)
    lm = levenberg_marquardt(ev, data, pmap, tol, out.theta, out.units)
    if not (lm.cost <= out.cost):
        return out
    success = lm.success or lm.cost == out.cost
    message = f"{out.message}; then the Schur-complement LM from there: {lm.message}"
    return SolverOutput(lm.theta, lm.model, lm.cost, out.niter + lm.niter, success, message)


def residual_cosines(jm, r) -> tuple[np.ndarray, np.ndarray]:
    """``(|cos|, Jᵀr)``: the cosine between the residuals ``r`` and each column of the
    (sparse) Jacobian ``jm`` (0 at a minimum, and where ``r`` or the column is 0), and the
    gradient, whose sign tells which bound holds a parameter. The test of a minimum free
    of units (``MAX_COSINE``), for trf's gtol stops here and for every result in
    ``global_fit._not_stationary``.

    The columns are first divided by a power of 2 near their largest entry (exact): a
    column near 1e-160 squared to 0 and one near 1e160 to inf, and either read cosine 0,
    "a minimum", wherever the fit stopped (stop 47)."""
    jm = sp.csr_matrix(jm)
    big = np.asarray(abs(jm).max(axis=0).toarray()).ravel()
    unit = np.maximum(pow2_floor(big), 2.0**-1022)  # (P,) column scales, 1/unit finite
    jm = jm @ sp.diags(1.0 / unit)
    grad = np.asarray(jm.T @ r).ravel()
    rnorm = float(np.linalg.norm(r))
    cols = np.sqrt(np.asarray(jm.multiply(jm).sum(axis=0)).ravel())
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cos = np.nan_to_num(np.abs(grad) / (cols * rnorm), nan=0.0, posinf=0.0)
        return cos, grad * unit  # the sign of Jᵀr is kept where its size overflows


def run_solver(
    name: str, ev: ModelEvaluator, data: StackedData, pmap: ParameterMap, tol: Tolerances
) -> SolverOutput:
    """Dispatch to ``"lm"`` or ``"trf"``.

    Raises:
        ValueError: an unknown solver name.
    """
    if name == "lm":
        bounded = bool(np.isfinite(pmap.lower).any() or np.isfinite(pmap.upper).any())
        # MINPACK's unblocked QR of the dense Jacobian costs N·P² per iteration: worth it for
        # one data set (or shared parameters only), not for K data sets with local ones
        dense = data.n_datasets == 1 or pmap.n_local == 0
        if not bounded and dense and pmap.n_physical <= DENSE_MAX_PARAMETERS:
            return minpack(ev, data, pmap, tol)
        return levenberg_marquardt(ev, data, pmap, tol)
    if name == "trf":
        return trust_region(ev, data, pmap, tol)
    raise ValueError(unknown_solver(name))


# lmfit's method names (and scipy's least_squares methods) a ported script passes as
# solver=: "must be one of ('lm', 'trf')" named neither the one meant nor why the
# others are absent (stop 59)
_LMFIT_METHODS = {
    "leastsq": "lmfit's 'leastsq' (MINPACK's Levenberg-Marquardt) is solver='lm'",
    "least_squares": "lmfit's 'least_squares' (scipy's trust-region reflective) is solver='trf'",
    "dogbox": "scipy's 'dogbox' has no counterpart; its bounded neighbour is solver='trf'",
    # the methods' own names: told "least-squares solver only ... no counterpart" before
    "levenberg_marquardt": "Levenberg-Marquardt is solver='lm'",
    "marquardt": "Levenberg-Marquardt is solver='lm'",
    "trust_region_reflective": "the trust-region reflective method is solver='trf'",
}


def unknown_solver(name: object) -> str:
    """The refusal of an unknown ``solver=``, with the one meant where it can tell.

    Example:
        >>> unknown_solver("leastsq")
        "solver must be one of ('lm', 'trf'), got 'leastsq': lmfit's 'leastsq' (MINPACK's Levenberg-Marquardt) is solver='lm'"
    """
    head = f"solver must be one of {SOLVERS}, got {name!r}"
    if not isinstance(name, str):
        return head
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in SOLVERS:
        # ' lm' was told "solver names are lower case" (stop 59 review)
        why = "lower case" if name.strip() == name else "without spaces"
        if name.strip() != name and name.strip() != name.strip().lower():
            why = "lower case, without spaces"
        return f"{head}: solver names are {why}; pass solver={key!r}"
    if key in _LMFIT_METHODS:
        return f"{head}: {_LMFIT_METHODS[key]}"
    return (
        f"{head}; tying.fit minimises the sum of squared residuals with a least-squares "
        f"solver only: lmfit's scalar and global minimisers (nelder, powell, lbfgsb, "
        f"differential_evolution, emcee, ...) have no counterpart here"
    )
