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

__all__ = ["kmeans_centres", "fewer_distinct_rows", "check_rows_for_means"]

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

    Falls back to random rows of ``X`` when there are fewer distinct rows than ``k``;
    fewer rows than ``k`` are refused, as hmmlearn (scikit-learn's ``KMeans``) refuses
    them: drawn with replacement, two centres would start on one row.

    Example:
        >>> X = np.concatenate([np.zeros((5, 1)), np.full((5, 1), 10.0)])
        >>> sorted(kmeans_centres(X, 2, np.random.default_rng(0))[:, 0].tolist())
        [0.0, 10.0]
    """
    if len(X) < k:
        raise ValueError(
            f"k-means needs at least as many rows as centres: n_samples={len(X)} should be "
            f">= n_clusters={k}; pass fewer centres or more rows"
        )
    if fewer_distinct_rows(X, k):
        rows = rng.choice(len(X), size=k, replace=False)
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


def check_rows_for_means(model, n_rows: int, n_groups: int, mean_shape: tuple) -> None:
    """Refuse a k-means start over fewer rows than means, naming the fixes that work.

    ``n_groups`` mean groups (tied means count once) of ``mean_shape`` each (``(D,)``
    for GaussianHMM, ``(n_mix, D)`` for GMMHMM, whose ``n_mix`` components each start
    from a centre). hmmlearn refuses the same fit ("n_samples=3 should be >=
    n_clusters=5"); drawing rows with replacement put two states on one row, which EM
    never separates.
    """
    M = mean_shape[0] if len(mean_shape) == 2 else 1
    k = n_groups * M
    if n_rows >= k:
        return
    K, name = model.n_components, type(model).__name__
    shape = (K, *mean_shape)
    mix = f" x n_mix={M}" if len(mean_shape) == 2 else ""
    tied = n_groups < K
    what = f"{_groups(n_groups)} of tied means" if tied else f"n_components={K}"
    of = f"{shape}, tied states given one value" if tied else f"{shape}"
    fixes = [f"Give means_init (shape {of})", _assigned_means_fix(model.init_params, of)]
    fewer = [f"n_components={n_rows // M}"] if not tied and n_rows >= M else []
    fewer += [f"n_mix={n_rows // n_groups}"] if M > 1 and n_rows >= n_groups else []
    if fewer:
        fixes.append(f"fit fewer means ({' or '.join(fewer)})")
    most = n_rows // M  # mean groups that k-means can start
    if most >= 1 and not tied:
        spec = "'all'" if most == 1 else str([list(range(K - most + 1))])
        how = f"ties={{'means': {spec}}}" if not model.ties else f"add 'means': {spec} to ties"
        fixes.append(f"tie means into at most {_groups(most)} ({how})")
    elif most >= 1:
        fixes.append(f"tie means into at most {_groups(most)}")
    raise ValueError(
        f"{name} starts its {k} means ({what}{mix}) from k-means over the rows of X, as "
        f"hmmlearn does, which needs at least as many rows as means: X has {_rows(n_rows)} "
        f"(hmmlearn: n_samples={n_rows} should be >= n_clusters={k}); started anyway, two "
        f"means would start on one row and EM would never separate them. "
        f"{'; or '.join(fixes)}"
    )


def _assigned_means_fix(init_params, shape: str) -> str:
    """How to start from assigned means under this ``init_params``."""
    if init_params is None:
        return f"assign m.means_ (shape {shape}) before fit: init_params=None keeps it"
    if isinstance(init_params, str):
        rest = init_params.replace("m", "")
    else:
        rest = [p for p in init_params if p not in ("means", "m")]
    return f"assign m.means_ (shape {shape}) and set init_params={rest!r}, without means"


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _groups(n: int) -> str:
    return f"{n} group" if n == 1 else f"{n} groups"
