"""The vectorised exp of the compiled EM loop (tying.hmm._numba_exp, stop 38).

It replaces NumPy's float64 exp loop only where it gives NumPy's bits, so these
tests compare bits, not tolerances: on every input (special values, the thresholds
of glibc's method, subnormal results, random), through the loop's C entry point as
the EM loop calls it, and in whole fits with and without it.
"""

import math

import numpy as np
import pytest

numba = pytest.importorskip("numba")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from tying.hmm import GaussianHMM, _numba_exp, fused_em  # noqa: E402
from tying.hmm._numba_em import ufunc_in_place  # noqa: E402


def _numpy_exp_is_libm() -> bool:
    x = np.random.default_rng(0).uniform(-700, 700, 20_000)
    return np.array_equal(np.exp(x), np.array([math.exp(v) for v in x]))


LIBM = _numpy_exp_is_libm()
needs_libm = pytest.mark.skipif(
    not LIBM, reason="NumPy's exp is its own SIMD loop here: the vectorised copy is not used"
)


def _loops():
    fn, data = fused_em._ufunc_loop(np.exp)
    numpy_loop = np.array([fn, data], dtype=np.int64)
    return _numba_exp.loop_address(), numpy_loop


def _ours(x: np.ndarray) -> np.ndarray:
    address, numpy_loop = _loops()
    y = np.ascontiguousarray(x, dtype=np.float64).copy()
    ufunc_in_place(address, numpy_loop.ctypes.data, y)
    return y


def _bits_equal(a, b):
    return np.array_equal(np.asarray(a).view(np.int64), np.asarray(b).view(np.int64))


@needs_libm
def test_the_thresholds_and_special_values_give_numpys_bits():
    edges = [0.0, -0.0, 5e-324, -5e-324, 2.0**-54, -(2.0**-54), 511.9999999, 512.0, -512.0,
             -512.0000001, 709.782712893384, 709.7827128933841, 710.0, -708.3964185322641,
             -708.4, -745.1332191019411, -745.1332191019412, -745.2, -746.0, -746.0000001,
             -1e308, 1e308, np.inf, -np.inf, np.nan, -np.nan]  # fmt: skip
    x = np.array(edges * 3)  # several chunks' worth is not needed: one chunk holds them
    with np.errstate(all="ignore"):
        assert _bits_equal(_ours(x), np.exp(x))


@needs_libm
def test_a_chunk_with_one_special_value_keeps_the_others_exact():
    rng = np.random.default_rng(1)
    x = rng.uniform(-400, 0, 1000)
    x[300] = -600.0  # special: NumPy's loop for it, the vector path for the rest of its chunk
    x[777] = np.nan
    with np.errstate(all="ignore"):
        assert _bits_equal(_ours(x), np.exp(x))


@needs_libm
@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    arrays(
        np.float64,
        st.integers(0, 700),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64)
        | st.floats(-800.0, 20.0)
        | st.floats(-1e-10, 1e-10),
    )
)
def test_property_every_input_gives_numpys_bits(x):
    with np.errstate(all="ignore"):
        assert _bits_equal(_ours(x), np.exp(x))


@needs_libm
def test_a_strided_call_is_passed_to_numpys_loop():
    """The C entry point takes NumPy's inner-loop arguments: steps other than 8 go to
    NumPy's own loop rather than being read as contiguous."""
    from tying.hmm._numba_exp import call_loop

    address, numpy_loop = _loops()

    @numba.njit
    def strided(fn, data, a):
        argv = np.empty(2, np.int64)
        argv[0] = a.ctypes.data
        argv[1] = a.ctypes.data
        dims = np.full(1, a.shape[0] // 2, np.int64)
        steps = np.full(2, 16, np.int64)
        call_loop(fn, argv.ctypes.data, dims.ctypes.data, steps.ctypes.data, data)

    x = np.linspace(-30, 3, 101)
    y = x.copy()
    strided(address, numpy_loop.ctypes.data, y)
    want = x.copy()
    want[0:100:2] = np.exp(x[0:100:2])
    assert _bits_equal(y, want)


def test_the_em_loop_uses_it_only_where_the_bits_agree(monkeypatch):
    from tying.hmm import vector_exp

    fns = np.arange(6, dtype=np.int64) + 1000
    monkeypatch.setitem(vector_exp._STATE, "loop", None)  # decided afresh, restored after
    monkeypatch.setattr(_numba_exp, "same_bits", lambda *a: False)
    assert _bits_equal(fused_em._with_vector_exp(fns), fns)
    assert vector_exp.loop() is None and _bits_equal(
        vector_exp.exp_in_place(np.zeros(3)), np.ones(3)
    )
    monkeypatch.setitem(vector_exp._STATE, "loop", None)
    monkeypatch.setenv("TYING_HMM_VECTOR_EXP", "0")
    monkeypatch.setattr(_numba_exp, "same_bits", lambda *a: True)
    assert _bits_equal(fused_em._with_vector_exp(fns), fns)


@needs_libm
@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied"])
def test_fits_are_bit_identical_with_and_without_it(monkeypatch, covariance_type):
    rng = np.random.default_rng(2)
    K, D = 4, 3
    centers = rng.normal(0, 4, (K, D))
    X = np.concatenate(
        [centers[rng.integers(0, K, 90)] + rng.normal(0, 1, (90, D)) for _ in range(24)]
    )
    X[5] = 60.0  # far from every state: densities below -512 after the shift (special inputs)
    lengths = [90] * 24

    def fit():
        model = GaussianHMM(
            K, covariance_type=covariance_type, n_iter=6, tol=-np.inf, random_state=0
        )
        return model.fit(X.copy(), lengths)  # a new array: no layout kept from the last fit

    fused_em._fns(__import__("tying.hmm._numba_em", fromlist=["x"]))  # the checked table
    with_it = fused_em._STATE["fns"]
    assert with_it is not False and with_it[0] == _numba_exp.loop_address()
    a = fit()

    def fit_with(ufunc):
        fns = with_it.copy()
        fns[0], fns[1] = fused_em._ufunc_loop(ufunc)
        monkeypatch.setitem(fused_em._STATE, "fns", fns)
        return fit()

    b = fit_with(np.exp)
    for name in ("startprob_", "transmat_", "means_", "_covars_"):
        assert _bits_equal(getattr(a, name), getattr(b, name)), name
    assert a.monitor_.history == b.monitor_.history
    # the loop is on the fit's path: a wrong one (2**x) changes the fit
    wrong = fit_with(np.exp2)
    assert not np.array_equal(wrong.means_, a.means_)


@needs_libm
@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianHMM(4, covariance_type="spherical", n_iter=5, tol=-np.inf, random_state=0),
        lambda: GaussianHMM(
            4,
            covariance_type="diag",
            n_iter=5,
            tol=-np.inf,
            random_state=0,
            ties={"means": [[0, 1]]},
        ),
        lambda: GaussianHMM(
            4, covariance_type="diag", n_iter=5, tol=-np.inf, random_state=0, n_jobs=2
        ),
    ],
    ids=["spherical", "tied-means", "n_jobs=2"],
)
def test_the_general_loop_is_bit_identical_with_and_without_it(monkeypatch, make):
    """The general loop's E-step (spherical, ties) takes the vectorised exp too: its fits,
    scores and posteriors keep their bits when it is switched off."""
    from tying.hmm import vector_exp

    rng = np.random.default_rng(3)
    centers = rng.normal(0, 4, (4, 2))
    X = np.concatenate(
        [centers[rng.integers(0, 4, 80)] + rng.normal(0, 1, (80, 2)) for _ in range(30)]
    )
    X[7] = 80.0  # shifted densities below -512: the subnormal-safe steps
    lengths = [80] * 30
    assert vector_exp.loop() is not None

    def run():
        model = make().fit(X.copy(), lengths)
        return model, model.score(X, lengths), model.predict_proba(X, lengths)

    a, score_a, post_a = run()
    monkeypatch.setitem(vector_exp._STATE, "loop", False)
    monkeypatch.setitem(fused_em._STATE, "fns", None)  # rebuilt with NumPy's loop
    b, score_b, post_b = run()
    assert fused_em._STATE["fns"] is None or fused_em._STATE["fns"][0] != _numba_exp.loop_address()
    for name in ("startprob_", "transmat_", "means_", "_covars_"):
        assert _bits_equal(getattr(a, name), getattr(b, name)), name
    assert score_a == score_b and _bits_equal(post_a, post_b)


def test_exp_in_place_keeps_numpys_bits_on_any_layout():
    from tying.hmm import vector_exp

    rng = np.random.default_rng(4)
    x = rng.uniform(-800, 5, (40, 7))
    x[3, 4] = np.nan
    for a in (x.copy(), np.asfortranarray(x), x.copy()[:, ::2], x.astype(np.float32)):
        want = np.exp(a)
        got = vector_exp.exp_in_place(a)
        assert got is a and np.array_equal(got, want, equal_nan=True)
