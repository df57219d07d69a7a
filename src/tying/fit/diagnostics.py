"""Diagnostics of a finished global fit: what the covariance and the residuals say about
the result (parameters at bounds, degenerate pairs, ill-conditioning, plateaus, a point
that is not stationary, sigma the residuals contradict, model values that were not
finite), each as a message for :class:`~tying.fit.global_fit.GlobalFit`'s result.

Moved out of :mod:`tying.fit.global_fit` (stop 36), which re-exports every name.
"""

from __future__ import annotations

import numpy as np

from tying.fit import jacobian as jac_mod
from tying.fit import schur
from tying.fit.datasets import StackedData
from tying.fit.model import ModelEvaluator
from tying.fit.roles import ParameterMap
from tying.fit.solvers import MAX_COSINE, column_max, pow2_floor, residual_cosines

#: |correlation| above this marks two parameters the data cannot tell apart
DEGENERATE_CORRELATION = 1 - 1e-8
#: a parameter whose 100 % change moves the model by less than this (relative) has no effect
PLATEAU_SENSITIVITY = 1e-8
#: a variance inflation ``var_ii·(JᵀJ)_ii`` past this leaves a standard error with less than
#: about 2 reliable digits: inverting the normal matrix in float64 loses ~log10(inflation)
#: of its 16 (stop 34: a degree-8 polynomial on x in [-9, -3], inflation 5e13, read errors
#: 5 % off, degree 10 80 % off, success=True with no word; NIST's largest is 6.5e8)
ILL_CONDITIONED_INFLATION = 1e12
#: with scale_covar=False, a chi2 this improbable under sigma (either tail of chi2(nfree)) ...
SIGMA_CHI2_TAIL = 1e-6
#: ... whose implied noise σ·√redchi is off sigma by more than this factor is named (stop 36)
SIGMA_CHI2_FACTOR = 1.2


def column_scale(jw: np.ndarray, pmap: ParameterMap) -> np.ndarray:
    """``(n_physical,)`` each parameter's largest ``|weighted Jacobian|`` entry, rounded down
    to a power of 2 (1 for a column that is zero or not finite).

    Dividing the columns by it is exact and leaves each a largest entry in [1, 2), so
    ``JᵀJ`` of the scaled columns neither overflows nor underflows. Stop 47: a parameter
    or sigma near 1e±299 made a column near 1e-299, whose square underflowed to 0 (or
    near 1e299, which overflowed), and a fit with the right values reported NaN standard
    errors and "'a' does not change the model".
    """
    return pow2_floor(column_max(jw, pmap))


def scaled_normal(jw: np.ndarray, r: np.ndarray, pmap: ParameterMap):
    """``(h, jw_scaled, scale)``: the normal blocks ``(K, P, P)`` of the Jacobian whose columns
    are divided by :func:`column_scale` ``scale`` (physical order), and those columns.

    The covariance of the parameters is ``(h⁻¹)_ij / (scale_i·scale_j)``.
    """
    cs = column_scale(jw, pmap)
    jws = jw / cs[pmap.index][:, None, :]
    h, _ = jac_mod.normal_blocks(jws, r)
    return h, jws, cs


#: a variance is a normal float64 only for a standard error inside this range
VARIANCE_RANGE = (float(np.sqrt(np.finfo(float).tiny)), float(np.sqrt(np.finfo(float).max)))


def _covariance_range(stderr_x: np.ndarray, pmap: ParameterMap) -> str:
    """Name the parameters whose variance (standard error squared) is past float64, or "".

    Their standard errors are computed from scaled columns and are right, but the
    covariance matrix would hold 0 or inf for them (stop 47: a parameter near 1e-299 had
    variance 0, and a band ``J C Jᵀ`` of 0 would have come back with no word).
    """
    lo, hi = VARIANCE_RANGE
    s = np.abs(stderr_x)
    bad = np.flatnonzero(np.isfinite(s) & (s > 0) & ((s < lo) | (s > hi)))
    if not bad.size:
        return ""
    names = _names([pmap.labels[i] for i in bad])
    return (
        f"the standard error(s) of {names} ({', '.join(f'{s[i]:.3g}' for i in bad[:8])}) "
        f"square past float64's range ({lo:.2g} to {hi:.2g}), so the covariance matrix "
        f"cannot be stored: covariance is None and bands/correlations are unavailable, "
        f"the values and standard errors are right; rescale those parameters (fit them in "
        f"units that bring them near 1) for a covariance"
    )


def _on_bounds(
    pmap: ParameterMap, theta: np.ndarray, jw: np.ndarray, r: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(at_lower, at_upper)`` masks: parameters on a finite bound.

    trf keeps its iterates strictly inside the box, so a parameter it holds on a bound
    ends a hair inside (1.5000000000000016 for a bound at 1.5), not on it. A parameter is
    on its bound when both

    - it is within ``1e-8·max(1, |bound|, |start|)`` of it (relative to its start value's
      magnitude, so a hair of 6e-7 at a parameter near 1e9 counts), and
    - moving it onto the bound changes the model by a negligible part of the residuals:
      ``|θ - bound|·‖J column‖ <= 1e-6·‖r‖`` (units-free; trf's hairs read ~1e-16).

    The second test keeps a parameter near 1e-9 with a bound at 0 (a rate in 1/s) free:
    with an absolute floor alone, ``k = 5e-9`` (276 standard errors from 0) was named
    "ended at a bound" (the value is the bound, says the message) and exempted from the
    test of a minimum (stop 31, round 2).
    """
    h, _, cs = scaled_normal(jw, r, pmap)
    # ‖J column‖ per parameter, from unit-scaled columns: no under/overflow (stop 47)
    col = np.sqrt(schur.diagonal(h, pmap.index, pmap.n_physical)) * cs
    rnorm = float(np.linalg.norm(r))
    scale = np.maximum(1.0, np.abs(pmap.x0))
    out = []
    for b in (pmap.lower, pmap.upper):
        with np.errstate(invalid="ignore"):
            dist = np.abs(theta - b)
            near = dist <= 1e-8 * np.maximum(scale, np.abs(b))
            negligible = (dist == 0) | (dist * col <= 1e-6 * rnorm)
            out.append(np.isfinite(b) & near & negligible)
    return out[0], out[1]


def _at_bounds(pmap: ParameterMap, theta: np.ndarray, jw: np.ndarray, r: np.ndarray) -> str:
    """The fitted parameters that ended on a finite bound (see :func:`_on_bounds`), named."""
    out = []
    for side, mask, bound in zip(
        ("lower", "upper"), _on_bounds(pmap, theta, jw, r), (pmap.lower, pmap.upper), strict=True
    ):
        out += [
            (i, f"{pmap.labels[i]} (= {bound[i]:g}, its {side} bound)")
            for i in np.flatnonzero(mask)
        ]
    return ", ".join(text for _, text in sorted(out))


def _degenerate_pair(cov_logical: np.ndarray, pmap: ParameterMap) -> str:
    """Name two fitted parameters whose estimates are (almost) perfectly correlated, or ""."""
    return _pair_text(_pair_found(cov_logical), pmap)


def _pair_text(found: tuple[int, int, int, float] | None, pmap: ParameterMap) -> str:
    """The words of :func:`_degenerate_pair` for a pair :func:`_pair_found` found, or ""."""
    if found is None:
        return ""
    k, i, j, c = found
    a, b = (pmap.labels[pmap.index[k, s]] for s in (i, j))
    # rounding noise can read past 1: a correlation is at most 1
    return f"parameters {a!r} and {b!r} are fully correlated (|corr| = {min(c, 1.0):.10f})"


def _pair_found(cov_logical: np.ndarray) -> tuple[int, int, int, float] | None:
    """``(k, i, j, |corr|)``: the logical slots of the most correlated pair past
    :data:`DEGENERATE_CORRELATION`, or None."""
    d = np.sqrt(np.abs(np.diagonal(cov_logical, axis1=1, axis2=2)))  # (K, P)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        corr = np.abs(cov_logical / (d[:, :, None] * d[:, None, :]))
    p = corr.shape[1]
    corr[:, np.arange(p), np.arange(p)] = 0.0
    # an inverse of rounding noise can hold a variance of exactly 0: x/0 is no correlation
    # (nan_to_num made it 1.8e308, so a well-determined parameter was named as one of the
    # pair, its |corr| printed with 300 digits; stop 34)
    corr = np.where(np.isfinite(corr), corr, 0.0)
    k, i, j = np.unravel_index(int(np.argmax(corr)), corr.shape)
    if corr[k, i, j] <= DEGENERATE_CORRELATION:
        return None
    return int(k), int(i), int(j), float(corr[k, i, j])


def _names(names: list[str]) -> str:
    """``'a'``, ``'a' and 'b'``, ``'a', 'b' and 'c'`` (at most 8, then ``...``)."""
    shown = [repr(n) for n in names[:8]] + (["..."] if len(names) > 8 else [])
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def _weakest(h: np.ndarray, data: StackedData, pmap: ParameterMap, pair: str = "") -> str:
    """Name the parameters of the combination a singular fit cannot determine, and the fix.

    The last resort of a singular Jacobian's message, after parameters with no effect:
    "two or more parameters change the model the same way" named nothing (x constant in
    one data set of a global fit, so its local slope and offset act alike; stop 34, round
    2; lmfit's ``leastsq`` gives no word there, and standard errors of 3e13 for the two
    locals as if they were numbers). ``pair`` (the fully correlated pair read from an
    inverse of rounding noise) is kept when the null direction holds both its names:
    that inverse's correlations are noise too, and with x spread over 3e-9 in one data
    set they named a shared parameter and another data set's offset.
    """
    try:
        rows, directions = schur.weakest(h, pmap.index, pmap.n_global, pmap.n_physical)
    except np.linalg.LinAlgError:  # an eigensolver that did not converge: say what we know
        if pair:
            return f"{pair}: the data cannot tell them apart"
        return "two or more parameters change the model the same way"
    names = [pmap.labels[i] for i in np.flatnonzero(np.abs(directions[0]) >= 0.1)]
    if not rows.size and sum(repr(n) in pair for n in names) == 2:
        return f"{pair}: the data cannot tell them apart"
    how = (
        f"{names[0]!r} does not change the model"
        if len(names) == 1
        else f"{_names(names)} change the model the same way"
        + (" in combination (one is a mix of the others)" if len(names) > 2 else "")
    )
    if not rows.size:
        return how
    i = int(rows[0])
    if rows.size == data.n_datasets > 1:
        return (
            f"{how} in every data set (shown for dataset {data.names[i]!r}, index {i}): "
            f"the model reads them only in a combination (such as a·b or a + b), or no "
            f"data set's x tells them apart; fix one of them, or write model_fn with "
            f"their combination as one parameter"
        )
    more = (
        f" (and likewise in {rows.size - 1} more data set(s): index "
        f"{', '.join(str(int(j)) for j in rows[1:6])}{', ...' if rows.size > 6 else ''})"
        if rows.size > 1
        else ""
    )
    return (
        f"{how} in dataset {data.names[i]!r} (index {i}){more}: its points cannot tell "
        f"them apart (x constant there, or too few distinct x); drop or extend that data "
        f"set, or make one of them shared, per-group or fixed"
    )


def _inflation(cov_logical: np.ndarray, h: np.ndarray, pmap: ParameterMap) -> np.ndarray:
    """Each physical parameter's variance inflation ``var_ii·(JᵀJ)_ii`` (unscaled covariance).

    1 for a Jacobian column orthogonal to the others, larger the more the other columns
    can stand in for it; free of units. Inverting ``JᵀJ`` in float64 loses about
    ``log10(inflation)`` digits of that parameter's variance.
    """
    var = np.zeros(pmap.n_physical)
    var[pmap.index.ravel()] = np.diagonal(cov_logical, axis1=1, axis2=2).ravel()
    return var * schur.diagonal(h, pmap.index, pmap.n_physical)


def _ill_conditioned(inflation: np.ndarray, pmap: ParameterMap, by_svd: bool = False) -> str:
    """Name the parameters whose standard errors rounding leaves unreliable, or "".

    With ``by_svd`` the errors were read from the SVD of the Jacobian
    (:mod:`tying.fit.null_space`), which keeps about ``16 - log10(√inflation)`` digits where
    the normal matrix keeps ``16 - log10(inflation)`` (stop 60: a degree-10 polynomial's
    errors were 98 % off, flagged; from the SVD 6e-8).
    """
    worst = np.flatnonzero(inflation > ILL_CONDITIONED_INFLATION)
    if not worst.size:
        return ""
    worst = worst[np.argsort(-inflation[worst], kind="stable")]
    names = ", ".join(repr(pmap.labels[i]) for i in worst[:8])
    top = float(inflation[worst[0]])
    head = (
        f"the standard errors of {names}{', ...' if worst.size > 8 else ''} are "
        f"ill-conditioned (variance inflation up to {top:.2g}: inverting the normal matrix "
    )
    if by_svd:  # past 1/eps (review 60: "19 of its 16 digits"), all of them
        lost = "all" if top >= 1e16 else f"about {np.log10(top):.0f}"
        lost += " of its 16 digits"
        return (
            f"{head}would lose {lost}; they are read from "
            f"the SVD of the Jacobian instead, which keeps about "
            f"{16 - 0.5 * np.log10(top):.0f})"
        )
    return (
        f"{head}in float64 loses about {np.log10(top):.0f} of its 16 digits), so they may be "
        f"off by percents or more"
    )


def _inverse_ok(inflation: np.ndarray) -> bool:
    """False when ``(JᵀJ)⁻¹`` came back from a ``JᵀJ`` singular to rounding.

    ``inv`` raises only on an exactly singular matrix; one singular to rounding (three
    parameters that change the model in a combination that cancels: ``a·x + b·x² +
    c·(x + x²)``, or a shared center plus a per-group zero shift) gives an inverse of
    rounding noise, with negative variances, which were clipped to standard errors of 0
    (stop 31 review; lmfit gives NaN there). The test,
    free of units, is each parameter's variance inflation ``var_ii·(JᵀJ)_ii``: at least 1
    for a true inverse (1 for a column orthogonal to the rest; at most 6.5e8 on the 54 NIST
    cases), and an inverse past ``1/eps`` has no correct digit. Between
    :data:`ILL_CONDITIONED_INFLATION` and that, the errors are kept and flagged
    (:func:`_ill_conditioned`).
    """
    return bool(np.all((inflation > 0) & (inflation < 1 / np.finfo(float).eps)))


def _unread_locals(h: np.ndarray, pmap: ParameterMap, theta: np.ndarray) -> np.ndarray:
    """``(K, P)`` True at a local slot whose Jacobian column is exactly zero in its data set
    while the same local parameter changes the model in another data set, and whose value
    is still its start (no solver moves a value whose column is zero).

    One ``model_fn`` that switches between forms per data set (``fixed={"kind": [0, 1]}``)
    reads some local parameters in one form only. A parameter zero in every data set is
    left to the singular-Jacobian message (the model does not read it at all).
    """
    out = np.zeros(pmap.index.shape, dtype=bool)
    m = len(pmap.global_names)
    if not pmap.n_local or pmap.n_datasets < 2:
        return out
    diag = np.diagonal(h, axis1=1, axis2=2)[:, m:]  # (K, L): ‖J column‖² per local slot
    zero = diag == 0.0
    # one that moved and then lost its effect (an exp that underflows) is a plateau, named
    # as such elsewhere, not a slot held at its start
    at_start = theta[pmap.index[:, m:]] == pmap.x0[pmap.index[:, m:]]
    out[:, m:] = zero & (diag > 0.0).any(axis=0) & at_start
    return out


def _check_determined(data: StackedData, pmap: ParameterMap) -> None:
    """Refuse a fit with fewer data points than the parameters they must determine."""
    if data.n_points < pmap.n_physical:
        raise ValueError(
            f"{data.n_points} data point(s) cannot determine {pmap.n_physical} fitted "
            f"parameters ({', '.join(pmap.labels[:8])}"
            f"{', ...' if pmap.n_physical > 8 else ''}): the fit is underdetermined; add data, "
            f"move parameters to fixed=, or share them across data sets"
        )
    short = np.flatnonzero(data.lengths < pmap.n_local)
    if short.size:
        i = int(short[0])
        raise ValueError(
            f"dataset {data.names[i]!r} (index {i}) has {int(data.lengths[i])} point(s) but "
            f"{pmap.n_local} local parameters ({', '.join(pmap.local_names)}) to determine: "
            f"its block is underdetermined; add points, or make some of them shared or fixed"
        )


def _check_scale(data: StackedData, pmap: ParameterMap, start_model: np.ndarray) -> None:
    """Refuse data or a start whose χ² float64 cannot hold (stop 32 review).

    - χ² at the start past float64 (residuals near 1e155: a start far off, ``exp(400·x)``)
      stopped our LM on its gtol test with ``success=True`` at the start values and χ²
      inf, and made trf raise SciPy's bare "array must not contain infs or NaNs" (lmfit:
      "Fit succeeded", χ² inf).
    - Weighted data whose own ``Σ (y/σ)²`` is not a normal float64 (inf, or below 2.2e-308:
      data near 1e-160 without sigma) lose χ² to overflow or underflow: a fit at 1e-170
      came back ``success=True`` at its start values with standard errors of 0.
    """
    w_y = (data.y * data.weight)[data.mask]
    with np.errstate(over="ignore", under="ignore"):
        own = float(np.sum(w_y * w_y))
        r0 = jac_mod.residuals(start_model, data)
        chi2_0 = float(np.sum(r0 * r0))
    if np.any(w_y != 0) and not np.finfo(float).tiny <= own < np.inf:  # all zero: fine
        i, j = np.unravel_index(int(np.argmax(np.abs(data.y * data.weight))), data.y.shape)
        raise ValueError(
            f"the weighted data y/sigma reach {float(np.max(np.abs(w_y))):.3g} (dataset "
            f"{data.names[i]!r}, index {i}, point {j}: y = {data.y[i, j]:.3g}, sigma = "
            f"{1.0 / data.weight[i, j]:.3g}), so their sum of squares {own:.3g} is not a "
            f"normal float64 ({'overflow' if own == np.inf else 'underflow'}) and chi2 "
            f"cannot be measured; rescale y and sigma (and the parameters that carry "
            f"their units) to a scale near 1"
        )
    worst, point = np.unravel_index(int(np.argmax(np.abs(r0))), r0.shape)
    where = f"dataset {data.names[worst]!r} (index {worst})"
    if not np.isfinite(chi2_0):
        shown = ", ".join(f"{n}={v:.6g}" for n, v in zip(pmap.labels, pmap.x0))
        with np.errstate(over="ignore", invalid="ignore"):
            gap = float(abs(start_model[worst, point] - data.y[worst, point]))
        sigma = 1.0 / float(data.weight[worst, point])
        if gap < 1e150 and gap / sigma > 1e150:
            # a tiny sigma, not the start, overflows chi2: "move init closer" misled
            raise ValueError(
                f"chi2 at the starting values overflows float64 because sigma is {sigma:.3g} "
                f"at point {point} of {where} (model - y there is only {gap:.3g}, weighted "
                f"{gap / sigma:.3g}); sigma is the standard deviation of y (scipy curve_fit's "
                f"sigma, not lmfit's weights or a variance): check it, or rescale y and sigma "
                f"together to a scale near 1"
            )
        raise ValueError(
            f"chi2 at the starting values overflows float64 (the largest weighted residual "
            f"is {float(np.max(np.abs(r0))):.3g}, on {where}), at {shown}: the start is too "
            f"far from the data for any solver to measure progress; move init closer to "
            f"the data (or bound the parameters)"
        )


def _sensitivity(
    h: np.ndarray,
    model_w: np.ndarray,
    theta: np.ndarray,
    pmap: ParameterMap,
    cs: np.ndarray | None = None,
) -> np.ndarray:
    """How much a 100 % change of each physical parameter moves the model, relative.

    ``‖∂model/∂p‖·max(|p|, |p_start|) / ‖model‖`` (weighted, over the data
    sets that read p; ``|p_start|`` is taken as 1 for a parameter started at 0). ``h``
    is of columns divided by ``cs`` (:func:`scaled_normal`) when ``cs`` is given.
    """
    diag = schur.diagonal(h, pmap.index, pmap.n_physical)  # (n_physical,) Σ ‖J column‖²
    col = np.sqrt(diag) * (1.0 if cs is None else cs)
    ds_norm2 = np.sum(model_w * model_w, axis=1)  # (K,)
    reach = np.bincount(
        pmap.index.ravel(),
        weights=np.repeat(ds_norm2, pmap.index.shape[1]),
        minlength=pmap.n_physical,
    )
    # the parameter's own scale: its value or start, whichever is larger (at least 1 when it
    # started at 0), so that a parameter converging to 0 is not taken for one without effect
    start = np.abs(pmap.x0)
    scale = np.maximum(np.abs(theta), np.where(start > 0, start, 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return col * scale / np.sqrt(np.maximum(reach, 1e-300))


def _plateau(
    ev: ModelEvaluator,
    data: StackedData,
    pmap: ParameterMap,
    out,
    h: np.ndarray,
    cs: np.ndarray | None = None,
) -> str:
    """Name a parameter that moved the model at the start but does not at the solution, or "".

    Such a stationary point (BoxBOD from start 1: ``exp(-b2·x)`` underflows,
    so b2 stops mattering) is a plateau the solver drifted onto, not a minimum
    the data locate. A parameter that never changes the model is another case
    (a singular Jacobian, reported with the standard errors).
    """
    sens = _sensitivity(h, out.model * data.weight, out.theta, pmap, cs)
    flat = ~(sens >= PLATEAU_SENSITIVITY)
    if not flat.any():
        return ""
    # only now (rarely) pay for the Jacobian at the start
    nfev, njev = ev.nfev, ev.njev
    model0 = ev.predict(pmap.x0)
    jw0 = jac_mod.weighted(ev.jacobian(pmap.x0), data)
    ev.nfev, ev.njev = nfev, njev
    h0, _, cs0 = scaled_normal(jw0, jac_mod.residuals(model0, data), pmap)
    sens0 = _sensitivity(h0, model0 * data.weight, pmap.x0, pmap, cs0)
    drifted = np.flatnonzero(flat & (sens0 >= PLATEAU_SENSITIVITY))
    if drifted.size:
        # b**2 on its bound at b = 0: the exact derivative is 0, but every move raises chi2,
        # a minimum, not a plateau (stop 57: the kept complex step read it as one)
        r = jac_mod.residuals(out.model, data)
        drifted = np.array(
            [
                i
                for i in drifted
                if not all(v > 0 for v in _curved(ev, data, pmap, out.theta, r, i)[1] or [0])
            ],
            dtype=int,
        )
    if not drifted.size:
        return ""
    i = int(drifted[0])
    return (
        f"parameter {pmap.labels[i]!r} = {out.theta[i]:.6g} changed the model at the "
        f"start but does not at the solution (a 100% change moves it by {sens[i]:.2g} "
        f"relative): the fit stopped on a plateau, not at a minimum the data locate; try "
        f"other starting values, bounds, or solver='trf'"
    )


def _not_stationary(data: StackedData, pmap: ParameterMap, theta: np.ndarray, r, jw) -> str:
    """Name a free parameter whose Jacobian column the residuals are not orthogonal to
    (cosine above ``MAX_COSINE``), or "": the first-order test of a minimum, free of the
    units that the solvers' own gtol tests are absolute in, checked on every result (stop
    30 review: trf's gtol and the LM's scaling floor stopped at the start values on data
    near 1e-12 or a parameter near 1e22; a model that gave NaN near the optimum stopped
    on that wall). A parameter held on a bound by an outward gradient is exempt, and so
    is an exact fit, whose residuals are rounding noise."""
    rnorm = float(np.linalg.norm(r))
    ynorm = float(np.linalg.norm((data.y * data.weight)[data.mask]))
    if not rnorm > 1e-10 * ynorm:
        return ""
    cos, grad = residual_cosines(jac_mod.assemble(jw, data, pmap), r[data.mask])
    # on a bound to the tolerance _at_bounds names it with (stop 31 review: trf's iterates
    # stay a hair inside the box, so a correct fit with an active bound read "not a minimum")
    at_lower, at_upper = _on_bounds(pmap, theta, jw, r)
    held = ((at_lower | (theta <= pmap.lower)) & (grad > 0)) | (
        (at_upper | (theta >= pmap.upper)) & (grad < 0)
    )
    cos = np.where(held, 0.0, cos)
    i = int(np.argmax(cos)) if cos.size else 0
    if cos.size and cos[i] > MAX_COSINE:
        return (
            f"the residuals are not orthogonal to the Jacobian column of "
            f"{pmap.labels[i]!r} (cosine {cos[i]:.2g} > {MAX_COSINE:g}): this is not a "
            f"minimum"
        )
    return _gauss_newton_gain(pmap, jw, r, held)


def _gauss_newton_gain(pmap: ParameterMap, jw: np.ndarray, r: np.ndarray, held) -> str:
    """Name the parameters of a Gauss-Newton step that would still lower χ² by more than
    ``MAX_COSINE²`` of it, or "": the cosine between the residuals and the span of the
    free columns, where :func:`_not_stationary` reads each column alone.

    Two nearly parallel columns can each be orthogonal to the residuals while a
    combination of them is not (stop 35 review: ``a·log(b·x)`` with b shared ran on trf
    to ``b = 2e-156``, ``a ≈ -0.004``, where ``a·log b`` fits the mean and every column is
    mostly constant: success=True with χ² 5,000x its minimum, "a minimum all the same").
    The step is solved on unit-scaled columns (no overflow of huge columns) with a
    relative damping of 1e-10, so a direction singular to rounding gains nothing.
    """
    idx = pmap.index
    # columns near 1e154 overflow JᵀJ: bring each to a largest entry of 1 first, always.
    # Stop 42: tested only on each data set's block, a column of 1e153 passed there
    # (4e307 and 1.6e308) and overflowed in their sum over data sets, the unit scaling
    # zeroed it, and a step that removes all of chi2 read a gain of 1e-12
    big = np.zeros(pmap.n_physical)
    np.maximum.at(big, idx.ravel(), np.max(np.abs(jw), axis=1).ravel())
    big = np.where((big > 0) & np.isfinite(big), big, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        h, g = jac_mod.normal_blocks(jw / big[idx][:, None, :], r)
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(g))):
        return ""
    col = np.sqrt(schur.diagonal(h, idx, pmap.n_physical))
    d = (1.0 / np.where(col > 0, col, 1.0))[idx]  # (K, P): unit columns
    h = h * d[:, :, None] * d[:, None, :]
    g = g * d / float(np.linalg.norm(r))
    try:
        step = schur.solve(h, g, idx, pmap.n_global, 1e-10, frozen=held)
    except np.linalg.LinAlgError:
        return ""
    gain = -float(jac_mod.gradient(g, pmap) @ step)  # ≈ |P r̂|², the χ² fraction a step removes
    if not gain > MAX_COSINE**2:
        return ""
    lead = np.argsort(-np.abs(step))[:2]
    names = " and ".join(repr(pmap.labels[i]) for i in sorted(lead) if step[i] != 0)
    return (
        f"a Gauss-Newton step along {names} would lower chi2 by {min(gain, 1.0):.0%} "
        f"(the residuals' cosine with the span of the free Jacobian columns is "
        f"{min(gain, 1.0) ** 0.5:.2g}, though with each column alone it is at most "
        f"{MAX_COSINE:g}): this is not a minimum"
    )


def _sigma_contradicted(data: StackedData, r: np.ndarray, chi2: float, nfree: int) -> str:
    """Say why the residuals contradict sigma taken as known (``scale_covar=False``), or "".

    With ``scale_covar=False`` the standard errors are ``(JᵀJ)⁻¹`` of the weighted Jacobian
    as it stands: they trust sigma as the noise. A sigma off by a factor (a weight ``1/σ``
    or a variance ``σ²`` in its place, a scalar in other units) moves every standard error
    by that factor, and the values not at all, so nothing else shows it: ``(x, y, 0.1)``
    meant as a weight (σ = 10) read standard errors 100x too large, ``success=True`` and no
    word (stop 36). The one witness is χ²: under the right sigma and model it follows
    χ²(nfree). A χ² in either tail beyond :data:`SIGMA_CHI2_TAIL` whose implied noise
    ``σ·√redchi`` differs from sigma by more than :data:`SIGMA_CHI2_FACTOR` is named (an
    exact fit, residuals at rounding level, is skipped: its residuals are not noise).
    """
    if nfree <= 0:
        return ""
    wy = (data.y * data.weight)[data.mask]
    if not np.sqrt(chi2) > 1e-10 * float(np.linalg.norm(wy)):
        return ""
    from scipy import stats  # only for fits that trust sigma

    redchi = chi2 / nfree
    tail = min(float(stats.chi2.sf(chi2, nfree)), float(stats.chi2.cdf(chi2, nfree)))
    if not (tail < SIGMA_CHI2_TAIL and abs(np.log(redchi)) > 2 * np.log(SIGMA_CHI2_FACTOR)):
        return ""
    noise = float(np.sqrt(redchi))
    return (
        f"scale_covar=False takes sigma as the noise, but chi2 = {chi2:.4g} on {nfree} degrees "
        f"of freedom (reduced chi2 {redchi:.3g}) has a probability below "
        f"{SIGMA_CHI2_TAIL:g} under it: the residuals scatter as {noise:.3g} x sigma, so the "
        f"standard errors are about {1 / noise:.3g} x what the data support; give sigma as the "
        f"standard deviation of y (not lmfit's weights 1/sigma or a variance), or pass "
        f"scale_covar=True to scale the errors by the residuals (a model that misses the data "
        f"reads the same)"
    )


def _nonfinite_note(ev: ModelEvaluator, pmap: ParameterMap) -> str:
    """What the fit met where ``model_fn`` gave NaN or inf (the solvers' wall), or ""."""
    if not ev.n_nonfinite:
        return ""
    at = ", ".join(f"{n}={v:.6g}" for n, v in zip(pmap.labels, ev.nonfinite_theta, strict=True))
    where = getattr(ev, "nonfinite_where", "")
    return (
        f"model_fn returned NaN or inf at {ev.n_nonfinite} of the points the solver tried "
        f"(first at {at}{f', on {where}' if where else ''}), which it treated as a wall"
    )


#: a standard error is NaN where moving its parameter by it, alone, raises chi2 on both sides
#: by more than this many times the linearised covariance's prediction (stop 56)
NONLINEAR_RATIO = 100.0


def _nonlinear_errors(
    ev: ModelEvaluator,
    data: StackedData,
    pmap: ParameterMap,
    theta: np.ndarray,
    r: np.ndarray,
    jw: np.ndarray,
    stderr_x: np.ndarray,
    col_norm: np.ndarray,
) -> tuple[np.ndarray, str, np.ndarray]:
    """Parameters whose standard error the model's linearisation does not support.

    A parameter at a point where the model's derivative in it vanishes though the model
    still depends on it (``b**2`` at ``b = 0``, ``cos(b)`` at ``b = π``) has a Jacobian
    column near 0, so the covariance gives it a huge standard error that is the inverse of
    that small derivative: ``a·x + b**2`` fitted to data wanting a negative offset ended
    at ``b = 1.7e-9`` with a standard error 2.9e7 (9e-10 and 5.3e7 from another start),
    numbers set by where the solver stopped, not by the data (lmfit's leastsq reports no
    error bars there). Only a parameter whose standard error exceeds its magnitude can
    be such a case; each is moved, alone, by ± its standard error and by ± 1 % of its own
    scale (clipped to its bounds) and χ² is recomputed: where both sides of one step raise
    χ² by more than ``NONLINEAR_RATIO`` times ``(step·‖J column‖)² + 2·|step·(Jᵀr)_j|``,
    the most the linearised model allows (and past χ²'s rounding), the error is
    not a property of the data. A parameter on a bound moves inward only, and that side
    alone decides: ``b**2`` with ``bounds={"b": (0, None)}`` ended at ``b = 0``, where the
    one-sided difference reads a derivative of ``h`` (its step) for the true 0, and the
    standard error 15910 was ``1/h`` scaled. A parameter merely nonlinear over its error
    bar (``exp(b·x)``) rises far more on one side only and keeps its error, as in lmfit.

    A flagged parameter's Jacobian column is replaced by its secant over the small step
    (the residuals' change, moved by it alone), the direction in which the model changes
    there (``b**2`` near 0 moves the model as an offset does), so that the other
    parameters' errors can be computed beside it as beside the reparametrised one
    (:func:`_secant_covariance`), whatever tiny derivative the solver stopped at.

    Returns:
        A mask over the physical parameters, a message naming them ("" if none), and
        ``jw`` with each flagged slot's column replaced by its secant.
    """
    with np.errstate(invalid="ignore"):
        cand = np.isfinite(stderr_x) & (stderr_x > np.abs(theta)) & (col_norm > 0)
    flagged = np.zeros(pmap.n_physical, dtype=bool)
    secant = jw
    if not cand.any():
        return flagged, "", secant
    chi2_k = np.sum(r * r, axis=1)  # (K,)
    # the gradient Jᵀr per physical parameter: 0 at an interior minimum, the pull of the
    # data past a bound where a parameter ended on one
    grad = np.bincount(
        pmap.index.ravel(),
        weights=np.einsum("knp,kn->kp", jw, r).ravel(),
        minlength=pmap.n_physical,
    )
    # one batch per global parameter; a local one moves in every data set at once (each
    # data set reads its own slot alone), so the check costs 2 calls per name, not per slot
    # (physical indices, a (K, len) mask of the data sets that read each)
    batches = [
        (np.array([i]), (pmap.index == i).any(axis=1)[:, None])
        for i in np.flatnonzero(cand[: pmap.n_global])
    ]
    for j in range(pmap.index.shape[1]):
        slots = pmap.index[:, j]
        ks = np.flatnonzero(cand[slots])
        if slots.size and slots[0] >= pmap.n_global and ks.size:
            rows = np.zeros((slots.size, ks.size), dtype=bool)
            rows[ks, np.arange(ks.size)] = True
            batches.append((slots[ks], rows))
    # a move into NaN must not change what the fit reports of its own walls
    state = (ev.nfev, ev.njev, ev.n_nonfinite, ev.nonfinite_theta, ev.nonfinite_where)
    notes = []
    # the parameter's own scale, as for the plateau test: a periodic model (cos(b) at
    # b = π) moved by a huge error lands on a random phase, so the test also steps by 1 %
    # of the value, where the curvature still dominates a derivative that vanishes
    own = np.maximum(np.abs(theta), np.where(pmap.x0 != 0, np.abs(pmap.x0), 1.0))
    floor = 1e-8 * float(np.sum(chi2_k)) + np.finfo(float).tiny  # rounding of chi2
    try:
        for idx, rows in batches:
            hit = np.zeros(idx.size, dtype=bool)
            linear = np.zeros(idx.size, dtype=bool)
            small = np.minimum(stderr_x[idx], 1e-2 * own[idx])
            for size in (stderr_x[idx], small):
                if size is small and (np.all(hit | linear) or np.array_equal(small, stderr_x[idx])):
                    # the same step again, or every slot already judged or linear over its
                    # error bar: the small step's two model calls cannot add a verdict
                    break
                rises, moves = [], []
                for sign in (1.0, -1.0):
                    moved = theta.copy()
                    moved[idx] = np.clip(theta[idx] + sign * size, pmap.lower[idx], pmap.upper[idx])
                    step = moved[idx] - theta[idx]
                    try:
                        with np.errstate(all="ignore"):
                            rm = jac_mod.residuals(ev.predict(moved), data)
                            dchi = np.sum(rm * rm, axis=1) - chi2_k  # (K,)
                    except Exception:  # a model undefined there: no evidence either way
                        dchi = np.full(chi2_k.shape, np.nan)
                        rm = None
                    moves.append((rm, step))
                    with np.errstate(all="ignore"):
                        rise = dchi @ rows  # each slot over the data sets that read it
                        expected = (step * col_norm[idx]) ** 2 + 2 * np.abs(step * grad[idx])
                        far = (rise > NONLINEAR_RATIO * expected) & (rise > floor)
                        # a side a bound leaves (almost) no room on does not vote
                        votes = np.abs(step) > 0.1 * size
                        rises.append((rise, far | ~votes, votes, expected))
                        quad = (step * col_norm[idx]) ** 2
                        # the linearised rise itself, signed (step²‖J‖² + 2·step·Jᵀr), to
                        # rounding: a linear parameter (a polynomial or baseline coefficient
                        # near 0) needs no second step
                        near = np.abs(rise - quad - 2 * step * grad[idx]) <= 0.25 * quad + floor
                        if size is not small:
                            linear = (linear if sign < 0 else votes.copy()) & (near | ~votes)
                moved_any = rises[0][2] | rises[1][2]
                bad = rises[0][1] & rises[1][1] & moved_any & ~hit
                for k in np.flatnonzero(bad):
                    i = int(idx[k])
                    flagged[i] = True
                    secant = _put_secant(secant, jw, pmap, r, i, moves, k)
                    notes.append(
                        f"{pmap.labels[i]!r} = {theta[i]:.3g} ± {stderr_x[i]:.2g} (moved "
                        f"by {size[k]:.2g} it raises chi2 by "
                        f"{min(v[0][k] for v in rises if v[2][k]):.2g} or more, where the "
                        f"covariance predicts {max(v[3][k] for v in rises if v[2][k]):.2g})"
                    )
                hit |= bad
    finally:
        ev.nfev, ev.njev, ev.n_nonfinite, ev.nonfinite_theta, ev.nonfinite_where = state
    if not notes:
        return flagged, "", secant
    shown = "; ".join(notes[:5]) + ("; ..." if len(notes) > 5 else "")
    note = (
        f"standard errors set to NaN for {shown}: the model is far from linear in "
        f"{'this parameter' if len(notes) == 1 else 'these parameters'} over the error bar "
        f"(its derivative vanishes near the fitted value, as that of b**2 does at b = 0), so "
        f"the covariance's number reflects where the solver stopped, not the data; "
        f"reparametrise so that the model changes at first order (fit c = b**2 with "
        f"bounds={{'c': (0, None)}}), or fix the parameter"
    )
    return flagged, note, secant


def _second_order(
    ev: ModelEvaluator,
    data: StackedData,
    pmap: ParameterMap,
    theta: np.ndarray,
    r: np.ndarray,
    jw: np.ndarray,
    zero: np.ndarray,
) -> tuple[np.ndarray, str, np.ndarray]:
    """Of the parameters whose Jacobian column is exactly 0 (``zero``, physical indices),
    those the model still depends on at second order.

    ``a·x + b**2`` with ``bounds={"b": (0, None)}`` ends on ``b = 0``, where the exact
    derivative ``2b`` (complex step, autograd) is 0: ``JᵀJ`` was singular, every standard
    error NaN, ``a``'s included, and the message said ``'b'`` "does not change the model".
    Each is moved alone by 1 % of its own scale, each way its bounds allow: where every such
    move raises χ² past its rounding, the parameter is a minimum the data locate, its
    standard error is NaN (no linear error exists) and its column becomes its secant
    (:func:`_put_secant`), so the others' errors are computed beside it as beside the
    reparametrised ``c = b**2``. A column dead in every direction (a parameter the model
    does not read) or one that lowers χ² (a stationary start) is left to the singular message.

    Returns:
        A mask over the physical parameters, a message naming them ("" if none), and ``jw``
        with their columns replaced by their secants.
    """
    flagged = np.zeros(pmap.n_physical, dtype=bool)
    secant, notes = jw, []
    own = np.maximum(np.abs(theta), np.where(pmap.x0 != 0, np.abs(pmap.x0), 1.0))
    for i in zero:
        moves, rises = _curved(ev, data, pmap, theta, r, int(i))
        if rises and all(v > 0 for v in rises):
            flagged[i] = True
            secant = _put_secant(secant, jw, pmap, r, int(i), moves, 0)
            notes.append(
                f"{pmap.labels[i]!r} = {theta[i]:.3g} (moved by "
                f"{1e-2 * own[i]:.2g} it raises chi2 by {min(rises):.2g} or more)"
            )
    if not notes:
        return flagged, "", secant
    shown = "; ".join(notes[:5]) + ("; ..." if len(notes) > 5 else "")
    note = (
        f"standard errors set to NaN for {shown}: the derivative of model_fn in "
        f"{'this parameter' if len(notes) == 1 else 'these parameters'} is exactly 0 at the "
        f"fitted value, though the model changes at second order (as b**2 does at b = 0), "
        f"so no linear standard error exists; the other parameters' errors are computed "
        f"beside the direction in which it moves the model; reparametrise so that the "
        f"model changes at first order (fit c = b**2 with bounds={{'c': (0, None)}}), or "
        f"fix the parameter"
    )
    return flagged, note, secant


def _curved(
    ev: ModelEvaluator,
    data: StackedData,
    pmap: ParameterMap,
    theta: np.ndarray,
    r: np.ndarray,
    i: int,
) -> tuple[list, list[float]]:
    """Move physical parameter ``i`` alone by 1 % of its own scale, each way its bounds
    allow: ``(moves, rises)``, each move's ``(residuals, step)`` and its rise of χ² over
    the data sets that read it, less χ²'s rounding (NaN where the model raised). Every rise
    above 0 marks a minimum whose derivative vanishes (``b**2`` at ``b = 0``), not a
    plateau; the evaluator's counts are left as they were."""
    chi2_k = np.sum(r * r, axis=1)  # (K,)
    floor = 1e-8 * float(np.sum(chi2_k)) + np.finfo(float).tiny  # rounding of chi2
    own = max(abs(theta[i]), abs(pmap.x0[i]) if pmap.x0[i] != 0 else 1.0)
    rows = (pmap.index == i).any(axis=1)  # (K,) the data sets that read it
    moves, rises = [], []
    state = (ev.nfev, ev.njev, ev.n_nonfinite, ev.nonfinite_theta, ev.nonfinite_where)
    try:
        for sign in (1.0, -1.0):
            moved = theta.copy()
            moved[i] = np.clip(theta[i] + sign * 1e-2 * own, pmap.lower[i], pmap.upper[i])
            step = np.array([moved[i] - theta[i]])
            if step[0] == 0:
                continue
            try:
                with np.errstate(all="ignore"):
                    rm = jac_mod.residuals(ev.predict(moved), data)
                    rise = float(np.sum(np.sum(rm * rm, axis=1)[rows] - chi2_k[rows])) - floor
            except Exception:  # a model undefined there: no evidence either way
                rise, rm = float("nan"), None
            moves.append((rm, step))
            rises.append(rise)
    finally:
        ev.nfev, ev.njev, ev.n_nonfinite, ev.nonfinite_theta, ev.nonfinite_where = state
    return moves, rises


def _put_secant(
    secant: np.ndarray,
    jw: np.ndarray,
    pmap: ParameterMap,
    r: np.ndarray,
    i: int,
    moves: list,
    k: int,
) -> np.ndarray:
    """``secant`` (a copy of ``jw`` on first use) with physical parameter ``i``'s column
    replaced, in every data set that reads it, by its secant ``(r - r_moved) / step`` over
    the side of the step (``moves[s] = (r_moved, step)``, entry ``k`` of the batch) that
    moved it furthest; unchanged where neither side could be evaluated."""
    usable = [(abs(float(st[k])), rm, float(st[k])) for rm, st in moves if rm is not None]
    usable = [u for u in usable if u[0] > 0]
    if not usable:
        return secant
    _, rm, step = max(usable, key=lambda u: u[0])
    if secant is jw:
        secant = jw.copy()
    ks, js = np.nonzero(pmap.index == i)
    with np.errstate(all="ignore"):
        secant[ks, :, js] = (r[ks] - rm[ks]) / step
    return secant


def _secant_covariance(
    secant: np.ndarray, r: np.ndarray, pmap: ParameterMap, unread: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(stderr_x, cov_global, cov_logical)`` from the Jacobian ``secant`` (its flagged
    columns replaced by :func:`_nonlinear_errors`), or None where its inverse fails.

    ``a·x + b**2`` fitted where ``b**2`` sits at its floor has a ``b`` column ``2b·1``
    that is exactly an offset's direction with the complex step, and rounding noise with
    differences where ``b`` stopped nearer 0: the shared slope's error beside four such
    data sets read 0.0648 batched and 0.0418 with ``vectorized=False`` (stop 56's open
    item), the first beside a free offset, the second as if the offsets were held. With the
    secant, both are the first: the error beside the reparametrised ``c = b**2``, as the
    single-data-set fit gave and lmfit gives for a parameter on its bound.
    """
    h, _, cs = scaled_normal(secant, r, pmap)
    if unread.any():
        ks, js = np.nonzero(unread)
        h[ks, js, :] = 0.0
        h[ks, :, js] = 0.0
        h[ks, js, js] = 1.0
    try:
        cov_s_global, cov_s_logical = schur.covariance(h, pmap.index, pmap.n_global)
    except np.linalg.LinAlgError:
        return None
    if not _inverse_ok(_inflation(cov_s_logical, h, pmap)):
        return None
    f = np.sqrt(scale) / cs
    fl = f[pmap.index]
    with np.errstate(over="ignore", invalid="ignore"):
        cov_global = cov_s_global * f[: pmap.n_global, None] * f[None, : pmap.n_global]
        cov_logical = cov_s_logical * fl[:, :, None] * fl[:, None, :]
    var = np.zeros(pmap.n_physical)
    var[pmap.index.ravel()] = np.diagonal(cov_s_logical, axis1=1, axis2=2).ravel()
    stderr_x = np.sqrt(np.maximum(var, 0.0)) * f
    return stderr_x, cov_global, cov_logical
