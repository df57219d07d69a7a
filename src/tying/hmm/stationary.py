"""The stationary distribution of a transition matrix, also for sticky chains.

An eigenvector of ``A.T`` for eigenvalue 1 is accurate to about ``eps / gap``, where
``gap`` is the distance to the next eigenvalue: a sticky chain (switch probabilities
near 1e-10, as EM gives a transition that the data barely use) has a second
eigenvalue within 1e-10 of 1, and its eigenvector was off by up to 1e-6 (hmmlearn's:
1e-4), or two eigenvalues passed for 1 and an irreducible chain was refused as split
(stop 32). Such chains go to the GTH algorithm (Grassmann, Taksar and Heyman 1985),
which has no subtraction and is accurate entrywise to a few ulps, on the chain's one
closed class, found from the zeros of ``A``; several closed classes have no unique
stationary distribution and are refused by name. Well-separated chains keep the
eigenvector (the values they always had).

Example:
    >>> import numpy as np
    >>> A = np.array([[1 - 1e-11, 1e-11], [2e-11, 1 - 2e-11]])
    >>> stationary_distribution(A).round(12).tolist()
    [0.666666666667, 0.333333333333]
"""

from __future__ import annotations

import numpy as np

__all__ = ["stationary_distribution"]

#: below this distance from 1 to the next eigenvalue the eigenvector may be off by
#: more than about 1e-12 (eps / gap): GTH instead
EIGEN_GAP = 1e-4


def stationary_distribution(A: np.ndarray) -> np.ndarray:
    """π = π A for a row-stochastic ``A`` whose chain has one closed class.

    Args:
        A: ``(K, K)`` transition matrix (rows sum to 1).

    Returns:
        ``(K,)`` probabilities; 0 for the transient states.

    Raises:
        ValueError: when the chain splits into several closed classes (each has its own
            stationary distribution), naming them.

    Example:
        >>> import numpy as np
        >>> stationary_distribution(np.array([[0.9, 0.1], [0.2, 0.8]])).round(6).tolist()
        [0.666667, 0.333333]
    """
    A = np.asarray(A, dtype=np.float64)
    w, V = np.linalg.eig(A.T)
    dist = np.abs(w - 1.0)
    ones = np.flatnonzero(dist < 1e-10)
    if ones.size == 1 and np.delete(dist, ones[0]).min(initial=np.inf) > EIGEN_GAP:
        v = np.real(V[:, ones[0]])
        v = v / v.sum()
        return np.clip(v, 0.0, None) / np.clip(v, 0.0, None).sum()
    classes = closed_classes(A)
    if len(classes) != 1:
        raise ValueError(
            f"transmat_ splits into {len(classes)} closed classes {classes} ({ones.size} "
            f"eigenvalues equal to 1): the chain has no unique stationary distribution; "
            f"start it from startprob_ instead or make the classes communicate"
        )
    (C,) = classes
    pi = np.zeros(len(A))
    pi[C] = _gth(A[np.ix_(C, C)])
    return pi


def closed_classes(A: np.ndarray) -> list[list[int]]:
    """The closed communicating classes of the chain of ``A`` (from its nonzero entries).

    Example:
        >>> import numpy as np
        >>> closed_classes(np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        [[1], [2]]
    """
    from scipy.sparse.csgraph import connected_components

    edges = np.asarray(A) > 0
    _, label = connected_components(edges, directed=True, connection="strong")
    # a class is closed when no edge leaves it
    leaves = np.zeros(label.max() + 1, dtype=bool)
    i, j = np.nonzero(edges)
    leaves[label[i[label[i] != label[j]]]] = True
    closed = [np.flatnonzero(label == c).tolist() for c in np.unique(label) if not leaves[c]]
    return sorted(closed)


def _gth(P: np.ndarray) -> np.ndarray:
    """Stationary distribution of an irreducible stochastic ``P`` by GTH elimination:
    sums of non-negative terms only (the diagonal is never read), so each entry is
    accurate to a few ulps however close the chain is to splitting."""
    P = np.array(P, dtype=np.float64)
    n = len(P)
    for k in range(n - 1, 0, -1):
        s = P[k, :k].sum()  # > 0: the chain censored to states 0..k stays irreducible
        P[:k, k] /= s
        P[:k, :k] += np.outer(P[:k, k], P[k, :k])
    pi = np.zeros(n)
    pi[0] = 1.0
    for k in range(1, n):
        pi[k] = pi[:k] @ P[:k, k]
    return pi / pi.sum()
