"""Stop 41: the exact complex-step Jacobian is no longer refused for a column whose
central difference rounding has erased.

An offset started at 0 under a model near 1e14 (a decay in counts per second, a pressure
in pascals) has central differences of 6e-6 in the offset: ``(a·e^(-kx) + h) - (a·e^(-kx)
- h)`` rounds to 0. The complex step gives that column exactly (1), but it was kept only
if it agreed with central differences to 1e-6 of the column, so it was refused; the
offset's column was 0 at every iteration, the offset never moved from 0, and the fit
came back ``success=True`` with values several standard errors off and a warning that the
offset "does not change the model". Rounding of the differenced values is now allowed
for in that comparison. Every test here fails on the old code (the FitWarning is an error
under the suite's warnings-as-errors; the values differ)."""

from __future__ import annotations

import warnings

import lmfit
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tying.fit import GlobalFit
from tying.fit.datasets import stack
from tying.fit.model import ModelEvaluator
from tying.fit.roles import ParameterMap
from tying.fit.solvers import ConvergenceWarning

RNG = np.random.default_rng(41)
X = RNG.uniform(0, 3, 40)
Y = 2.5 * np.exp(-1.3 * X) + 0.3 + RNG.normal(0, 0.02, 40)


def decay(x, a, k, c):
    return a * np.exp(-k * x) + c


def _fit(scale: float, solver: str = "lm", k_sets: int = 1, sigma: bool = False):
    data = [
        (X, Y * scale * (1 + 0.1 * i)) + ((0.02 * scale,) if sigma else ()) for i in range(k_sets)
    ]
    roles = {"shared": ["a", "k", "c"]} if k_sets == 1 else {"shared": ["k", "c"], "local": ["a"]}
    return GlobalFit(
        decay, data, init={"a": scale, "k": 1.0, "c": 0.0}, solver=solver, **roles
    ).run()


@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("solver", ["lm", "trf"])
@pytest.mark.parametrize("scale", [1e14, 1e16, 1e20])
def test_an_offset_started_at_zero_under_a_huge_model_fits_as_at_scale_one(scale, solver, sigma):
    """Before: c stayed 0.0, k = 0.878 (true minimum 1.307, stderr 0.019), success=True
    with a FitWarning naming c as a parameter that does not change the model (trf with
    sigma: success=False, stalled)."""
    ref, big = _fit(1.0, solver, sigma=sigma), _fit(scale, solver, sigma=sigma)
    assert big.success, big.message
    assert big.values["c"] / scale == pytest.approx(ref.values["c"], rel=1e-6)
    assert big.values["k"] == pytest.approx(ref.values["k"], rel=1e-6)
    assert big.values["a"] / scale == pytest.approx(ref.values["a"], rel=1e-6)
    assert big.chi2 / (1.0 if sigma else scale**2) == pytest.approx(ref.chi2, rel=1e-6)
    for name, unit in (("a", scale), ("k", 1.0), ("c", scale)):
        assert big.stderr[name] / unit == pytest.approx(ref.stderr[name], rel=1e-5)


def test_the_scale_one_fit_is_lmfit_s_and_lmfit_itself_fails_at_1e16():
    """The anchor: lmfit agrees at scale 1; at 1e16 its forward differences lose the
    offset's column too (c stays 0), so scale invariance is the reference there."""
    ref = _fit(1.0)
    model = lmfit.Model(decay)
    out = model.fit(Y, model.make_params(a=1.0, k=1.0, c=0.0), x=X)
    for name in "akc":
        assert ref.values[name] == pytest.approx(out.params[name].value, rel=1e-6)
        assert ref.stderr[name] == pytest.approx(out.params[name].stderr, rel=1e-4)
    assert ref.chi2 == pytest.approx(out.chisqr, rel=1e-9)
    big = model.fit(Y * 1e16, model.make_params(a=1e16, k=1.0, c=0.0), x=X)
    assert big.params["c"].value == 0.0  # lmfit's own failure, not ours


def test_a_global_fit_with_local_amplitudes_keeps_the_exact_offset_column():
    ref, big = _fit(1.0, k_sets=3), _fit(1e15, k_sets=3)
    assert big.success, big.message
    np.testing.assert_allclose(big.values["a"] / 1e15, ref.values["a"], rtol=1e-6)
    assert big.values["c"] / 1e15 == pytest.approx(ref.values["c"], rel=1e-6)
    assert big.values["k"] == pytest.approx(ref.values["k"], rel=1e-6)


def test_a_non_analytic_model_still_keeps_central_differences():
    """The allowance is rounding only: abs() of a parameter at ordinary scales still
    disagrees with the complex step and keeps central differences."""
    data = stack([(X, Y)])
    pmap = ParameterMap(
        ["a", "k", "c"], data.metadata, shared=["a", "k", "c"],
        init={"a": 1.0, "k": 1.0, "c": 0.5},
    )  # fmt: skip
    ev = ModelEvaluator(lambda x, a, k, c: a * np.exp(-k * x) + np.abs(c), data, pmap)
    jac = ev.jacobian(pmap.x0)
    assert ev._complex_ok is False
    np.testing.assert_allclose(jac[0, :40, 2], 1.0, rtol=1e-8)


def peak_on_floor(x, center, width, amp, c):
    return amp * np.exp(-0.5 * ((x - center) / width) ** 2) + c


@settings(derandomize=True, deadline=None, max_examples=16)
@given(
    y_exponent=st.floats(-12.0, 19.0),
    x_exponent=st.floats(-12.0, 12.0),
    vectorized=st.sampled_from(["auto", False]),
)
@example(y_exponent=0.0, x_exponent=-10.25, vectorized="auto")  # the loud stall
@example(y_exponent=16.0, x_exponent=-9.0, vectorized=False)
def test_property_a_fit_is_invariant_to_the_units_of_x_and_y(y_exponent, x_exponent, vectorized):
    """The kind of defect: a parameter started at 0 (a center, an offset) whose first
    difference step does not suit the units of x or y. Measuring x and y in other units
    (x, the center and the width times 10**x_exponent; y, the amplitude and the offset
    times 10**y_exponent) changes the fitted values and their errors by those factors and
    nothing else, with the complex step (auto) or with central differences alone, or the
    fit says it did not converge. On a grid of 776 fits (x exponents -12 to 12 by 0.25, y
    exponents -12, 0, 10, 19, both derivative paths) 760 gave the unit-scale values and 16
    stalled in lm at x exponents -10.25 and -6.25 with a ConvergenceWarning; none gave other
    values silently (before the fix every one left the center at 0)."""
    sx, sy = 10.0**x_exponent, 10.0**y_exponent
    y = peak_on_floor(PEAK_X, 0.3, 0.8, 2.0, 0.4) + PEAK_NOISE[0]

    def fit(ux, uy):
        return GlobalFit(
            peak_on_floor, [(PEAK_X * ux, y * uy)], shared=["center", "width", "amp", "c"],
            init={"center": 0.0, "width": ux, "amp": uy, "c": 0.0}, vectorized=vectorized,
        ).run()  # fmt: skip

    ref = fit(1.0, 1.0)
    assert ref.success, ref.message
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        other = fit(sx, sy)
    if any(issubclass(w.category, ConvergenceWarning) for w in seen):
        assert not other.success  # loud: the warning and the result say it stalled
        return
    assert not seen, [str(w.message) for w in seen]
    assert other.success, other.message
    for name, unit in (("center", sx), ("width", sx), ("amp", sy), ("c", sy)):
        assert other.values[name] / unit == pytest.approx(ref.values[name], rel=1e-6)
        assert other.stderr[name] / unit == pytest.approx(ref.stderr[name], rel=1e-4)


def _many(scale: float, vectorized="auto"):
    """30 data sets of 100 points: too large for the complex step (central differences)."""
    rng = np.random.default_rng(7)
    x = np.linspace(0, 3, 100)
    data = [
        (x, scale * (a * np.exp(-1.3 * x) + 0.3 + rng.normal(0, 0.02, 100)))
        for a in rng.uniform(1, 3, 30)
    ]
    return GlobalFit(
        decay, data, shared=["k", "c"], local=["a"], init={"a": scale, "k": 1.0, "c": 0.0},
        vectorized=vectorized,
    ).run()  # fmt: skip


@pytest.mark.parametrize("vectorized", ["auto", False])
def test_a_difference_column_lost_in_rounding_is_taken_again_with_longer_steps(vectorized):
    """Central differences alone (no complex step: 30 data sets, or the loop): before, c's
    column was 0, c stayed at 0 and k came back 0.854 (true minimum 1.302), success=True."""
    ref, big = _many(1.0, vectorized), _many(1e14, vectorized)
    assert big._context.ev._complex_ok is not True  # central differences did this
    assert big.success, big.message
    assert big.values["c"] / 1e14 == pytest.approx(ref.values["c"], rel=1e-6)
    assert big.values["k"] == pytest.approx(ref.values["k"], rel=1e-6)
    np.testing.assert_allclose(big.values["a"] / 1e14, ref.values["a"], rtol=1e-6)
    assert big.stderr["c"] / 1e14 == pytest.approx(ref.stderr["c"], rel=1e-4)


def test_a_parameter_the_model_does_not_read_keeps_a_zero_column():
    """The longer steps find nothing to see: the column stays 0, as before."""
    data = stack([(X, Y * 1e14)])
    pmap = ParameterMap(
        ["a", "k", "c"], data.metadata, shared=["a", "k", "c"],
        init={"a": 1e14, "k": 1.0, "c": 0.0},
    )  # fmt: skip
    ev = ModelEvaluator(lambda x, a, k, c: a * np.exp(-k * x), data, pmap, vectorized=False)
    jac = ev.jacobian(pmap.x0)
    assert not jac[0, :40, 2].any()
    assert jac[0, :40, 0] == pytest.approx(np.exp(-X), rel=1e-8)


PEAK_X = np.linspace(-3, 3, 60)
PEAK_AMPS = (1.0, 2.0, 3.0)
PEAK_NOISE = np.random.default_rng(11).normal(0, 0.02, (3, 60))


def peak(x, center, width, amp):
    return amp * np.exp(-0.5 * ((x - center) / width) ** 2)


def _peaks(unit: float, vectorized="auto"):
    x = PEAK_X * unit
    data = [(x, peak(PEAK_X, 0.3, 0.8, a) + noise, 0.02) for a, noise in zip(PEAK_AMPS, PEAK_NOISE)]
    return GlobalFit(
        peak, data, shared=["center", "width"], local=["amp"],
        init={"center": 0.0, "width": unit, "amp": 1.0}, vectorized=vectorized,
    ).run()  # fmt: skip


@pytest.mark.parametrize("unit", [1e-9, 10**-6.5])
@pytest.mark.parametrize("vectorized", ["auto", False])
def test_a_center_at_zero_under_a_peak_a_nanometre_wide_is_fitted(vectorized, unit):
    """x in metres (a peak 1e-9 wide), the center started at 0: its first difference step
    (6e-6) landed in the flat tails on both sides, the column was 0, and the fit came back
    success=True with center = 0.0 (true 0.3e-9), width 0.856e-9 (true 0.8e-9). At a peak
    3e-7 wide the tails are 1e-79, not 0: the fit stopped at its start (success=False)."""
    ref, nano = _peaks(1.0, vectorized), _peaks(unit, vectorized)
    assert nano.success, nano.message
    assert nano.values["center"] / unit == pytest.approx(ref.values["center"], rel=1e-6)
    assert nano.values["width"] / unit == pytest.approx(ref.values["width"], rel=1e-6)
    np.testing.assert_allclose(nano.values["amp"], ref.values["amp"], rtol=1e-6)
    assert nano.stderr["center"] / unit == pytest.approx(ref.stderr["center"], rel=1e-4)
    # the unit-scale fit is lmfit's (three data sets as one model with expr ties)
    params = lmfit.Parameters()
    params.add("center", 0.0)
    params.add("width", 1.0)
    for i in range(3):
        params.add(f"amp{i}", 1.0)

    def residual(p):
        return np.concatenate(
            [(peak(PEAK_X, p["center"], p["width"], p[f"amp{i}"]) - (peak(PEAK_X, 0.3, 0.8, a)
              + PEAK_NOISE[i])) / 0.02 for i, a in enumerate(PEAK_AMPS)]
        )  # fmt: skip

    out = lmfit.minimize(residual, params)
    assert ref.values["center"] == pytest.approx(out.params["center"].value, rel=1e-6)
    assert ref.stderr["center"] == pytest.approx(out.params["center"].stderr, rel=1e-3)
    assert ref.chi2 == pytest.approx(out.chisqr, rel=1e-9)
