"""A fitted covariance held at ``min_covar`` by data that vary less than it: flagged.

``min_covar`` is a floor on every variance (or eigenvalue) after every M-step, so a
state that loses its data never becomes singular (hmmlearn applies it only at the
start). Its default, 1e-3, is absolute: for data that vary on a smaller scale every
fitted variance is the floor, not the data's. Daily log-returns (standard deviation
about 0.01, variance 1e-4) fitted with two states gave variances of 1e-3 and a
log-likelihood of 988 where the data's own variances give 1271 (hmmlearn fits them),
with no word (stop 59). :func:`warn_if_floored` warns there, naming the state, the
data's variance and a ``min_covar`` that leaves it free.

Variances are read along each feature, from the rows each state (a ``GMMHMM``: each
mixture component) explains. What the data cannot determine is not flagged: a state on
one repeated value, a constant feature, fewer than 5 rows, or a small eigenvalue of
correlated features or of a state with barely more rows than features; keeping such
a covariance positive definite is what the floor is for. Nor is a state that collapsed
onto a few neighbouring rows of a broader cloud (unit-scale data, a state on 6 rows
within 0.02 of each other, stop 59 review): the floor stops that collapse, and a
smaller ``min_covar`` would only let it shrink further. A variance is the data's
scale only where the data have structure finer than the floor: more rows within
``sqrt(min_covar)`` of the state's mean than twice (and by more than chance) those of
the same width just outside that states of a broad variance explain.

Example:
    >>> import warnings
    >>> import numpy as np
    >>> from tying.hmm import CovarianceFloorWarning, GaussianHMM
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.01, (200, 1)), rng.normal(0.1, 0.01, (200, 1))])
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     m = GaussianHMM(2, n_iter=50, random_state=1).fit(X)
    >>> [w.category.__name__ for w in caught]
    ['CovarianceFloorWarning']
    >>> m = GaussianHMM(2, n_iter=50, random_state=1, min_covar=1e-6).fit(X)  # the advice
    >>> bool(m.covars_.min() > 5e-5)
    True
"""

from __future__ import annotations

import warnings

import numpy as np

from tying.hmm.forward_backward import forward_backward

__all__ = ["CovarianceFloorWarning", "warn_if_floored", "warn_if_mixture_floored"]

#: a variance this small against the rows' squared size is rounding, not spread
_ROUNDING = 1e-13
#: fewer rows than this estimate no scale (two N(0, 1) rows are within 0.06 of each
#: other, a variance below 1e-3, 3.6 % of the time; five such rows, about 3e-6)
_MIN_ROWS = 5


class CovarianceFloorWarning(UserWarning):
    """A fitted covariance is ``min_covar`` because the data it explains vary less.

    Warned by ``GaussianHMM.fit`` and ``GMMHMM.fit``; the fitted model is returned as
    is. Pass a smaller ``min_covar`` (the message names one), or rescale ``X``.
    """


def warn_if_floored(model, X: np.ndarray, batch, name: str) -> None:
    """Warn (:class:`CovarianceFloorWarning`) where a fitted covariance sits at
    ``min_covar`` while the rows its states explain vary less than that, but not zero.

    Costs one comparison per fit (an eigenvalue per group for full covariances); only
    where a value sits at the floor, one forward-backward to see which rows each state
    explains.

    Args:
        model: a fitted ``GaussianHMM`` (inside ``fit``, its parameters final).
        X: the fit's observations, checked; batch: their :class:`SequenceBatch`.
        name: the model as the warning names it.

    Returns:
        None.
    """
    if "covars" not in model._learn() or model.n_iter_ == 0:
        return  # no M-step set them: a start value at the floor is the caller's
    mc = float(model.min_covar)
    full = model._full()
    cv = model._covars  # (G, D) variances or (G, D, D) matrices, one per covariance group
    low = np.linalg.eigvalsh(cv) if full else cv  # (G, D): eigenvalues or variances
    at_floor = np.flatnonzero((low <= mc * (1 + 1e-9)).any(axis=1))
    if not at_floor.size:
        return
    groups = model.ties_.group_of["covars"]
    along = np.diagonal(cv, axis1=-2, axis2=-1) if full else cv  # (G, D) or (G, 1)
    spread = np.broadcast_to(along, (len(cv), X.shape[1]))[groups]  # (K, D) each state's
    if model.covariance_type != "spherical" and not _spread_near(model, X, at_floor, spread, mc):
        return  # e.g. a 0/1 feature: every state at the floor on it, nothing to flag
    post = forward_backward(
        model._startprob, model._plain("transmat_"), model._log_emission(X), batch
    )
    with np.errstate(invalid="ignore"):
        owner = np.nan_to_num(post.gamma, nan=0.0).argmax(axis=1)  # each row's state
    found = []  # (where, feature, variance of the rows it explains)
    for g in at_floor:
        states = np.flatnonzero(groups == g)
        hit = _data_variance(X, owner, states, model.covariance_type, mc, spread)
        if hit is not None and hit[1] < mc:
            found.append((_where(states.tolist()), *hit))
    _warn(model, name, found)


def warn_if_mixture_floored(model, X: np.ndarray, batch, name: str) -> None:
    """:func:`warn_if_floored` for a ``GMMHMM``: per mixture component, the rows whose
    most probable state reads that component's covariance and whose most probable
    component it is.

    Args:
        model: a fitted ``GMMHMM`` (inside ``fit``, its parameters final).
        X: the fit's observations, checked; batch: their :class:`SequenceBatch`.
        name: the model as the warning names it.

    Returns:
        None.
    """
    if "covars" not in model._learn() or model.n_iter_ == 0:
        return
    mc, M = float(model.min_covar), model.n_mix
    cv = model._covars  # (G, M, D) variances or (G, M, D, D) matrices
    low = np.linalg.eigvalsh(cv) if model.covariance_type == "full" else cv  # (G, M, D)
    at_floor = np.argwhere((low <= mc * (1 + 1e-9)).any(axis=-1))  # (g, m) pairs
    if not at_floor.size:
        return
    log_b, tables, log_w, _ = model._log_parts(X)
    post = forward_backward(model._startprob, model._plain("transmat_"), log_b, batch)
    with np.errstate(invalid="ignore"):
        state = np.nan_to_num(post.gamma, nan=0.0).argmax(axis=1)
    component = np.zeros(len(X), dtype=np.intp)
    for pair, states in model._pairs().items():
        for k in states:
            rows = state == k
            component[rows] = (tables[pair][rows] + log_w[k]).argmax(axis=1)
    owner = state * M + component  # one label per (state, component)
    groups = model.ties_.group_of["covars"]
    along = np.diagonal(cv, axis1=-2, axis2=-1) if model.covariance_type == "full" else cv
    spread = along[groups].reshape(len(groups) * M, -1)  # (K*M, D) per (state, component)
    found = []
    for g, m in at_floor:
        states = np.flatnonzero(groups == g)
        hit = _data_variance(X, owner, states * M + m, model.covariance_type, mc, spread)
        if hit is not None and hit[1] < mc:
            found.append((f"component {m} of {_where(states.tolist())}", *hit))
    _warn(model, name, found)


def _spread_near(model, X, at_floor, spread, mc: float) -> bool:
    """Whether any floored group could hold a variance the data determine: along a
    feature of a fitted variance at most 10 ``mc``, rows within ``3 sqrt(mc)`` of one
    of its states' means that are not all one value. Where none could, the
    forward-backward that finds each row's state is skipped: with a 0/1 or other
    discrete feature every state sits at the floor on it, and that pass cost 1.1-1.8
    times a 10-iteration fit on 60,000 rows for no warning (stop 59 review)."""
    means = model._means[model.ties_.group_of["means"]]  # (K, D)
    groups = model.ties_.group_of["covars"]
    width = 3 * np.sqrt(mc)
    for g in at_floor:
        for k in np.flatnonzero(groups == g):
            for d in np.flatnonzero(spread[k] <= 10 * mc):
                x = X[:, d]
                near = x[np.abs(x - means[k, d]) <= width]
                if near.size >= _MIN_ROWS and np.ptp(near) > 5e-7 * np.abs(near).max():
                    return True
    return False


def _where(states: list) -> str:
    return f"state {states[0]}" if len(states) == 1 else f"tie group {states}"


def _warn(model, name: str, found: list) -> None:
    """One warning for every ``(where, feature, variance)`` found, naming the smallest."""
    if not found:
        return
    where, feature, spread = min(found, key=lambda item: item[2])
    others = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    smaller = 10.0 ** np.floor(np.log10(spread)) / 100
    feature = "" if feature is None else f" in feature {feature}"
    warnings.warn(
        f"{name}: the fitted covariance of {where}{others} is held at the floor "
        f"min_covar={model.min_covar!r}: the rows it explains have a variance of about "
        f"{spread:.3g}{feature}, below it. min_covar is a floor on every fitted variance "
        f"(hmmlearn applies it only at the start), so these covariances and the "
        f"log-likelihood are the floor's, not the data's; pass a smaller min_covar (e.g. "
        f"min_covar={smaller:.0e}) or rescale X",
        CovarianceFloorWarning,
        stacklevel=6,  # _warn, warn_if_*, the model's hook, base _fit, fit, its caller
    )


def _data_variance(X, owner, units, covariance_type: str, mc: float, spread):
    """``(feature, variance)``: the smallest per-feature variance below ``mc`` of the
    rows whose ``owner`` label is one of ``units`` (states; a GMM's state-component
    pairs) (each state's rows about their own mean, pooled; ``feature`` None for
    spherical, whose variance is their mean), among the variances the data determine:
    above rounding (a constant feature has none), from at least :data:`_MIN_ROWS` rows
    (two rows can sit close by chance), on a feature where the data have structure finer
    than the floor (:func:`_finer_than_floor`; else the state collapsed onto a few rows
    of a broader cloud, which is the floor's job) and, for 'diag', whose fitted variance
    is the floor. None where no such variance is left. ``spread``: ``(labels, D)`` the
    fitted variance along each feature that each ``owner`` label reads.

    Per feature, not per eigenvalue, for full covariances too: a small eigenvalue from
    correlated features or from a state with barely more rows than features is the
    floor's job (keeping the matrix well conditioned), a small variance along a feature
    is the data's scale."""
    parts = [X[owner == u] for u in units]
    n = sum(len(p) for p in parts)
    if n < _MIN_ROWS:
        return None
    scale = max((float(np.max(p * p)) for p in parts if len(p)), default=0.0) or 1.0
    var = sum(((p - p.mean(0)) ** 2).sum(0) for p in parts if len(p)) / n  # (D,)
    shown = var > _ROUNDING * scale
    if covariance_type == "spherical":
        if not shown.any() or not var.mean() < mc:
            return None
    else:
        shown &= var < mc
        if covariance_type == "diag":  # only where the fitted variance is the floor
            shown &= spread[units[0]] <= mc * (1 + 1e-9)
    for d in np.flatnonzero(shown)[np.argsort(var[shown])]:
        if _finer_than_floor(X, owner, units, parts, int(d), mc, spread):
            if covariance_type == "spherical":
                return None, float(var.mean())
            return int(d), float(var[d])
    return None


def _finer_than_floor(X, owner, units, parts, d: int, mc: float, spread) -> bool:
    """Whether the data along feature ``d`` have structure finer than ``sqrt(mc)`` where
    the ``units`` sit: the rows within ``sqrt(mc)`` of each unit's mean outnumber twice
    (and by more than chance) those that labels of a broad variance (over 10 ``mc``
    along ``d``) explain in the same width just outside (from ``sqrt(mc)`` to
    ``4 sqrt(mc)`` away, a third of them). A state collapsed onto neighbouring rows of a
    smooth, broader cloud has about as many rows just outside as inside."""
    s = np.sqrt(mc)
    x = X[:, d]
    broad = spread[owner, d] > 10 * mc  # rows whose own label reads a wide variance
    inner = flank = 0
    for p in parts:
        if len(p):
            dist = np.abs(x - p[:, d].mean())
            inner += int(np.count_nonzero(dist <= s))
            flank += int(np.count_nonzero((dist > s) & (dist <= 4 * s) & broad))
    expected = flank / 3  # broad rows in a width of 2 sqrt(mc) next to the state's
    return inner > 2 * expected + 3 * np.sqrt(expected + 1)
