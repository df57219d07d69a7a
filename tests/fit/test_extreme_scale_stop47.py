"""Stop 47: fits whose data, sigma or parameters live near 1e±299 (or 1e±150).

The answers of a rescaled problem are known from the same problem at O(1) (values,
standard errors, chi2 rescale exactly); lmfit's own answer at O(1) anchors those. Before
stop 47, JᵀJ of a Jacobian column near 1e-299 underflowed to 0: NaN standard errors and a
false "'a' does not change the model".
"""

from __future__ import annotations

import warnings

import lmfit
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.fit import GlobalFit
from tying.fit.solvers import residual_cosines

X0 = np.linspace(0.0, 1.0, 30)
Y0 = 2.0 * np.exp(-1.5 * X0) + np.random.default_rng(0).normal(0.0, 0.02, 30)
S0 = np.full(30, 0.02)


def decay(x, a, k):
    return a * np.exp(-k * x)


def _fit(sx=1.0, sy=1.0, ss=1.0, sigma=True, solver="lm"):
    """The O(1) problem with x·sx, y·sy, sigma·sy·ss; warnings recorded, not raised."""
    ds = (X0 * sx, Y0 * sy, S0 * sy * ss) if sigma else (X0 * sx, Y0 * sy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = GlobalFit(
            decay,
            [ds],
            shared=["a", "k"],
            init={"a": 1.0 * sy, "k": 1.0 / sx},
            scale_covar=not sigma,
            solver=solver,
        ).run()
    return res, [str(w.message) for w in caught]


def _lmfit_o1():
    m = lmfit.Model(decay)
    r = m.fit(Y0, m.make_params(a=1.0, k=1.0), x=X0, weights=1 / S0, scale_covar=False)
    return r


def _assert_rescaled(res, sx, sy, ref, chi2_factor=1.0, err_factor=1.0):
    """Values as the O(1) fit's rescaled; chi2 = chi2_0·chi2_factor, errors ·err_factor."""
    assert res.success, res.message
    np.testing.assert_allclose(res.values["a"] / sy, ref.values["a"], rtol=1e-7)
    np.testing.assert_allclose(res.values["k"] * sx, ref.values["k"], rtol=1e-7)
    np.testing.assert_allclose(res.stderr["a"] / sy / err_factor, ref.stderr["a"], rtol=1e-6)
    np.testing.assert_allclose(res.stderr["k"] * sx / err_factor, ref.stderr["k"], rtol=1e-6)
    np.testing.assert_allclose(res.chi2 / chi2_factor, ref.chi2, rtol=1e-7)


def test_o1_reference_matches_lmfit():
    ref, caught = _fit()
    lm = _lmfit_o1()
    assert not caught
    for n in ("a", "k"):
        np.testing.assert_allclose(ref.values[n], lm.params[n].value, rtol=1e-6)
        np.testing.assert_allclose(ref.stderr[n], lm.params[n].stderr, rtol=1e-5)
    np.testing.assert_allclose(ref.chi2, lm.chisqr, rtol=1e-8)


@pytest.mark.parametrize("sy", [1e299, 1e-299])
def test_sigma_near_1e299_gives_the_rescaled_errors(sy):
    ref, _ = _fit()
    res, caught = _fit(sy=sy)
    _assert_rescaled(res, 1.0, sy, ref)
    # no false diagnosis: 'a' changes the model, its Jacobian column is only tiny
    assert not any("does not change the model" in m or "singular" in m for m in caught)
    # the variance of 'a' (stderr² near 1e±600) is past float64: said, not stored as 0/inf
    assert res.covariance is None and not res.errorbars
    assert any("standard error(s) of 'a'" in m and "square past float64" in m for m in caught)
    with pytest.raises(ValueError, match="errorbars=False.*square past float64"):
        res.eval_uncertainty(0, [0.5])


def test_parameter_near_1e299_gives_the_rescaled_errors():
    ref, _ = _fit(sigma=False)
    res, caught = _fit(sx=1e-299, sigma=False)
    _assert_rescaled(res, 1e-299, 1.0, ref)
    assert not any("does not change the model" in m for m in caught)
    assert any("standard error(s) of 'k'" in m for m in caught)


@pytest.mark.parametrize("solver", ["lm", "trf"])
def test_x_near_1e299_fits_instead_of_a_false_refusal(solver):
    """x near 1e299, k near 1e-299: the difference step of k was floored at 6e-296 (6,000
    times k), exp(+6e-296·x) overflowed, and the fit refused "the derivative ... is -inf"."""
    ref, _ = _fit()
    res, caught = _fit(sx=1e299, solver=solver)
    _assert_rescaled(res, 1e299, 1.0, ref)
    assert any("standard error(s) of 'k'" in m for m in caught)


@pytest.mark.parametrize(("sx", "sy"), [(1.0, 1e299), (1.0, 1e-299), (1e-299, 1.0)])
def test_trf_near_1e299_gives_the_rescaled_answers(sx, sy):
    """trf's x_scale="jac" squared a column near 1e-299 to 0: success=False at the start
    values after max_nfev, where lm reached the rescaled problem's answers."""
    ref, _ = _fit()
    res, _ = _fit(sx=sx, sy=sy, solver="trf")
    _assert_rescaled(res, sx, sy, ref)


def _global(s, xs, solver, bounded):
    """Three decays, k shared and a local (the Schur-complement path), sigma given."""
    rng = np.random.default_rng(0)
    data = [
        (X0 * xs, s * (a * np.exp(-1.5 * X0) + rng.normal(0, 0.02, 30)), s * S0)
        for a in (1.0, 2.0, 3.0)
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = GlobalFit(
            decay, data, shared=["k"], local=["a"], init={"a": s, "k": 1.0 / xs},
            scale_covar=False, solver=solver, bounds={"k": (0.0, None)} if bounded else None,
        ).run()  # fmt: skip
    return res, [str(w.message) for w in caught]


@pytest.mark.parametrize("solver", ["lm", "trf"])
@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize(("s", "xs"), [(1e299, 1.0), (1e-299, 1.0), (1.0, 1e299)])
def test_global_fit_near_1e299_gives_the_rescaled_answers(solver, bounded, s, xs):
    """The Schur-complement LM formed JᵀJ of the raw columns: at sigma near 1e299 it
    stopped with a, k 50 % off (success=False) and numpy overflow warnings."""
    ref, _ = _global(1.0, 1.0, solver, bounded)
    res, caught = _global(s, xs, solver, bounded)
    assert res.success, res.message
    np.testing.assert_allclose(res.values["a"] / s, ref.values["a"], rtol=1e-6)
    np.testing.assert_allclose(res.values["k"] * xs, ref.values["k"], rtol=1e-6)
    np.testing.assert_allclose(res.stderr["a"] / s, ref.stderr["a"], rtol=1e-5)
    np.testing.assert_allclose(res.stderr["k"] * xs, ref.stderr["k"], rtol=1e-5)
    np.testing.assert_allclose(res.chi2, ref.chi2, rtol=1e-7)
    assert all("square past float64" in m for m in caught), caught


def test_covariance_kept_where_it_fits_float64():
    """x and y near 1e-150 without sigma: chi2 near 1e-303, stderr(k) near 1e148, its
    variance 1e296 a normal float: covariance and bands as the O(1) problem's, rescaled."""
    ref, _ = _fit(sigma=False)
    s = 1e-150
    res, caught = _fit(sx=s, sy=s, sigma=False)
    assert not caught
    np.testing.assert_allclose(res.values["k"] * s, ref.values["k"], rtol=1e-7)
    np.testing.assert_allclose(res.stderr["k"] * s, ref.stderr["k"], rtol=1e-6)
    np.testing.assert_allclose(res.stderr["a"] / s, ref.stderr["a"], rtol=1e-6)
    d = np.array([1 / s, s])  # (a, k) covariance_names order
    np.testing.assert_allclose(res.covariance * np.outer(d, d), ref.covariance, rtol=1e-6)
    band, band0 = res.eval_uncertainty(0, [0.5 * s]), ref.eval_uncertainty(0, [0.5])
    np.testing.assert_allclose(band / s, band0, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-160, 1e160])
def test_residual_cosines_free_of_column_units(scale):
    """A residual along a column of 1e-160 has cosine 1 (it read 0, "a minimum")."""
    col = np.linspace(1.0, 2.0, 5)
    jm = sp.csr_matrix(np.stack([col * scale, np.ones(5)], axis=1))
    r = col - col.mean() * 0  # parallel to column 0
    cos, grad = residual_cosines(jm, r)
    np.testing.assert_allclose(cos[0], 1.0, rtol=1e-12)
    assert grad[0] > 0


EXP = st.integers(min_value=-150, max_value=150)


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    ex=EXP,
    ey=EXP,
    es=st.integers(min_value=-30, max_value=30),
    sigma=st.booleans(),
    solver=st.sampled_from(["lm", "trf"]),
)
def test_rescaled_fit_gives_scaled_answers_or_fails_honestly(ex, ey, es, sigma, solver):
    """x·10^ex, y·10^ey, sigma·10^(ey+es): the O(1) answers rescaled, or an honest failure
    (a ValueError, or success False); never a false "does not change the model"."""
    ref, _ = _fit(sigma=sigma)
    sx, sy, ss = 10.0**ex, 10.0**ey, 10.0**es if sigma else 1.0
    try:
        res, caught = _fit(sx=sx, sy=sy, ss=ss, sigma=sigma, solver=solver)
    except ValueError:
        return
    assert not any("does not change the model" in m for m in caught)
    if not res.success:
        return
    if sigma:  # sigma·ss: chi2 / ss², and with scale_covar=False the errors · ss
        _assert_rescaled(res, sx, sy, ref, chi2_factor=ss**-2, err_factor=ss)
    else:  # residuals · sy
        _assert_rescaled(res, sx, sy, ref, chi2_factor=sy**2)


def test_profile_intervals_near_1e150_rescale_without_overflow_warnings():
    """conf_interval's Gauss-Newton check formed JᵀJ of raw columns: at x, y near 1e150
    each profile point warned "overflow encountered in matmul" (an error under -W error)."""
    ref, _ = _fit(sigma=False)
    s = 1e150
    res, _ = _fit(sx=s, sy=s, sigma=False)
    ci0 = ref.conf_interval(sigmas=[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = res.conf_interval(sigmas=[1])
    for name, unit in (("a", s), ("k", 1 / s)):
        np.testing.assert_allclose(ci[name].lower / unit, ci0[name].lower, rtol=1e-6)
        np.testing.assert_allclose(ci[name].upper / unit, ci0[name].upper, rtol=1e-6)


@pytest.mark.parametrize("es", [3, 5, 6, -3])
def test_trf_stopped_by_its_absolute_gtol_is_finished_to_the_minimum(es):
    """trf's gtol test bounds |Jᵀr| in the residuals' own units: with sigma·1e5 (chi2·1e-10)
    it stopped 5.7e-7 (relative) short of the minimum in `a` with success=True, a cosine
    under MAX_COSINE (found by the property test above under xdist). The LM's relative
    tests now finish a gtol stop on the exact-solver path too."""
    ref, _ = _fit()
    ss = 10.0**es
    res, _ = _fit(ss=ss, solver="trf")
    assert res.success, res.message
    np.testing.assert_allclose(res.values["a"], ref.values["a"], rtol=1e-9)
    np.testing.assert_allclose(res.values["k"], ref.values["k"], rtol=1e-9)
    np.testing.assert_allclose(res.chi2 * ss**2, ref.chi2, rtol=1e-9)
