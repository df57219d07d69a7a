"""The M-step of a mean tied across states whose covariances differ (stop 50).

A tie group of means is one vector ``mu`` read by every state ``k`` of the group, each
with its own covariance ``Σ_k``. Given the covariances (EM's conditional-maximisation
step), the expected complete-data log-likelihood is maximised over ``mu`` by the
precision-weighted mean

    mu = (Σ_k N_k Λ_k + P)^{-1} (Σ_k Λ_k S_k + P p),    Λ_k = Σ_k^{-1},

with ``N_k`` and ``S_k`` state ``k``'s soft count and sum of observations, and ``P``,
``p`` the prior's precision and mean (hmmlearn's ``means_weight`` ``w`` on the group's
first state's covariance: ``P = Λ_first W``, ``W = diag(w)``, hmmlearn's per-feature
reading of ``w``; zero without a prior). When the group's covariances are equal, ``Λ``
cancels and this is the pooled mean ``(Σ_k S_k + w p) / (Σ_k N_k + w)`` that the M-steps compute for every
group. With unequal covariances the pooled mean is no maximiser: EM stopped with
``converged_=True`` where moving the shared mean raised the log-likelihood by 8.8 nats
(``tests/hmm/test_tied_means_stop50.py``). :func:`weighted_means` gives the exact step
for just those groups; every other group keeps the pooled mean and its bits.

The same prior enters the covariance M-step once per means group too, on the group's
first state's covariance (:func:`prior_once`): before stop 51 every state of a group
added its ``w (mu - p)^2`` there, so a mean tied over n states with ``means_weight``
counted its prior n times in the covariance and once in the mean (a covariance 0.3-0.9
off the M-step's maximiser on 12 rows; no error). And ``P`` was ``W^{1/2} Λ_first
W^{1/2}``, which differs from ``Λ_first W`` for a full covariance and a ``means_weight``
that varies by feature: covariances 1e-9 apart (weighted) and equal (pooled) gave tied
means 1.0 apart.

Example:
    >>> import numpy as np
    >>> N, Sx = np.array([10.0, 10.0]), np.array([[0.0], [20.0]])   # state means 0 and 2
    >>> out = weighted_means(np.array([0, 0]), N, Sx, np.zeros((2, 1)), np.zeros((2, 1)),
    ...                      np.array([[1.0], [4.0]]), np.array([True]))
    >>> [(g, mu.round(3).tolist()) for g, mu in out]   # pooled: 1.0; the wide state counts less
    [(0, [0.4])]
"""

from __future__ import annotations

import numpy as np

__all__ = ["prior_once", "weighted_means"]


def weighted_means(group_of, N, Sx, w, p, covs, ok) -> list[tuple[int, np.ndarray]]:
    """The exact tied-mean M-step for the groups whose states' covariances differ.

    Args:
        group_of: ``(K,)`` each state's means group.
        N: ``(K,)`` soft counts; Sx: ``(K, D)`` sums of (centred) observations.
        w: ``(K, D)`` prior weights (``means_weight``); p: ``(K, D)`` prior means, centred
            as ``Sx`` is. A group reads its first state's prior.
        covs: each state's covariance at this E-step: ``(K, D)`` variances (diagonal and
            spherical types) or ``(K, D, D)`` matrices.
        ok: ``(G,)`` groups with enough data to update (the others keep their mean).

    Returns:
        ``(group, mean)`` for each group of two or more states, ``ok``, whose
        covariances are not all equal; the mean is centred as ``Sx`` is. Groups not
        listed take the pooled mean, which is exact for them.

    Raises:
        numpy.linalg.LinAlgError: for a full covariance that cannot be inverted (the
            E-step refuses such covariances first).
    """
    out = []
    for g in np.flatnonzero(ok):
        states = np.flatnonzero(group_of == g)
        if len(states) < 2 or all(np.array_equal(covs[states[0]], covs[k]) for k in states[1:]):
            continue
        first = states[0]
        if covs.ndim == 2:  # one variance per feature: each feature on its own
            lam = 1.0 / covs[states]  # (n, D)
            prior = w[first] * lam[0]
            num = (lam * Sx[states]).sum(0) + prior * p[first]
            den = (lam * N[states, None]).sum(0) + prior
            out.append((int(g), num / den))
            continue
        lam = np.linalg.inv(covs[states])  # (n, D, D)
        # Λ_first W, hmmlearn's per-feature reading of w ((w p + S) / (w + N) per feature
        # when the covariances are equal); W^1/2 Λ W^1/2 jumped from it (stop 51)
        prior = lam[0] * w[first][None, :]
        A = (N[states, None, None] * lam).sum(0) + prior
        b = np.einsum("nij,nj->i", lam, Sx[states]) + prior @ p[first]
        out.append((int(g), np.linalg.solve(A, b)))
    return out


def prior_once(group_of, w) -> np.ndarray:
    """The means prior's weight as the covariance M-step reads it: once per means group.

    A tied mean has one prior, ``N(p, Σ_first / w)`` on the group's first state's
    covariance (the mean's update above reads it once). Its term ``w (mu - p)^2`` (or
    ``w (mu - p)(mu - p)^T``) therefore belongs to that state's covariance only; the
    group's other states add none.

    Args:
        group_of: ``(K,)`` each state's means group.
        w: ``(K, D)`` prior weights (``means_weight``) per state.

    Returns:
        ``w`` with the rows of the states that are not their group's first set to 0
        (``w`` itself when no mean is tied).

    Example:
        >>> prior_once(np.array([0, 0, 1]), np.full((3, 1), 2.0)).ravel().tolist()
        [2.0, 0.0, 2.0]
    """
    group_of = np.asarray(group_of)
    first = np.zeros(len(group_of), dtype=bool)
    first[np.unique(group_of, return_index=True)[1]] = True
    return w if first.all() else np.where(first[:, None], w, 0.0)
