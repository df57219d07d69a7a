"""Stop 58, second pass: predictions after a fit, where the new x leaves what the fit saw.

- A model undefined at some new x (log at x <= 0) was refused with the fit's advice,
  "NaN/inf ... at the starting values ...; check the starting values and bounds": the values
  are the fitted ones there and the fix is in x. The points and their x are now named.
- A local slot the fit held at its start (its data set's x never move the model through it,
  ``a + b·sin(x)`` on x = 0) carried no uncertainty into a band: at a new x where the model
  does read it, ``predict(1, [1.0], stderr=True)`` gave 2.64 ± 0.0029 though b[1] was never
  fitted. Those points now get NaN and a FitWarning naming the slot.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tying.fit import FitWarning, GlobalFit


def _log_fit():
    x = np.linspace(1, 4, 20)
    data = [
        (x, 2 * np.log(x) + 1 + 0.01 * np.sin(7 * x)),
        (x, np.log(x) + 1 + 0.01 * np.cos(5 * x)),
    ]
    return GlobalFit(lambda x, a, b: a * np.log(x) + b, data, shared=["b"], local=["a"],
                     init={"a": 1.0, "b": 0.0}).run()  # fmt: skip


def test_a_model_undefined_at_new_x_names_the_points_not_the_starting_values():
    res = _log_fit()
    grid = np.array([-1.0, 0.0, 0.5, 2.0])
    for call in (
        lambda: res.predict(1, grid),
        lambda: res.predict(1, grid, stderr=True),
        lambda: res.eval_uncertainty(1, grid, sigma=2),
    ):
        with pytest.raises(ValueError, match=r"cannot be evaluated at the new x: it returns "
                           r"NaN/inf at 2 of the 4 points \(point\(s\) \[0, 1\], x = -1, 0\): "
                           r"the model is not defined there; drop those points") as err:  # fmt: skip
            call()
        assert "starting values" not in str(err.value)
    # the advice, followed: drop them
    ok = grid[grid > 0]
    np.testing.assert_allclose(
        res.predict(1, ok), res.values["a"][1] * np.log(ok) + res.values["b"], rtol=1e-12
    )
    assert np.all(res.eval_uncertainty(1, ok, sigma=2) > 0)


def test_a_derivative_undefined_at_new_x_names_the_points_not_the_fit_advice():
    # a·sqrt(x - c) at x = c: a finite value, an infinite derivative in c. The fit's advice
    # came back: "at the starting values c=0.487..: ... start inside the domain, or bound 'c'"
    rng = np.random.default_rng(16)
    x = np.linspace(1, 4, 30)
    data = [(x, a * np.sqrt(x - 0.5) + rng.normal(0, 0.02, 30), 0.02) for a in (1, 2)]
    res = GlobalFit(lambda x, a, c: a * np.sqrt(x - c), data, shared=["c"], local=["a"],
                    init={"a": 1.0, "c": 0.0}, bounds={"c": (None, 0.9)}).run()  # fmt: skip
    new = np.array([2.0, res.values["c"], 3.0])
    match = (r"derivative of model_fn at dataset 'dataset 0''s fitted parameters is NaN/inf at "
             r"the new x, at 1 of the 3 points \(point\(s\) \[1\], x = 0\.48.*drop those "
             r"points from x \(result\.predict\(i, x\) gives the values alone\)")  # fmt: skip
    for call in (lambda: res.predict(0, new, stderr=True), lambda: res.eval_uncertainty(0, new)):
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "starting values" not in str(err.value) and "bound 'c'" not in str(err.value)
    # both pieces of advice, followed
    assert res.predict(0, new)[1] == 0.0
    assert np.all(res.eval_uncertainty(0, new[[0, 2]]) > 0)


def _held_fit():
    rng = np.random.default_rng(12)
    x1, x2 = np.linspace(0, 3, 20), np.zeros(20)  # sin(0) = 0: data set 1 never reads b

    def f(x, a, b, s):
        return a + b * np.sin(x) + s * x

    data = [(x1, f(x1, 1, 2, 0.3) + rng.normal(0, 0.01, 20), 0.01),
            (x2, f(x2, 1.5, 2, 0.3) + rng.normal(0, 0.01, 20), 0.01)]  # fmt: skip
    with pytest.warns(FitWarning, match=r"'b\[dataset 1\]' do\(es\) not change the model"):
        return GlobalFit(f, data, shared=["s"], local=["a", "b"],
                         init={"a": 0.0, "b": 1.0, "s": 0.0}).run()  # fmt: skip


def test_a_band_where_the_model_reads_a_held_slot_is_nan_and_named():
    res = _held_fit()
    assert res.values["b"][1] == 1.0 and np.isnan(res.stderr["b"][1])
    new = np.array([0.0, 1.0, 2.0])
    match = (r"'b\[dataset 1\]' held at its start value by the fit \(dataset 'dataset 1'.*depends on "
             r"it at 2 of the 3 points \(point\(s\) \[1, 2\], x = 1, 2\) of the new x: the "
             r"prediction there uses the unfitted start value, and its standard error and "
             r"band are NaN")  # fmt: skip
    with pytest.warns(FitWarning, match=match):
        y, se = res.predict(1, new, stderr=True)
    with pytest.warns(FitWarning, match=match):
        band = res.eval_uncertainty(1, new, sigma=1)
    # x = 0 does not read b[1]: its error is that of a[1] (s·0 = 0), as before
    assert se[0] == pytest.approx(res.stderr["a"][1], rel=1e-9)
    assert band[0] > 0 and np.isnan(se[1:]).all() and np.isnan(band[1:]).all()
    # the value alone is flagged too (it rests on b[1] = 1.0, never fitted)
    with pytest.warns(FitWarning, match=r"unfitted start value; fit that data set"):
        np.testing.assert_allclose(res.predict(1, new), y)


def test_held_slots_the_model_never_reads_keep_their_bands_without_a_warning():
    res = _held_fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, se = res.predict(1, [0.0, 0.0], stderr=True)  # x where sin(x) = 0 exactly
        assert np.all(se > 0)
        assert np.all(res.eval_uncertainty(0, [0.5, 1.0, 7.0]) > 0)  # data set 0 holds none


def test_a_standard_error_with_known_sigma_needs_no_degree_of_freedom():
    # three points, a quadratic: nfree = 0. The fit advises scale_covar=False with known
    # sigma and gives stderr then, but predict(stderr=True) refused "needs at least one
    # degree of freedom"; by hand (Lagrange weights at 0.5): 0.1·√0.71875 = 0.084779
    x, y = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.1, 4.9])
    res = GlobalFit(lambda x, a, b, c: a * x**2 + b * x + c, [(x, y, 0.1)],
                    shared=["a", "b", "c"], init={"a": 0.0, "b": 0.0, "c": 0.0},
                    scale_covar=False).run()  # fmt: skip
    assert res.nfree == 0 and res.stderr["c"] == pytest.approx(0.1, rel=1e-9)
    value, se = res.predict(0, [0.5], stderr=True)
    assert value[0] == pytest.approx(2.0875, rel=1e-9)
    assert se[0] == pytest.approx(0.1 * np.sqrt(0.71875), rel=1e-9)
    # a band needs Student's t at nfree degrees of freedom (lmfit: NaN): refused, advice works
    with pytest.raises(ValueError, match=r"needs at least one degree of freedom, got nfree = 0 "
                       r".*with scale_covar=False \(sigma known\), result\.predict\(i, x, "
                       r"stderr=True\) gives the 1-σ standard error"):  # fmt: skip
        res.eval_uncertainty(0, [0.5])
    # scale_covar=True has no error to give without a degree of freedom: still refused
    with pytest.warns(Warning):
        scaled = GlobalFit(lambda x, a, b, c: a * x**2 + b * x + c, [(x, y, 0.1)],
                           shared=["a", "b", "c"], init={"a": 0.0, "b": 0.0, "c": 0.0}).run()  # fmt: skip
    with pytest.raises(ValueError, match=r"needs at least one degree of freedom|errorbars=False"):
        scaled.predict(0, [0.5], stderr=True)
