"""The MAP priors an HMM's ``fit`` is given: checked against the data and the ties.

hmmlearn's priors (``startprob_prior``, ``transmat_prior``, ``means_prior``,
``means_weight``, ``covars_prior``, ``covars_weight``, ``emissionprob_prior``) may be
numbers or arrays that broadcast to their parameter's per-state shape, which is known
only once ``fit`` has seen ``X`` (its number of features or symbols). Two things are
checked there, before the first E-step (stop 33):

- **Shape.** A prior that does not broadcast to its shape is refused by name, with the
  shape it needs. Before, NumPy refused it at the first M-step ("could not broadcast
  input array from shape (4, 2) into shape (3, 2)"), naming nothing.
- **Tied states take one prior.** A tie group has one physical parameter, and its
  M-step reads the prior of the group's first state. A per-state prior that differs
  within a tie group was ignored for the other states, silently (a transition prior of
  50 on a tied row changed nothing; a means prior was used in the covariance update but
  not in the mean's), so it is refused by name, as start values that differ are.

A prior can also be too large for float64: the M-step adds it to expected counts and
normalises (``transmat_prior=1e308`` summed over a row is inf), or divides it by a
small count (``covars_prior=1e308``). Such fits returned an infinite covariance with no
error, or stopped with an error that blamed the data ("sequence 0 has probability 0")
or NumPy's ``LinAlgError`` (stop 39); :func:`check_fitted_finite` refuses them by the
parameter and the priors instead.

Example:
    >>> import numpy as np
    >>> from tying.hmm import GaussianHMM
    >>> X = np.random.default_rng(0).normal(size=(40, 2))
    >>> m = GaussianHMM(3, ties={"means": [[0, 1]]}, means_weight=2.0,
    ...                 means_prior=[[0, 0], [5, 5], [1, 1]], random_state=0)
    >>> try:
    ...     m.fit(X)
    ... except ValueError as err:
    ...     print(str(err)[:72])
    means_prior: states 0 and 1 are tied (ties['means'] group [0, 1]) but th
"""

from __future__ import annotations

import numpy as np

from tying.hmm.validation import _real_array

__all__ = ["check_fitted_finite", "check_priors"]


#: the parameters whose M-step reads each prior (hmmlearn's: the means prior enters the
#: covariance update too, through ``means_weight * (mu - means_prior)**2``)
_READ_FOR = {
    "startprob_prior": ("startprob",),
    "transmat_prior": ("transmat",),
    "emissionprob_prior": ("emissions",),
    "means_prior": ("means", "covars"),
    "means_weight": ("means", "covars"),
    "covars_prior": ("covars",),
    "covars_weight": ("covars",),
}


def check_priors(model, shapes: dict) -> None:
    """Refuse a prior that does not fit its parameter, or that differs within a tie group.

    Args:
        model: an HMM inside ``fit``, its ``ties_`` resolved for this fit.
        shapes: ``{prior name: (tie kind or None, per-state shape, what the axes are)}``;
            a prior that is None (its default) is not checked, and one that no trained
            parameter's M-step reads (``params`` without them) only for its shape.

    Returns:
        None.

    Raises:
        ValueError: naming the prior, the shape it needs and the one it has, or the
            tied states whose priors differ.

    Example:
        >>> import numpy as np
        >>> from tying.hmm import CategoricalHMM
        >>> m = CategoricalHMM(2, emissionprob_prior=np.ones(5), random_state=0)
        >>> try:
        ...     m.fit(np.array([[0], [1], [2]]))
        ... except ValueError as err:
        ...     print(str(err)[:61])
        emissionprob_prior has shape (5,), which does not broadcast t
    """
    learn = model._learn()  # the parameters fit trains, as names (params may be letters)
    for name, (kind, shape, axes) in shapes.items():
        value = getattr(model, name, None)
        if value is None:
            continue
        arr = _real_array(name, value)
        try:
            fits = np.broadcast_shapes(arr.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            named = f"({axes})" if axes.startswith("per ") else f"= ({axes})"
            raise ValueError(
                f"{name} has shape {arr.shape}, which does not broadcast to {shape} {named}; "
                f"give one number, or an array of that shape (or one that broadcasts to it)"
            )
        # a prior is inert where fit trains none of the parameters its M-step reads it
        # for, as in hmmlearn: neither its sign nor its tie groups matter there. The
        # test once read params as letters: params=["means", "covars"] (the names the
        # docs recommend) skipped the sign check, and a negative covars_prior was
        # floored at min_covar with no error (stop 59)
        reads = _READ_FOR.get(name)
        if reads is not None and not set(reads) & set(learn):
            continue
        if name == "covars_prior":
            _check_covars_prior(model, np.broadcast_to(arr, shape), arr.ndim)
        if kind is None or not model.ties_.is_tied(kind):
            continue
        full = np.broadcast_to(arr, shape)
        found = model.ties_.differing(kind, full)
        if found is not None:
            group, s = found
            fix = "give tied states the same prior, or untie them"
            if kind == "covars" and getattr(model, "covariance_type", None) == "tied":
                one = "(n_features, n_features) matrix" if name == "covars_prior" else "number"
                fix = (  # the type ties them, not `ties`: "untie them" was no fix
                    f"give tied states the same prior (covariance_type='tied' holds one "
                    f"covariance: give one {one}), or use covariance_type='full' for "
                    f"per-state priors"
                )
            raise ValueError(
                f"{name}: states {group[0]} and {s} are tied (ties[{kind!r}] group "
                f"{group}) but their priors differ ({full[group[0]].tolist()} vs "
                f"{full[s].tolist()}); a tie group has one parameter and takes one "
                f"prior: {fix}"
            )


def _check_covars_prior(model, prior: np.ndarray, given_ndim: int = 3) -> None:
    """A covariance prior is a scale: non-negative variances, positive semidefinite
    matrices. A negative one has no mode where a state's data are few (the M-step's
    variance ``(prior + Σγ(x-μ)²) / count`` falls below 0): hmmlearn stored that negative
    variance, ours floored it at ``min_covar``, a number no prior gives, with no error."""
    if prior.ndim == 2:  # spherical/diag: (K, D), one scale per variance
        bad = np.argwhere(prior < 0)
        if bad.size:
            k, d = (int(i) for i in bad[0])
            raise ValueError(
                f"covars_prior must be >= 0 for {model.covariance_type!r} covariances (the "
                f"scale of each variance's inverse-gamma prior), got {float(prior[k, d])!r} "
                f"for state {k}, feature {d}; with a negative scale the update of a state "
                f"with little data is a negative variance: give numbers >= 0 (0 for none)"
            )
        return
    # each state's matrix over its largest entry: no overflow at priors near 1e308
    scale = np.abs(prior).max(axis=(1, 2), keepdims=True)  # (K, 1, 1)
    unit = prior / np.where(scale > 0, scale, 1.0)
    sym = 0.5 * (unit + unit.transpose(0, 2, 1))  # the update symmetrises it
    low = np.linalg.eigvalsh(sym)[:, 0]  # each state's smallest eigenvalue, over its scale
    bad = np.flatnonzero(low < -1e-12 * prior.shape[1])
    with np.errstate(over="ignore"):  # -D * 1e308 is -inf, said as such
        low = low * scale[:, 0, 0]
    if bad.size:
        k = int(bad[0])
        rows = (
            " (a vector of n_features numbers is read as every row, entry [i, j] = v[j], as "
            "in hmmlearn, not as the diagonal: for one scale per feature give np.diag(v))"
            if given_ndim == 1
            else ""
        )
        raise ValueError(
            f"covars_prior must be positive semidefinite for {model.covariance_type!r} "
            f"covariances (the scale matrix of the inverse-Wishart prior), but state {k}'s "
            f"has eigenvalue {float(low[k]):.6g}; with it the update of a state with little "
            f"data is not a covariance: give c * I or c (every entry c) with c >= 0, or a "
            f"positive semidefinite matrix{rows}"
        )


def check_fitted_finite(model, cause: BaseException | None = None) -> None:
    """Refuse an EM whose M-step left a parameter invalid (non-finite, a probability row
    not summing to 1, a covariance that is not positive definite), naming it and the priors.

    Called once per restart, after the EM loop (or when it raised: ``cause``), on the
    per-group parameters; valid start values and data keep every M-step finite, so a
    non-finite one comes from priors past float64's range.

    Args:
        model: an HMM inside ``fit``.
        cause: the error the EM loop raised, if it did (chained to this one).

    Returns:
        None (every parameter is finite).

    Raises:
        ValueError: naming the first non-finite parameter, its value and the priors set.

    Example:
        >>> import numpy as np
        >>> from tying.hmm import GaussianHMM
        >>> X = np.random.default_rng(0).normal(size=(40, 2))
        >>> try:
        ...     GaussianHMM(2, transmat_prior=1e308, random_state=0).fit(X)
        ... except ValueError as err:
        ...     print(str(err)[:59])
        fit: the M-step left transmat_ with a row summing to 0, not
    """
    # sums past float64 are judged here, not warned about (a RuntimeWarning, an error
    # naming nothing under -W error, came before the ValueError that names the entry)
    with np.errstate(over="ignore", invalid="ignore"):
        _check_fitted_finite(model, cause)


def _check_fitted_finite(model, cause: BaseException | None) -> None:
    arrays = model._state_arrays()
    if cause is None and _all_plainly_valid(arrays):
        return
    for private, value in arrays.items():
        kind = private[1:]
        if _plainly_valid(kind, value, cause):
            continue
        bad = ~np.isfinite(value)
        if kind in _DISTRIBUTIONS and not bad.any():
            # a row sum of inf normalises every entry to 0: finite, but no distribution
            bad = np.broadcast_to(~np.isclose(value.sum(-1, keepdims=True), 1.0), value.shape)
        elif kind == "covars" and isinstance(cause, np.linalg.LinAlgError) and not bad.any():
            # a full covariance the E-step could not factorise: a scalar covars_prior is
            # added to every entry (hmmlearn's rule), and past ~1e16 times the data's
            # scale the matrix is singular to rounding
            bad = _not_positive_definite(value)
            if bad.any():
                group = int(np.argwhere(bad)[0][0])
                where = _group_text(model, kind, group)
                raise ValueError(
                    f"fit: the M-step left covars_ not positive definite ({where}); {_why(model)}"
                ) from cause
        if not bad.any():
            continue
        public = {"transitions": "transmat_", "emissions": "emissionprob_"}.get(kind, f"{kind}_")
        group = int(np.argwhere(bad)[0][0]) if value.ndim > 1 else int(np.argmax(bad))
        where = f"state {group}" if kind == "startprob" else _group_text(model, kind, group)
        raise ValueError(
            f"fit: the M-step left {public} {_what(value, bad, where)}; {_why(model)}"
        ) from cause


#: row sums within this of 1 pass without :func:`numpy.isclose` (whose default tolerance,
#: ``1e-8 + 1e-5 * 1``, is wider): the quick check never passes what the full one refuses
_ROW_SUM_TOL = 1e-5


def _plainly_valid(kind: str, value: np.ndarray, cause: BaseException | None) -> bool:
    """The common case of :func:`check_fitted_finite` in two reductions instead of its
    per-entry masks (about 80 us of a small fit's 0.7 ms of setup, 2026-12-05): a finite
    sum means every entry is finite (an inf or NaN makes any sum inf or NaN), and a
    distribution's rows summing to 1 within :data:`_ROW_SUM_TOL`. False sends the array
    to the full check, which decides and names the offending entry; the quick check can
    only answer False where the full one might pass (a sum that overflows), never True
    where it would refuse. Covariances the E-step could not factorise (``cause``) always
    take the full check."""
    if kind == "covars" and isinstance(cause, np.linalg.LinAlgError):
        return False
    if not np.isfinite(value.sum()):  # (an overflowing sum, too: the caller silences it)
        return False
    if kind in _DISTRIBUTIONS:
        return bool((np.abs(value.sum(-1) - 1.0) <= _ROW_SUM_TOL).all())
    return True


def _all_plainly_valid(arrays: dict) -> bool:
    """:func:`_plainly_valid` of every state array at once, in fewer NumPy calls (each
    costs 2-4 us right after an EM run has flushed the caches: 18 calls were 30-80 us of
    a small fit, 2026-12-07). True only where each array's own quick check is True: a
    distribution's row sums are finite (so are its entries) and within
    :data:`_ROW_SUM_TOL` of 1 (their largest deviation; NaN compares False); the other
    sums, added as Python floats, are finite only when every one of them is (an
    overflow of finite sums answers False, and the per-array checks decide). False sends
    the arrays to those checks, which name the offending entry."""
    total = 0.0
    for private, value in arrays.items():
        if not value.size:  # (no largest deviation): the per-array checks decide
            return False
        if private[1:] in _DISTRIBUTIONS:
            if not np.abs(value.sum(-1) - 1.0).max() <= _ROW_SUM_TOL:
                return False
        else:
            total += float(value.sum())
    return bool(np.isfinite(total))


def _why(model) -> str:
    """The priors set, as the likely cause (or a request to report the defect)."""
    priors = [
        f"{name}={_short(getattr(model, name))}"
        for name in model._prior_shapes()
        if getattr(model, name, None) is not None
    ]
    default = _default_prior_note(model, passed=bool(priors))
    if priors and default:
        # an hmmlearn user passing startprob_prior or means_prior=0 still gets hmmlearn's
        # covars_prior=1e-2, the likelier cause; "give smaller priors" alone cannot be
        # followed for a prior of 0
        return (
            f"{default}; or the priors passed ({', '.join(priors)}) are so large that "
            f"they overflow float64 or swamp the data: give smaller priors"
        )
    if default:
        return default
    if not priors:
        # data whose squares are finite one by one (a fit accepts them) may still overflow
        # the M-step's sums of squared deviations: values near 1e154 read as a defect of
        # ours (stop 49)
        return (
            "no prior is set; if X holds values near float64's limits (the M-step sums "
            "squared deviations, which overflow past about 1e308), rescale X (e.g. divide "
            "each feature by its standard deviation); otherwise this is a defect: please "
            "report it with the data"
        )
    return (
        f"priors this large overflow float64 (max {np.finfo(np.float64).max:.3g}) or "
        f"swamp the data when the M-step adds them to the expected counts or divides "
        f"them by them ({', '.join(priors)}); give smaller priors"
    )


def _default_prior_note(model, passed: bool = False) -> str:
    """hmmlearn's default ``covars_prior`` (1e-2) when it is in force though none was
    passed: an hmmlearn-only argument selects hmmlearn's defaults. Added to every entry of
    a full or tied covariance it swamps data of scale below ~1e-8 and leaves a singular
    matrix; before stop 60 the refusal said "no prior is set" (data at 1e-150 scale,
    ``init_params=""``) and its advice to rescale X hid the one-word fix. ``passed``:
    other priors were given (the note then names covars_prior as the one not passed)."""
    value = model._style_defaults().get("covars_prior")
    if not value:
        return ""
    given = [n for n in model._hmmlearn_only if getattr(model, n, None) is not None]
    if isinstance(getattr(model, "params", None), str):
        given.append("params")
    return (
        f"{'covars_prior was not' if passed else 'no prior was'} passed, but hmmlearn's default "
        f"covars_prior={value:g} is in force "
        f"(hmmlearn's defaults apply because {', '.join(given)} was given) and swamps "
        f"covariances on X's scale; pass covars_prior=0 (our default), or rescale X (e.g. "
        f"divide each feature by its standard deviation)"
    )


def _not_positive_definite(value: np.ndarray) -> np.ndarray:
    """Per leading index of stacked ``(..., D, D)`` matrices: not positive definite."""
    if value.ndim < 3 or value.shape[-1] != value.shape[-2]:
        return np.zeros(len(value), dtype=bool)
    mats = value.reshape(len(value), -1, *value.shape[-2:])
    out = np.zeros(len(value), dtype=bool)
    for g, block in enumerate(mats):
        try:
            np.linalg.cholesky(block)
        except np.linalg.LinAlgError:
            out[g] = True
    return out


#: parameters whose rows are probability distributions (each sums to 1)
_DISTRIBUTIONS = ("startprob", "transitions", "emissions", "weights")


def _what(value: np.ndarray, bad: np.ndarray, where: str) -> str:
    """What is wrong with ``value`` (its first non-finite entry, or a row sum) and where."""
    first = value[bad][0]
    if not np.isfinite(first):
        return f"non-finite ({first} in {where})"
    sums = np.atleast_1d(value.sum(-1))
    return (
        f"with a row summing to {sums.flat[np.argmax(~np.isclose(sums, 1.0))]:.6g}, not 1 ({where})"
    )


def _group_text(model, kind: str, group: int) -> str:
    """``"state s"`` for an untied state, else the tie group's states."""
    kinds = model.ties_.group_of
    if kind not in kinds:  # a parameter stored per state
        return f"state {group}"
    states = model.ties_.groups(kind)[group]
    return f"state {states[0]}" if len(states) == 1 else f"tie group {states}"


def _short(value) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return f"{arr.item()!r}"
    return f"array of shape {arr.shape} up to {np.max(np.abs(arr)):.3g}"
