"""Standard errors of a fit with a null direction or a pair the data barely tell apart.

Two routes of :meth:`GlobalFit._result` read the covariance from the SVD of the Jacobian
(:mod:`tying.fit.null_space`) rather than from ``(JᵀJ)⁻¹``:

* a pair the inverse names as (almost) fully correlated (:func:`estimable`,
  :func:`pair_message`): the message now says what is true of it. Where the SVD finds no
  null direction (``a·x + b·(x + 1e-6·x²) + c``) the pair is *strongly correlated*, its
  errors exact to the digits the SVD keeps; "meaningless" was said of errors that match
  the exact ones to 1e-5 (review 60). "Meaningless" is kept for a pair along a true null
  direction.
* an inverse singular to rounding (:func:`singular_route`): every error was NaN and every
  value "arbitrary, not fitted", which depended on rounding: ``amp·exp(-(x - cen)/wid) +
  off`` (``amp``, ``cen`` local) under ``solver="lm"`` gave NaN for ``wid`` and ``off``,
  which ``trf`` and a fit holding ``cen`` give exactly, and a degree-9 shared polynomial
  (cond(J) = 1.3e10, no null direction) was refused where lmfit's ``leastsq`` gives
  errors within 0.4 % (review 60). Now the estimable parameters get their errors from the
  pseudo-inverse and only those along a null direction are NaN and named.
"""

from __future__ import annotations

import numpy as np

from tying.fit.diagnostics import _inflation
from tying.fit.null_space import estimable_covariance
from tying.fit.roles import ParameterMap


def estimable(jws, held, pmap: ParameterMap, cov_global: np.ndarray, cov_logical):
    """``(cov_global, cov_logical, var_logical, in_null, n_null)`` read from the SVD of J.

    The covariances are the pseudo-inverse throughout: every estimable combination (a
    prediction, a band ``J C Jᵀ``, an estimable parameter and its correlations) reads
    right from it. Mixing in the inverse's noise for the parameters along a null
    direction left bands next to a degenerate pair 35 % low (review 60). The variances
    ``var_logical`` of those parameters keep the inverse's numbers (meaningless, named by
    the degenerate pair's message); the others are the pseudo-inverse's. ``in_null`` is
    None where the SVD was not taken (past :data:`~tying.fit.null_space.MAX_DENSE`): the
    inputs come back as they were. ``n_null`` counts the null directions (0 where none).
    """
    var_logical = np.diagonal(cov_logical, axis1=1, axis2=2)
    found = estimable_covariance(jws, pmap.index, pmap.n_physical, held, count=True)
    if found is None:
        return cov_global, cov_logical, var_logical, None, 0
    full, in_null, n_null = found
    m, idx = pmap.n_global, pmap.index
    var_logical = np.where(in_null[idx], var_logical, np.diagonal(full)[idx])
    return full[:m, :m], full[idx[:, :, None], idx[:, None, :]], var_logical, in_null, n_null


def singular_route(jws, held, pmap: ParameterMap, h_cov: np.ndarray):
    """For an inverse singular to rounding: ``(cov_global, cov_logical, var_logical,
    in_null, inflation, n_null)`` from the SVD of J, or None where nothing is estimable there.

    ``var_logical`` is NaN along the null directions (``in_null``, as lmfit's NaN); the
    ``inflation`` (``var_ii·(JᵀJ)_ii`` from the pseudo-inverse, exact where no direction is
    null) is 0 there, so that only estimable parameters are named ill-conditioned.
    """
    found = estimable_covariance(jws, pmap.index, pmap.n_physical, held, count=True)
    if found is None or found[1].all():
        return None
    full, in_null, n_null = found
    m, idx = pmap.n_global, pmap.index
    cov_logical = full[idx[:, :, None], idx[:, None, :]]
    var_logical = np.where(in_null[idx], np.nan, np.diagonal(full)[idx])
    inflation = np.where(in_null, 0.0, _inflation(cov_logical, h_cov, pmap))
    return full[:m, :m], cov_logical, var_logical, in_null, inflation, n_null


def rank_scale(chi2: float, nfree: int, n_null: int, scale: float) -> tuple[float, str]:
    """``(scale, note)``: the covariance's scale ``χ²/(n - rank J)`` beside null directions.

    ``scale_covar=True`` divided χ² by ``nfree = n - p``, where a fit holding the redundant
    parameter(s) (the message says the estimable errors are "the same whichever of them is
    fixed") divides by ``n - (p - n_null)``: 1.9 % apart on a stderr of 30 points (stop 61;
    left alone at stop 60). The residual variance of a rank-deficient least-squares fit is
    ``χ²/(n - rank)``; ``nfree`` and ``redchi`` keep lmfit's ``n - nvarys``. ``scale`` (as
    computed) comes back where there is no null direction or nothing to scale.

    With ``nfree <= 0`` beside a null direction, ``n - rank`` can still be positive (4
    points, 4 parameters, one null direction: 1): the fit holding one of them scales by it,
    where ``scale`` (1, "no degree of freedom") left the estimable errors unscaled, as if
    σ were 1 (review 61: ``wid`` 0.919 for the held fit's 0.0597). Where ``n - rank <= 0``
    the scale is NaN: no degree of freedom to scale by.

    Example:
        >>> rank_scale(26.0, 26, 1, 1.0)
        (0.9629629629629629, 'scaled by chi2 / (ndata - rank) = chi2 / 27, not chi2 / nfree')
    """
    if n_null <= 0:
        return scale, ""
    dof = nfree + n_null
    if dof <= 0:
        return float("nan"), ""
    return chi2 / dof, f"scaled by chi2 / (ndata - rank) = chi2 / {dof}, not chi2 / nfree"


def null_names(in_null: np.ndarray, pmap: ParameterMap) -> str:
    """``'amp[dataset 0]', 'cen[dataset 0]', ...``: the parameters along a null direction."""
    names = [repr(pmap.labels[i]) for i in np.flatnonzero(in_null)]
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def pair_message(
    pair: str, found, cov_logical, in_null, inflation, pmap: ParameterMap
) -> tuple[str, str]:
    """``(message, warning)`` for the pair ``found`` (:func:`_pair_found`) of ``pair``.

    Along a null direction, or where the SVD was not taken (``in_null`` None): "fully
    correlated ... meaningless", as before. Otherwise the pair is strongly correlated, and
    its correlation (from the pseudo-inverse, which holds it to the digits it keeps) and
    the digits of its errors are given.
    """
    k, i, j, _ = found
    a, b = (int(pmap.index[k, s]) for s in (i, j))
    if in_null is None or in_null[a] or in_null[b]:
        return (
            f"{pair}: the data cannot tell them apart, so their standard errors are "
            f"meaningless; fix one of them or change their roles",
            pair,
        )
    var = np.diagonal(cov_logical[k])
    corr = float(cov_logical[k, i, j] / np.sqrt(var[i] * var[j]))
    gap = 1.0 - min(abs(corr), 1.0)
    shown = f"1 - {gap:.2g}" if gap < 1e-4 else f"{abs(corr):.6f}"
    shown = "1 - <1e-16" if gap < 1e-16 else shown  # past float64: 1 to every digit
    shown = (f"-({shown})" if gap < 1e-4 else f"-{shown}") if corr < 0 else shown
    top = float(max(inflation[a], inflation[b], 1.0))
    digits = max(0, int(round(16 - 0.5 * np.log10(top))))
    head = (
        f"parameters {pmap.labels[a]!r} and {pmap.labels[b]!r} are strongly correlated "
        f"(corr = {shown})"
    )
    return (
        f"{head}: the data determine mostly a combination of them, so their standard errors "
        f"are large; they are read from the SVD of the Jacobian and reliable to about "
        f"{digits} digits; to determine each better, "
        f"reparametrise (one parameter per combination) or fix one of them",
        head,
    )
