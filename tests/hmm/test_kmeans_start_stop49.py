"""The k-means start's distinct-row check sorts prefixes, not all of ``X``; its
decision and every start it gives are those of the full sort."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.vq import kmeans2

from tying.hmm import GaussianHMM, kmeans_start
from tying.hmm.kmeans_start import fewer_distinct_rows, kmeans_centres


def _full_sort_centres(X, k, rng):
    """The start as it was computed before: one sort of every row."""
    if len(np.unique(X, axis=0)) < k:
        rows = rng.choice(len(X), size=k, replace=False)
        return np.array(X[rows], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        centres, _ = kmeans2(X, k, minit="++", seed=int(rng.integers(2**31)))
    return np.asarray(centres, dtype=np.float64)


@settings(derandomize=True, deadline=None, max_examples=120)
@given(
    n=st.integers(1, 2500),
    d=st.integers(1, 3),
    levels=st.integers(1, 12),
    late=st.integers(0, 2500),
    k=st.integers(1, 14),
    signed_zero=st.booleans(),
)
def test_decision_is_the_full_sorts(n, d, levels, late, k, signed_zero):
    """Rows drawn from few values, with the distinct ones possibly appearing only after
    ``late`` repeats of one row (past the first prefixes), and -0.0 beside 0.0."""
    rng = np.random.default_rng(n * 31 + late)
    X = rng.integers(0, levels, size=(n, d)).astype(float)
    X[: min(late, n)] = X[0]
    if signed_zero:
        X[X == 0] = -0.0
        X[::2][X[::2] == 0] = 0.0
    assert fewer_distinct_rows(X, k) == (len(np.unique(X, axis=0)) < k)


@pytest.mark.parametrize(
    "n, d, k, repeat_first",
    [(3000, 4, 8, 0), (3000, 2, 8, 2000), (20000, 1, 3, 17000), (5, 2, 5, 3), (1100, 3, 4, 1099)],
)
def test_starts_equal_the_full_sorts(n, d, k, repeat_first):
    X = np.random.default_rng(n + d).normal(size=(n, d))
    X[:repeat_first] = X[0]
    a = kmeans_centres(X, k, np.random.default_rng(7))
    b = _full_sort_centres(X, k, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("repeat_first", [0, 1000])
def test_default_fit_equals_the_full_sorts(monkeypatch, repeat_first):
    """A default fit (k-means start, every parameter fitted) with the prefix check and
    with the full sort put back: the same bits, also when the distinct rows come only
    after the first two prefixes."""
    X = np.random.default_rng(3).normal(size=(1200, 2))
    X[:repeat_first] = X[0]

    def fit():
        return GaussianHMM(4, n_iter=5, tol=-np.inf, random_state=0).fit(X, [600, 600])

    new = fit()
    monkeypatch.setattr(
        kmeans_start, "fewer_distinct_rows", lambda X, k: len(np.unique(X, axis=0)) < k
    )
    old = fit()
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)


@settings(derandomize=True, deadline=None, max_examples=80)
@given(
    n=st.integers(2, 3000),
    d=st.integers(1, 6),
    k=st.integers(1, 12),
    kind=st.sampled_from(["normal", "grid", "clusters", "huge", "tiny"]),
    seed=st.integers(0, 2**16),
)
def test_compiled_steps_give_scipys_centres(n, d, k, kind, seed):
    """The start with the compiled Lloyd steps (fewer than 5 features) equals SciPy's
    ``kmeans2`` run for all 10 steps, bit for bit: on grids (equal distances, where
    the first nearest centre must win), on well separated clusters, on data that
    empties clusters, and on values near the range's ends."""
    rng = np.random.default_rng(seed)
    k = min(k, n)  # fewer rows than centres is refused (stop 62)
    if kind == "grid":
        X = rng.integers(-2, 3, size=(n, d)).astype(float)
    elif kind == "clusters":
        X = rng.normal(scale=5.0, size=(3, d))[rng.integers(0, 3, n)] + rng.normal(size=(n, d))
    else:
        X = rng.normal(size=(n, d)) * {"normal": 1.0, "huge": 1e160, "tiny": 1e-160}[kind]
    a = kmeans_centres(X, k, np.random.default_rng(seed))
    if kind == "huge":  # SciPy alone crashes here (next test): its start on X / 2**e
        scale = 2.0 ** -(np.frexp(np.abs(X).max())[1] - 499)
        b = _full_sort_centres(X * scale, k, np.random.default_rng(seed)) / scale
    else:
        b = _full_sort_centres(X, k, np.random.default_rng(seed))
    np.testing.assert_array_equal(a, b)


def test_compiled_steps_are_used_below_five_features(monkeypatch):
    """The guard above would pass vacuously if the compiled steps never ran."""
    from tying.hmm import compiled

    if compiled._kernels() is None:
        pytest.skip("numba kernels unavailable")
    from tying.hmm import _numba_kmeans

    calls = []
    real = _numba_kmeans.lloyd_steps
    monkeypatch.setattr(_numba_kmeans, "lloyd_steps", lambda *a: calls.append(1) or real(*a))
    X = np.random.default_rng(0).normal(size=(500, 4))
    kmeans_centres(X, 3, np.random.default_rng(0))
    assert calls == [1]
    kmeans_centres(np.random.default_rng(0).normal(size=(500, 5)), 3, np.random.default_rng(0))
    assert calls == [1]  # 5 features: SciPy's BLAS distances, every step SciPy's


@pytest.mark.parametrize("d", [1, 2, 4, 5, 40])
def test_values_whose_squared_distances_overflow_start_finite(d):
    """Rows up to 1.3e154 (each square finite: a fit accepts them) have squared
    distances past float64's range. SciPy's kmeans2 then computed inf distances, read
    labels it never wrote and crashed the process (a segmentation fault, scipy 1.17,
    D = 1, 2 and 4); the start scales X by a power of 2 first, so its centres are finite
    and each lies within the data's range."""
    X = np.random.default_rng(d).uniform(-1.3e154, 1.3e154, size=(400, d))
    centres = kmeans_centres(X, 3, np.random.default_rng(0))
    assert np.isfinite(centres).all()
    assert (centres >= X.min(0)).all() and (centres <= X.max(0)).all()


@pytest.mark.parametrize("ctype", ["diag", "spherical", "full", "tied"])
@pytest.mark.parametrize("hmmlearn_start", [False, True])
def test_a_fit_of_rows_near_the_limit_is_refused_with_the_fix(ctype, hmmlearn_start):
    """Rows up to 1.3e154 (each square finite, so accepted) crashed the process in the
    k-means start; now the start runs, and the variance that overflows is refused at the
    start, naming the feature and the fix (it went on to fail every M-step as "a defect
    of ours", with a RuntimeWarning first). The model is left unfitted."""
    X = np.random.default_rng(2).uniform(-1.3e154, 1.3e154, size=(400, 2))
    style = {"params": "stmc"} if hmmlearn_start else {}  # a str params: hmmlearn's start
    model = GaussianHMM(3, ctype, n_iter=5, tol=-np.inf, random_state=0, **style)
    with pytest.raises(
        ValueError, match=r"X's feature 0 spreads from .* variance overflows float64.*rescale X"
    ):
        model.fit(X, [200, 200])
    assert not hasattr(model, "means_")
