"""The covariances ``fit`` starts from when nothing gives them: the data's own.

Full and tied covariances start, as hmmlearn's do, from the covariance of all of ``X``
plus ``min_covar`` on the diagonal (:func:`data_covariance`). Diagonal and spherical
ones start from each feature's variance, floored at ``min_covar``
(:func:`start_variances`); a model built hmmlearn-style (``init_params``, a prior, ...:
see ``docs/hmm.md``) starts from hmmlearn's values instead: the diagonal of
:func:`data_covariance` (``"diag"``), or the mean of all its entries (``"spherical"``,
off-diagonal ones included, as hmmlearn's ``distribute_covar_matrix_to_match_covariance_type``
takes it). Before stop 33 the hmmlearn-style start was ours too (variances with
``ddof=0``, floored instead of shifted): a hmmlearn script that assigned its start
probabilities, transitions and means and let ``init_params="c"`` start the covariances
fitted other numbers than hmmlearn (history 5.6% off after 10 iterations, spherical),
with no word of it. :class:`~tying.hmm.GMMHMM` uses the same start for its components.

Example:
    >>> import numpy as np
    >>> X = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    >>> data_covariance(X, 0.5).tolist()
    [[4.5, 3.0], [3.0, 3.5]]
    >>> start_variances(X, 0.5, hmmlearn=True, spherical=False).tolist()
    [4.5, 3.5]
    >>> start_variances(X, 0.5, hmmlearn=True, spherical=True).tolist()   # mean of all four
    [3.5]
"""

from __future__ import annotations

import numpy as np

__all__ = ["data_covariance", "start_variances"]


def data_covariance(X: np.ndarray, min_covar: float) -> np.ndarray:
    """``np.cov(X.T) + min_covar * I`` (hmmlearn's start), the identity's for one row.

    Args:
        X: ``(n_samples, n_features)`` observations.
        min_covar: added to the diagonal.

    Returns:
        ``(D, D)`` covariance.

    Example:
        >>> data_covariance(np.array([[1.0]]), 0.25).tolist()   # one row: no covariance
        [[1.25]]
    """
    D = X.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        cov = np.atleast_2d(np.cov(X.T)) if len(X) > 1 else np.eye(D)
    _check_spread(np.diag(cov), X)
    return cov + min_covar * np.eye(D)


def _check_spread(var: np.ndarray, X: np.ndarray) -> None:
    """Refuse ``X`` whose per-feature variance overflows float64: its rows pass the
    squares check one by one (up to about 1.3e154), but a start variance of inf made
    every later M-step fail as "a defect" (stop 49)."""
    bad = np.flatnonzero(~np.isfinite(var))
    if bad.size:
        d = int(bad[0])
        raise ValueError(
            f"X's feature {d} spreads from {X[:, d].min():g} to {X[:, d].max():g}: its "
            f"variance overflows float64 (a sum of {len(X)} squared deviations, as every "
            f"M-step sums them), so no Gaussian start or M-step can be computed; rescale X "
            f"(e.g. divide each feature by its standard deviation)"
        )


def start_variances(X: np.ndarray, min_covar: float, *, hmmlearn: bool, spherical: bool):
    """Start variances of a diagonal (``(D,)``) or spherical (``(1,)``) model.

    Args:
        X: ``(n_samples, n_features)`` observations.
        min_covar: the floor (ours) or the diagonal's shift (hmmlearn's).
        hmmlearn: hmmlearn's start (see the module docstring) instead of ours.
        spherical: one variance for all features.

    Returns:
        ``(D,)`` or ``(1,)`` variances.

    Example:
        >>> X = np.array([[0.0, 1.0], [2.0, 1.0]])
        >>> start_variances(X, 0.5, hmmlearn=False, spherical=False).tolist()
        [1.0, 0.5]
    """
    if hmmlearn:
        cov = data_covariance(X, min_covar)
        return np.array([cov.mean()]) if spherical else np.diag(cov).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        var = X.var(0) if len(X) > 1 else np.ones(X.shape[1])
    _check_spread(var, X)
    var = np.maximum(var, min_covar)
    return var.mean(keepdims=True) if spherical else var
