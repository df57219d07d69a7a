"""Starting means from k-means, as hmmlearn starts: SciPy's k-means++ then Lloyd.

A fit with the default ``init_params`` spends most of its setup here. The check for
fewer distinct rows than ``k`` (when k-means cannot run) used to sort every row of
``X`` (``np.unique(X, axis=0)``: 47 of a 116 ms default fit at 150 x 400 x 4, K=8);
it now sorts growing prefixes and stops at the first that holds ``k`` distinct rows,
which is almost always the first. The decision, and so every start, is unchanged:
the distinct rows of a prefix are distinct rows of ``X``. For fewer than 5 features,
the Lloyd steps after the first run compiled with SciPy's own arithmetic
(:mod:`tying.hmm._numba_kmeans`), the same bits in about a third of the time
(1.05 against 3.2-3.6 ms a step at 60,000 x 4, K=8).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["kmeans_centres", "fewer_distinct_rows"]

#: rows in the first prefix sorted; each next prefix is this many times longer
_FIRST_PREFIX, _GROWTH = 64, 16


def fewer_distinct_rows(X: np.ndarray, k: int) -> bool:
    """``len(np.unique(X, axis=0)) < k``, without sorting all of ``X`` when a prefix
    already holds ``k`` distinct rows.

    Prefixes of 64, 1,024, 16,384, ... rows, then all of ``X``: at most about 7 %
    more sorting than one pass over ``X`` when the answer is True.

    Example:
        >>> X = np.repeat(np.arange(3.0), 100)[:, None]  # 3 distinct rows, late
        >>> fewer_distinct_rows(X, 3), fewer_distinct_rows(X, 4)
        (False, True)
    """
    n = len(X)
    m = min(n, _FIRST_PREFIX)
    while True:
        if len(np.unique(X[:m], axis=0)) >= k:
            return False
        if m == n:
            return True
        m = min(n, m * _GROWTH)


def kmeans_centres(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``(k, D)`` starting means: k-means++ then Lloyd (SciPy), as hmmlearn starts from k-means.

    Falls back to random rows of ``X`` when there are fewer distinct rows than ``k``.

    Example:
        >>> X = np.concatenate([np.zeros((5, 1)), np.full((5, 1), 10.0)])
        >>> sorted(kmeans_centres(X, 2, np.random.default_rng(0))[:, 0].tolist())
        [0.0, 10.0]
    """
    if fewer_distinct_rows(X, k):
        rows = rng.choice(len(X), size=k, replace=len(X) < k)
        return np.array(X[rows], dtype=np.float64)
    seed = int(rng.integers(2**31))
    scale = _overflow_scale(X)
    if scale != 1.0:  # SciPy's distances would overflow: k-means on X / 2**e, exactly
        return _kmeans(np.asarray(X, dtype=np.float64) * scale, k, seed) / scale
    return _kmeans(X, k, seed)


def _kmeans(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    from scipy.cluster.vq import kmeans2

    with warnings.catch_warnings():  # an empty cluster keeps its k-means++ seed; fine to start
        warnings.simplefilter("ignore")
        steps = _compiled_steps(X)
        if steps is None:
            centres, _ = kmeans2(X, k, minit="++", seed=seed)
        else:  # SciPy's seeds and first step (which also checks X), then its other 9 steps
            centres, _ = kmeans2(X, k, iter=1, minit="++", seed=seed)
            centres = steps(np.ascontiguousarray(X), np.array(centres, dtype=np.float64), 9)
    return np.asarray(centres, dtype=np.float64)


def _overflow_scale(X) -> float:
    """1.0, or the power of 2 that brings ``X``'s largest magnitude under
    ``2**(500 - bits(D) / 2)``, where the squared distances of rows and centres summed
    over ``D`` features (SciPy sums them directly under 5 features, as norms and dot
    products from 5) stay far from overflow. Past it SciPy's distances are inf, its
    assignment reads labels it never wrote and the process crashed (scipy 1.17, values
    of 1e154: a segmentation fault). Values that large are float64 multiples of the
    scale, so the scaling is exact but for values below about 1e-154 (subnormal once
    scaled)."""
    X = np.asarray(X)
    if X.size == 0 or X.dtype.kind != "f":
        return 1.0
    with np.errstate(invalid="ignore"):
        top = float(np.abs(X).max())
    d = X.shape[1] if X.ndim == 2 else 1
    exp = 500 - (int(d).bit_length() + 1) // 2
    if not top > 2.0**exp or top == np.inf:  # NaN and inf: kmeans2 refuses them by name
        return 1.0
    return 2.0 ** -(np.frexp(top)[1] - exp)


def _compiled_steps(X: np.ndarray):
    """:func:`tying.hmm._numba_kmeans.lloyd_steps` where it has SciPy's bits (float64 rows
    of fewer than 5 features, where SciPy assigns with its plain loop) and numba is in
    use, else None (SciPy runs every step)."""
    if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype == np.float64):
        return None
    if not 1 <= X.shape[1] < 5:
        return None
    from tying.hmm import compiled

    if compiled._kernels() is None:
        return None
    from tying.hmm._numba_kmeans import lloyd_steps

    return lloyd_steps
