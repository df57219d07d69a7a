"""Profile-likelihood confidence intervals of a global fit (``lmfit.conf_interval``).

The parameter is held at trial values and every other parameter is refitted; the χ²
of each refit against the best χ² gives a probability by lmfit's F-test
``F.cdf((χ²/χ²_best - 1)·nfree, 1, nfree)``, and the interval ends are where it
reaches ``erf(σ/√2)``. The refits honour bounds and fixed parameters. An end past a
bound of the parameter, or where the profile levels off below the level, is ``±inf``
(as in lmfit), with a :class:`~tying.fit.FitWarning` naming it; an end whose refit
failed, or that ``max_steps`` did not reach, is NaN, with a warning, never a plausible
number (an end past the budget is not at infinity). A result that is not a
success, has no covariance or no degree of freedom is refused, as for the bands
(:mod:`tying.fit.uncertainty`).

(Each function carries a runnable example.)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import optimize, special, stats

from tying.fit import jacobian as jac_mod
from tying.fit import schur
from tying.fit.diagnostics import column_scale
from tying.fit.equality import ValueEquality
from tying.fit.lmfit_idioms import literal, refuse_conf_interval_keywords
from tying.fit.model import ModelError, ModelEvaluator
from tying.fit.result_argument import require_result
from tying.fit.roles import ParameterMap
from tying.fit.solvers import FitWarning, Tolerances, levenberg_marquardt
from tying.fit.uncertainty import FitContext, _require, _sigma, probabilities_advice

if TYPE_CHECKING:
    from tying.fit.result import FitResult

#: a profile refit is converged when its Gauss-Newton step would lower χ² by less than
#: this part of the χ² rise at 1 σ (χ²_best/nfree): the probability is then exact to it
REFIT_DECREASE = 1e-6
#: a profile refit whose χ² lies below the best fit's by more than this part of the rise
#: at 1 σ shows that the fit was not at its minimum: every interval would be measured
#: from a wrong χ² (a smaller dip is rounding, or convergence noise, and reads as 0)
BETTER_MINIMUM = 1e-3
#: the refits' own stopping tests, at least this tight whatever the fit used
REFIT_TOL = 1e-10
#: how many times a failed profile step is retried halfway back
HALVINGS = 4
#: refits across a gap where the profile came down between two steps (review 62)
HUMP_REFITS = 16
#: show a progress bar (progress=None) from this many profile directions (2 per parameter)
PROGRESS_FROM = 10


@dataclasses.dataclass(eq=False)  # == by value: equality.py
class ProfileInterval(ValueEquality):
    """The profile-likelihood confidence interval of one fitted parameter.

    Attributes:
        name: the physical parameter (``"center"``, ``"zero[xray]"``, ``"amplitude[3]"``).
        best: its best-fit value.
        stderr: its standard error (the first step of the profile search).
        sigmas: the levels, in σ, ascending.
        probabilities: ``erf(σ/√2)`` for each level.
        lower, upper: the interval ends, one per level; ``-inf`` / ``inf`` where the
            profile does not reach the level before the parameter's bound or before
            it levels off (lmfit's ``-inf`` / ``inf``), NaN where a refit failed or
            ``max_steps`` ran out before the level (lmfit's maxiter gives ±inf there).
        message: "" when every end was found, else why some are inf or NaN.
        profile: ``(m, 2)`` the values tried and their refitted χ², by value.
        nfits: how many refits were run.
    """

    name: str
    best: float
    stderr: float
    sigmas: tuple[float, ...]
    probabilities: tuple[float, ...]
    lower: np.ndarray
    upper: np.ndarray
    message: str
    profile: np.ndarray
    nfits: int

    def as_lmfit(self) -> list[tuple[float, float]]:
        """The interval as one entry of ``lmfit.conf_interval``'s output.

        Returns:
            ``[(p_k, lower_k), ..., (p_1, lower_1), (0.0, best), (p_1, upper_1), ...]``.
        """
        lows = [(p, float(v)) for p, v in zip(self.probabilities, self.lower)][::-1]
        ups = [(p, float(v)) for p, v in zip(self.probabilities, self.upper)]
        return lows + [(0.0, self.best)] + ups

    def __str__(self) -> str:
        ends = "  ".join(
            f"{s:g}σ: [{lo:.6g}, {hi:.6g}]"
            for s, lo, hi in zip(self.sigmas, self.lower, self.upper)
        )
        return f"{self.name} = {self.best:.8g}  {ends}" + (
            f"  ({self.message})" if self.message else ""
        )


# -- profile-likelihood intervals ---------------------------------------------------------


def _gauss_newton_drop(
    pm: ParameterMap, theta: np.ndarray, r: np.ndarray, jw: np.ndarray, pinned: int | None
) -> float:
    """How much a Gauss-Newton step from ``theta`` lowers χ² (0 when singular there).

    Parameters held on a bound by an outward gradient, and ``pinned``, do not move.
    """
    # on columns scaled by powers of 2 (exact; the step is scaled back): at x, y near 1e150
    # JᵀJ overflowed and every profile point warned "overflow encountered in matmul"
    cs = column_scale(jw, pm)  # (n_physical,)
    h, g = jac_mod.normal_blocks(jw / cs[pm.index][:, None, :], r)
    grad = jac_mod.gradient(g, pm)
    held = ((theta <= pm.lower) & (grad > 0)) | ((theta >= pm.upper) & (grad < 0))
    if pinned is not None:
        held[pinned] = True
    try:
        step = schur.solve(h, g, pm.index, pm.n_global, 0.0, held)
    except np.linalg.LinAlgError:
        return 0.0  # singular here: the cosine test of a minimum is all there is
    step = (np.clip(theta + step / cs, pm.lower, pm.upper) - theta) * cs
    s = step[pm.index]  # (K, P)
    return float(-2 * (np.sum(g * s) + 0.5 * np.sum(s * (h @ s[:, :, None])[:, :, 0])))


def _check_minimum(result: FitResult, what: str) -> None:
    """Refuse a best fit that stopped short of its minimum by a visible part of 1 σ.

    Every profile probability is measured from the best χ²: a fit stopped by a loose
    ``ftol`` (``ftol=1e-2``: 0.36 of the χ² rise at 1 σ above its minimum, reported a
    success) shifted the intervals by a third of a standard error with no sign.
    """
    ev = result._context.ev
    pm, data = result._pmap, result._data
    r = jac_mod.residuals(result._model, data)
    counts = (ev.nfev, ev.njev)
    try:
        jw = jac_mod.weighted(ev.jacobian(result.x), data)
    finally:
        ev.nfev, ev.njev = counts
    drop = _gauss_newton_drop(pm, result.x, r, jw, None)
    rise = result.chi2 / result._rank_dof
    if drop > BETTER_MINIMUM * rise:
        raise ValueError(
            f"{what} measures each refit's chi2 from the best fit's, but the fit stopped "
            f"{drop / rise:.3g} of the chi2 rise at 1 sigma above its minimum (a Gauss-Newton "
            f"step lowers chi2 = {result.chi2:.10g} by {drop:.3g}); run the fit with tighter "
            f"ftol/xtol (the defaults are 1e-10), or start it from result.values"
        )


def _minpack_pinned(ev: ModelEvaluator, data, pm: ParameterMap, tol: Tolerances):
    """MINPACK ``lmder`` over every physical parameter but the one held (lower == upper)."""
    from scipy.optimize import leastsq

    from tying.fit.solvers import SolverOutput

    held = np.flatnonzero(pm.lower == pm.upper)
    free = np.setdiff1d(np.arange(pm.n_physical), held)
    theta = pm.x0.copy()

    def full(z):
        th = theta.copy()
        th[free] = z
        return th

    def fun(z):
        r = jac_mod.residuals(ev.predict(full(z)), data)[data.mask]
        return np.where(np.isfinite(r), r, 1e150)

    def jac(z):
        jw = jac_mod.weighted(ev.jacobian(full(z)), data)
        return jac_mod.assemble(jw, data, pm)[:, free].toarray()

    if not free.size:  # nothing else to fit: the χ² at the held value
        model = ev.predict(theta)
        return SolverOutput(theta, model, 0.0, 0, True, "no other parameter")
    with np.errstate(all="ignore"):
        z, _, info, _, ier = leastsq(
            fun, theta[free], Dfun=jac, full_output=True, ftol=tol.ftol, xtol=tol.xtol,
            gtol=tol.gtol, maxfev=tol.max_iter,
        )  # fmt: skip
    th = full(z)
    ok = ier in (1, 2, 3, 4, 6, 7, 8)
    message = "MINPACK lmder converged" if ok else f"MINPACK lmder stopped (info={ier})"
    return SolverOutput(th, ev.predict(th), 0.0, int(info["nfev"]), ok, message)


class _Profile:
    """Refits of a result with one physical parameter held, and their probabilities."""

    def __init__(self, result: FitResult, p: int):
        self.result = result
        self.ctx: FitContext = result._context
        self.p = p
        self.name = result.physical_names[p]
        # n - rank J: the held fit's nfree beside a null direction (review 61: nfree gave
        # intervals 2 % wider than the held fit's and lmfit's on it)
        self.nfree = result._rank_dof
        self.best_chi2 = result.chi2
        self.fits: dict[float, tuple[float, np.ndarray]] = {}  # value -> (chi2, theta)
        self.failure = ""  # the first refit that failed, in words

    def refit(self, value: float) -> float | None:
        """χ² of the fit with the parameter held at ``value`` (None when the refit failed)."""
        if value in self.fits:
            return self.fits[value][0]
        from tying.fit.global_fit import _not_stationary

        ctx, res = self.ctx, self.result
        ev, data = ctx.ev, ctx.ev.data
        pm = copy.copy(res._pmap)
        pm.lower, pm.upper = pm.lower.copy(), pm.upper.copy()
        pm.lower[self.p] = pm.upper[self.p] = value
        # start from the refit nearest in value on the way from the best fit (the best fit
        # for the first): a refit farther out can sit on a plateau (Nelson's b2 < 0 sends
        # b3 to where exp(-b3·x) underflows) that a start from it would carry inward
        best = float(res.x[self.p])
        inward = [v for v in self.fits if min(best, value) <= v <= max(best, value)]
        near = min(inward, key=lambda v: abs(v - value), default=None)
        start = res.x if near is None else self.fits[near][1]
        pm.x0 = np.clip(start, pm.lower, pm.upper)
        pm.x0[self.p] = value
        tol = ctx.tol
        tol = Tolerances(
            min(tol.ftol, REFIT_TOL),
            min(tol.xtol, REFIT_TOL),
            min(tol.gtol, REFIT_TOL),
            tol.max_iter,
        )
        counts = (ev.nfev, ev.njev, ev.n_nonfinite, ev.nonfinite_theta)
        # as the fit itself: MINPACK for a small problem with no other bound (lmfit refits
        # with it too; our LM stalled in Rat43's curved valley); then our LM from the same
        # start, and once more from where the last try ended (fresh damping)
        others = np.delete(np.isfinite(pm.lower) | np.isfinite(pm.upper), self.p)
        dense = (data.n_datasets == 1 or pm.n_local == 0) and pm.n_physical <= 51
        tries = [(_minpack_pinned, True)] if dense and not others.any() else []
        tries += [(levenberg_marquardt, True), (levenberg_marquardt, False)]
        start, out = pm.x0.copy(), None
        try:
            for solve, from_start in tries:
                if not from_start and out is None:
                    continue  # the last try raised: nothing to go on from
                pm.x0 = start if from_start else out.theta.copy()
                try:  # far out, χ² can overflow: that is judged below, not warned about
                    with np.errstate(all="ignore"):
                        out = solve(ev, data, pm, tol)
                    r = jac_mod.residuals(out.model, data)
                    jw = jac_mod.weighted(ev.jacobian(out.theta), data)
                except ModelError as err:
                    out, why = None, f"model_fn failed: {err}"
                    continue
                chi2 = float(np.sum(r * r))
                why = "" if out.success and np.isfinite(chi2) else out.message
                why = why or _not_stationary(data, pm, out.theta, r, jw)
                why = why or self._not_converged(pm, out.theta, r, jw)
                if not why:
                    break
            walls = ev.n_nonfinite - counts[2]
        finally:
            ev.nfev, ev.njev, ev.n_nonfinite, ev.nonfinite_theta = counts
        if why:
            if walls:
                why += f"; model_fn returned NaN or inf at {walls} of the points it tried"
            return self._failed(value, why)
        if chi2 < self.best_chi2 - BETTER_MINIMUM * self.best_chi2 / self.nfree:
            labels = res._pmap.labels_for(res.dataset_names)
            shown = ", ".join(f"{n}={v:.8g}" for n, v in list(zip(labels, out.theta))[:8])
            raise ValueError(
                f"the profile refit of {self.name!r} at {value:.10g} found chi2 = {chi2:.10g}, "
                f"below the best fit's {self.best_chi2:.10g}: the fit was not at its minimum, "
                f"so no interval can be measured from it; fit again starting from there "
                f"({shown}{', ...' if len(out.theta) > 8 else ''})"
            )
        self.fits[value] = (chi2, out.theta.copy())
        return chi2

    def _not_converged(self, pm: ParameterMap, theta: np.ndarray, r, jw) -> str:
        """Why the refit at ``theta`` is not a minimum to the profile's precision, or ""."""
        drop = _gauss_newton_drop(pm, theta, r, jw, self.p)
        allowed = REFIT_DECREASE * self.best_chi2 / self.nfree
        if not drop > allowed:
            return ""
        return (
            f"the refit stopped where a Gauss-Newton step still lowers chi2 by {drop:.3g} "
            f"(more than {allowed:.3g}, {REFIT_DECREASE:g} of the rise at 1 sigma)"
        )

    def _failed(self, value: float, why: str) -> None:
        self.failure = (
            f"the refit at {self.name} = {value:.10g} failed ({why}); if another parameter "
            f"runs off there, bound it (bounds=) so that each refit has a minimum"
        )
        return None

    def prob(self, chi2: float) -> float:
        """lmfit's F-test: probability that the held value is excluded."""
        dchi = chi2 / self.best_chi2 - 1.0
        return float(stats.f.cdf(dchi * self.nfree, 1, self.nfree))

    def excess(self, chi2: float, tail: float) -> float:
        """Signed distance of ``chi2`` from a level's two-sided tail, on the log scale.

        ``log sf(F) - log tail``: positive inside the interval, negative outside; the
        survival function keeps its digits at 5 σ and beyond, where ``cdf`` is 1 - tiny.
        """
        dchi = chi2 / self.best_chi2 - 1.0
        return float(stats.f.logsf(max(dchi, 0.0) * self.nfree, 1, self.nfree) - np.log(tail))


def _side(prof: _Profile, direction: int, tails: list[float], max_steps: int):
    """One end per level on one side: values, and the note on those not found.

    Steps of one standard error, doubling after the fourth: 3 σ of a near-linear
    parameter in 3-4 refits, a long tail in a few more. A refit that fails (no minimum
    there: Rat43's b4 runs to 0 past b3 = 0.4) is retried halfway back, up to
    ``HALVINGS`` times, so that a level reached before the failing region is still
    bracketed.
    """
    res = prof.result
    best = float(res.x[prof.p])
    step = float(res._stderr_x[prof.p])
    bound = float((res._pmap.upper if direction > 0 else res._pmap.lower)[prof.p])
    ends = np.full(len(tails), np.nan)
    points = [(best, res.chi2)]  # (value, chi2) outward from the best fit
    level = 0  # the first level not yet bracketed
    last = 0.0
    k = halvings = 0
    ceiling = None  # the nearest value whose refit failed
    humped = False  # the profile came down once: the gap was sampled
    while True:
        if ceiling is None:
            k += 1
            if k > max_steps:
                # the budget ran out: the end lies further out, not at infinity. ±inf (as
                # lmfit's maxiter) read as "the data do not bound it", the lower 3 σ end
                # of a well-determined k -inf for 0.646 with max_steps=2 (stop 59)
                return ends, [
                    f"{max_steps} steps of the profile of {prof.name} toward its "
                    f"{'upper' if direction > 0 else 'lower'} end did not reach "
                    f"{1 - tails[level]:.4f} probability ({_levels(tails[level:], 'NaN')}, "
                    f"not measured); raise max_steps"
                ]
            value = best + direction * step * (k if k <= 4 else 4 * 2.0 ** (k - 4))
            value = min(value, bound) if direction > 0 else max(value, bound)
        else:
            value = 0.5 * (points[-1][0] + ceiling)
        chi2 = prof.refit(value)
        if chi2 is None:
            if halvings == HALVINGS or value == points[-1][0]:
                return ends, [prof.failure]
            ceiling, halvings = value, halvings + 1
            continue
        new = [(value, chi2)]
        drop = REFIT_DECREASE * prof.best_chi2 / prof.nfree
        if ceiling is None and not humped and len(points) >= 2 and chi2 < points[-1][1] - drop:
            # the profile came down between steps (another branch past a hump: a·exp(-k·x) + c
            # through a = 0 to k < 0): a level crossed on the hump lies between the steps.
            # Review 62: the doubling step jumped it, and the 3 σ end lmfit finds at a =
            # 0.337 read "the data do not bound it", -inf
            humped = True
            new = _hump(prof, points[-2], points[-1], new[0])
            del points[-1]
        for point in new:
            points.append(point)
            while level < len(tails) and prof.excess(point[1], tails[level]) <= 0:
                ends[level] = _root(prof, points[-2], points[-1], tails[level])
                if np.isnan(ends[level]):
                    return ends, [prof.failure]
                level += 1
            if level == len(tails):
                return ends, []
        excess = prof.excess(chi2, tails[-1])
        if ceiling is not None:
            if halvings == HALVINGS:
                return ends, [prof.failure]
            halvings += 1
            continue
        if value == bound:
            ends[level:] = direction * np.inf
            return ends, [
                f"{prof.name} reaches its {'upper' if direction > 0 else 'lower'} bound "
                f"{bound:g} at {prof.prob(chi2):.4f} probability, below "
                f"{1 - tails[level]:.4f} ({_levels(tails[level:])})"
            ]
        if k > 4 and abs(excess - last) <= 1e-5 * max(abs(excess), 1e-12):
            ends[level:] = direction * np.inf
            return ends, [
                f"the profile of {prof.name} levels off at {prof.prob(chi2):.4f} probability "
                f"({prof.name} = {value:.6g}), below {1 - tails[level]:.4f}: the data do not "
                f"bound it on its {'upper' if direction > 0 else 'lower'} side "
                f"({_levels(tails[level:])})"
            ]
        last = excess


def _hump(prof: _Profile, before, top, after) -> list[tuple[float, float]]:
    """Refits across the gap ``before`` .. ``after`` around ``top``, outward, ``after`` last.

    The profile rose from ``before`` to ``top`` and fell to ``after``: its highest point, where
    a level may be crossed, lies between ``before`` and ``after``. Up to ``HUMP_REFITS`` values
    a standard error apart (or evenly spaced across a wider gap) bracket it.
    """
    a, b = before[0], after[0]
    step = float(prof.result._stderr_x[prof.p])
    n = int(min(HUMP_REFITS, max(2, np.ceil(abs(b - a) / step))))
    points = [top, after]
    for v in a + (b - a) * np.arange(1, n) / n:
        chi2 = prof.refit(float(v))
        if chi2 is not None and float(v) != top[0]:
            points.append((float(v), chi2))
    return sorted(points, key=lambda p: abs(p[0] - a))


def _levels(tails: list[float], value: str = "±inf") -> str:
    sig = [float(np.sqrt(2) * special.erfcinv(t)) for t in tails]
    return "level(s) " + ", ".join(f"{s:.4g} σ" for s in sig) + f" set to {value}"


def _root(prof: _Profile, inside, outside, tail: float) -> float:
    """The value between two profile points where the probability crosses the level."""
    failed = []

    def f(v: float) -> float:
        chi2 = prof.refit(v)
        if chi2 is None:
            failed.append(v)
            raise _RefitFailed
        return prof.excess(chi2, tail)

    a, b = inside[0], outside[0]
    fa, fb = prof.excess(inside[1], tail), prof.excess(outside[1], tail)
    if fb == 0:
        return b
    try:
        root = float(
            optimize.brentq(
                lambda v: f(v) if v not in (a, b) else (fa if v == a else fb),
                min(a, b),
                max(a, b),
                xtol=1e-7 * max(prof.result._stderr_x[prof.p], 1e-300),
                rtol=1e-12,
            )
        )
        miss = abs(f(root)) if root not in (a, b) else abs(fa if root == a else fb)
    except _RefitFailed:
        return np.nan
    if miss > 1e-4:
        # Brent's method also "converges" onto a jump of the profile, where the level is
        # never reached: that end is not a crossing (stop 32 review, NIST Nelson b2)
        prof.failure = (
            f"the profile of {prof.name} jumps across the level near {root:.10g} (the "
            f"log-probability there misses it by {miss:.3g}): two refits nearby found "
            f"different minima; bound the other parameters so that the profile is one "
            f"branch"
        )
        return np.nan
    return root


def _local_labels(result: FitResult) -> dict[str, str]:
    """``{"a[<data set name>]": "a[<index>]"}``: a local value as ``result.table()`` labels it.

    The table names a data set's local value by the data set's name, ``physical_names`` by
    its index; either is a name ``conf_interval`` reads.
    """
    local = result._pmap.local_names
    return {f"{n}[{d}]": f"{n}[{i}]" for i, d in enumerate(result.dataset_names) for n in local}


def _whole_role(result: FitResult, name: str) -> str | None:
    """``'per_group, one value per group'``, ``'local, ...'`` or None for any other name."""
    pmap = result._pmap
    if pmap.roles.get(name) == "per_group":
        return "per_group, one value per group"
    if name in pmap.local_names:
        return "local, one value per data set"
    return None


def _whole_name_fix(result: FitResult, name: str, held: list[str], asked: list[str]) -> str:
    """``; 'w' is per_group ...: pass names=[...]`` for a per-group or local name given whole.

    lmfit names each copy; a user asking for ``'w'`` means every value of it. Before stop 62
    the refusal said "did you mean 'w[B]'?", one group of two picked by difflib. The names
    written are all of ``asked``, each whole name in it written out (review 62: for
    ``['cen', 'w']`` the advice was ``names=['w[A]', 'w[B]']``, and followed it dropped cen).
    """
    role = _whole_role(result, name)
    if role is None:
        return ""

    def each(m: str) -> list[str]:
        return [p for p in result.physical_names if p.startswith(f"{m}[") and p not in held]

    if not each(name):
        return f"; {name!r} is {role}, and none of its values was fitted"
    pieces: list[str] = []  # list literals and comprehensions, joined by +
    plain: list[str] = []
    seen: set[str] = set()

    def flush() -> None:
        if plain:
            pieces.append(literal(list(plain)))
            plain.clear()

    for m in asked:
        whole = m not in result.physical_names and _whole_role(result, m) is not None
        full = each(m) if whole else [m]
        values = [v for v in full if v not in seen]  # each once: a name twice is refused
        seen.update(values)
        some_held = any(h.startswith(f"{m}[") for h in held)  # a comprehension would ask them
        if whole and len(values) > 12 and values == full and not some_held:
            flush()
            pieces.append(f"[n for n in result.physical_names if n.startswith({m + '['!r})]")
        else:
            plain.extend(values)
    flush()
    return f"; {name!r} is {role}: name each, names={' + '.join(pieces)}"


class _RefitFailed(Exception):
    pass


def conf_interval(
    result: FitResult,
    names: Sequence[str] | None = None,
    sigmas: Sequence[float] = (1, 2, 3),
    *,
    max_steps: int = 30,
    progress: bool | None = None,
    **lmfit: object,
) -> dict[str, ProfileInterval]:
    """Profile-likelihood confidence intervals of fitted parameters (``lmfit.conf_interval``).

    For each parameter, on each side, the parameter is held at values one standard
    error apart (then doubling) and every other parameter is refitted (bounds and
    fixed parameters honoured, each refit started from the nearest one) until the
    F-test probability passes the highest level; each end is then found by Brent's
    method to ``1e-7`` standard errors (lmfit's ``toms748`` stops at ``5e-5`` of the
    value). Refits use the Levenberg-Marquardt solver of ``solver="lm"``.

    Args:
        result: a converged :class:`~tying.fit.FitResult` with standard errors.
        names: physical parameter names (``result.physical_names``: ``"center"``,
            ``"zero[xray]"``, ``"amplitude[3]"``), or a local value as ``result.table()``
            labels it, by its data set's name (``"amplitude[run 3]"``; the answer is keyed
            by the name given); default the global ones (shared and per-group,
            ``result.covariance_names``).
        sigmas: the levels in σ (1 to 10), converted to probabilities ``erf(σ/√2)``.
        max_steps: the most profile steps per side before an end is given up (NaN, not
            measured; lmfit's ``maxiter`` reads ±inf there, as if the data did not bound it).
        progress: a progress bar (rich) over the profiles; None shows one from
            ``PROGRESS_FROM`` profile directions on, when stderr is a terminal.
        **lmfit: refused: lmfit's keywords (``maxiter``, ``p_names``, ``trace``,
            ``verbose``, ``prob_func``, ``min_rel_change``) are a ``TypeError`` naming
            ours or saying there is none. lmfit's ``maxiter=m`` takes ``m + 1`` steps of
            one stderr (where the stderr is below ``|value|``), which reach as far as
            ``max_steps=4 + ceil(log2((m + 1)/4))`` (``m + 1`` for ``m`` ≤ 3).

    Returns:
        ``{name: ProfileInterval}``, in the order of ``names``.

    Raises:
        ValueError: a result that is not a success, has no covariance or no degree of
            freedom, or has chi2 = 0; an unknown or repeated name; a name that is one
            data set's index and another's name (data sets named ``"1"``, ``"0"``); sigma outside
            [1, 10]; a refit that finds a lower chi2 than the best fit (the fit was
            not at its minimum); a local slot the fit held at its start (its data
            set's model does not read it; ``names=None`` leaves such slots out).
        TypeError: names or sigmas of the wrong type.

    Warns:
        FitWarning: an end set to ±inf (a bound or a flat profile) or NaN (a failed
            refit, or ``max_steps`` run out), naming the parameter, the side and the level.

    Example:
        >>> import numpy as np
        >>> from tying.fit import GlobalFit
        >>> rng = np.random.default_rng(3)
        >>> x = np.linspace(0, 2, 40)
        >>> data = [(x, 2.0 * np.exp(-1.5 * x) + rng.normal(0, 0.02, 40), 0.02)]
        >>> res = GlobalFit(lambda x, a, k: a * np.exp(-k * x), data, shared=["a", "k"],
        ...                 init={"a": 1.0, "k": 1.0}).run()
        >>> ci = res.conf_interval(["k"], sigmas=(1,))["k"]
        >>> bool(ci.lower[0] < res.values["k"] < ci.upper[0]), ci.message
        (True, '')
        >>> width = (ci.upper[0] - ci.lower[0]) / 2
        >>> bool(abs(width / res.stderr["k"] - 1) < 0.1)   # near-linear: about one stderr
        True
    """
    what = "result.conf_interval"
    # lmfit's conf_interval(minimizer, result) pair, first: its p_names advice would not work
    require_result(result, what, names, lmfit.get("p_names"), sigmas)
    refuse_conf_interval_keywords(lmfit)
    _require(result, what)
    data = result._data
    scale = float(np.linalg.norm((data.y * data.weight)[data.mask]))
    if not np.sqrt(result.chi2) > 1e-10 * scale:
        # chi2 = 3e-30 of an exact line is rounding: its ratios to refits' chi2 are noise
        raise ValueError(
            f"{what} compares each refit's chi2 with the best fit's, which is "
            f"{result.chi2:.3g}: the fit is exact (residuals at rounding level, below 1e-10 "
            f"of the weighted data), so there is no profile to measure"
        )
    _check_minimum(result, what)
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, (Sequence, np.ndarray)):
        one = (
            f": pass sigmas=({literal(sigmas)},)"
            if isinstance(sigmas, (int, float, np.integer, np.floating))
            and not isinstance(sigmas, (bool, np.bool_))
            else ""
        )  # one level: its tuple (stop 62; the message showed (1, 2, 3) alone)
        raise TypeError(
            f"sigmas must be a list of levels in σ, e.g. (1, 2, 3); got {sigmas!r}{one}"
        )
    fix = probabilities_advice(sigmas, sigmas_too=True)
    if fix and min(float(s) for s in sigmas) < 1:  # lmfit's probabilities: advise them all
        raise ValueError(
            f"each of sigmas must be between 1 and 10 σ, got {list(sigmas)!r}; lmfit reads a "
            f"sigma below 1 as a probability, here each is a number of σ (sigma = "
            f"sqrt(2)·erfinv(p)): {fix}"
        )
    levels = sorted({_sigma(s, "each of sigmas") for s in sigmas})
    if not levels:
        raise ValueError("sigmas is empty; give the levels in σ, e.g. (1, 2, 3)")
    if isinstance(max_steps, (bool, np.bool_)) or not (
        isinstance(max_steps, (int, np.integer)) and max_steps > 0
    ):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    physical = result.physical_names
    # a local slot its data set's model does not read is held at its start (standard error
    # NaN, as lmfit's vary=False): its refits stepped by NaN, ran max_iter at a NaN value
    # and reported "the refit at b[1] = nan failed (max_iter=2000 reached ...)" (stop 39)
    held = [n for n, s in zip(physical, result._stderr_x) if np.isnan(s)]
    # the default names are physical ones; a name given may be a table label (below)
    labels = {} if names is None else _local_labels(result)
    if names is None:
        names = [n for n in list(result.covariance_names) or list(physical) if n not in held]
    elif isinstance(names, str) or not isinstance(names, (Sequence, np.ndarray)):
        one = f": pass names=[{names!r}]" if isinstance(names, str) else ""
        raise TypeError(
            f"names must be a list of parameter names, e.g. ['center']; got {names!r}{one}"
        )
    # a local value named as result.table() labels it, a[<data set name>], is a[<index>]
    # (a[s1] for data set 's1' was refused with "did you mean 'a[1]'", another data set's
    # value, before stop 58)
    names = list(names)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"names must be str (physical parameter names), got {n!r}")
        if n not in physical and n not in labels:
            close = difflib.get_close_matches(n, physical + list(labels), n=1)
            fixed = " (it is fixed)" if n in result._pmap.fixed_names else ""
            shown = f" (or a local one as result.table() shows it, {next(iter(labels), '')!r})"
            whole = _whole_name_fix(result, n, held, names)
            raise ValueError(
                f"names has {n!r}{fixed}, which is not a fitted parameter; the fitted "
                f"parameters are {physical[:10]}{' ...' if len(physical) > 10 else ''}"
                f"{shown if labels else ''}"
                + (whole or (f"; did you mean {close[0]!r}?" if close else ""))
            )
        if n in physical and labels.get(n, n) != n:
            k = int(labels[n][labels[n].rindex("[") + 1 : -1])
            raise ValueError(
                f"names has {n!r}, which is ambiguous: physical_names call data set index "
                f"{n[n.rindex('[') + 1 : -1]}'s value {n!r}, and result.table() labels data "
                f"set {result.dataset_names[k]!r} (index {k}, physical {labels[n]!r}) {n!r} "
                f"too; name the data sets so that no name is another data set's index "
                f"(e.g. 'run 1' for '1'), with no refit: result = dataclasses.replace(result, "
                f"dataset_names=[f'run {{n}}' for n in result.dataset_names])"
            )
    asked, names = names, [labels.get(n, n) for n in names]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        both = {a for a, n in zip(asked, names) if n == dup}
        also = f" (as {' and '.join(map(repr, sorted(both)))})" if len(both) > 1 else ""
        raise ValueError(f"names lists {dup!r} twice{also}")
    not_fitted = [n for n in names if n in held]
    # named as asked: "names has 'a[0]'" for a[early] named a name the caller never wrote
    as_asked = dict(zip(names, asked))
    cov = result._cov_logical
    idx = result._pmap.index
    # held slots have a zero covariance row; a NaN one is a fitted parameter whose error
    # the fit could not give (b**2 at its floor, stop 56), which was called "held" too
    no_error = [
        n
        for n in not_fitted
        if cov is not None
        and not all(cov[k, j, j] == 0.0 for k, j in zip(*np.nonzero(idx == physical.index(n))))
    ]
    if no_error:
        raise ValueError(
            f"names has {', '.join(repr(as_asked[n]) for n in no_error)}, fitted but with a "
            f"NaN standard error (the fit's message says why: a derivative that vanishes at "
            f"the fitted value, or a singular Jacobian), and a profile steps by the standard "
            f"error, so it has none; reparametrise so that the model changes at first order "
            f"in it (fit c = b**2 with bounds={{'c': (0, None)}}), or leave it out of names"
        )
    if not_fitted:
        raise ValueError(
            f"names has {', '.join(repr(as_asked[n]) for n in not_fitted)}, held at its start "
            f"value by the fit, not fitted: the model of its data set does not change with it "
            f"(the fit's message says so; standard error NaN), so it has no profile; leave it "
            f"out of names"
        )
    if not names:
        raise ValueError("names is empty; give the parameters to profile")
    tails = [float(special.erfc(s / np.sqrt(2.0))) for s in levels]
    show = (
        progress
        if progress is not None
        else 2 * len(names) >= PROGRESS_FROM and sys.stderr.isatty()
    )
    out: dict[str, ProfileInterval] = {}
    with _progress(bool(show), 2 * len(names)) as advance:
        for label, n in zip(asked, names):
            prof = _Profile(result, physical.index(n))
            prof.name = label  # messages name it as it was asked for
            lo, notes_lo = _side(prof, -1, tails, max_steps)
            advance()
            hi, notes_hi = _side(prof, +1, tails, max_steps)
            advance()
            message = "; ".join(notes_lo + notes_hi)
            if message:
                warnings.warn(f"conf_interval: {message}", FitWarning, stacklevel=3)
            profile = np.array(sorted((v, c) for v, (c, _) in prof.fits.items()))
            out[label] = ProfileInterval(
                name=label,
                best=float(result.x[prof.p]),
                stderr=float(result._stderr_x[prof.p]),
                sigmas=tuple(levels),
                probabilities=tuple(1.0 - t for t in tails),
                lower=lo,
                upper=hi,
                message=message,
                profile=profile.reshape(-1, 2),
                nfits=len(prof.fits),
            )
    return out


class _progress:
    """A rich progress bar over the profile directions, or nothing."""

    def __init__(self, show: bool, total: int):
        self.show, self.total = show, total

    def __enter__(self):
        if not self.show:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = Progress(
            "[bold]profile refits", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self._bar.__enter__()
        task = self._bar.add_task("profiles", total=self.total)
        return lambda: self._bar.update(task, advance=1)

    def __exit__(self, *exc):
        if self.show:
            return self._bar.__exit__(*exc)
        return False
