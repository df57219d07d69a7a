"""The other parameters' errors beside one whose derivative vanishes (stop 57).

``a*x + b**2`` fitted where the data want a negative offset ends with ``b**2`` at its
floor. Stop 56 set ``b``'s standard error to NaN; the slope's error still depended on the
tiny ``b`` column the solver stopped with: beside four such data sets it read 0.0648
batched (complex step, ``2b·1``: an offset's direction) and 0.0418 with
``vectorized=False`` (differences of rounding noise: as if the offsets were held), with no
flag. With ``bounds={"b": (0, None)}`` the exact derivative at ``b = 0`` is 0: the check at
the solution called the model "not analytic" (its one-sided difference reads the step ``h``)
and dropped the complex step, and once kept, ``JᵀJ`` was singular. Now a flagged
parameter's column is its secant, and every way gives the slope's error beside a free
offset, computed by hand here.
"""

import numpy as np
import pytest

from tying.fit import FitWarning, GlobalFit

X = np.linspace(0, 1, 30)


def _square_offset(x, a, b):
    return a * x + b**2


def _beside_free_offsets(data, a, offsets):
    """Standard errors of the shared slope and of a free offset per data set, by hand."""
    k, n = len(data), X.size
    j = np.zeros((k * n, k + 1))
    r = []
    for i, (x, y, s) in enumerate(data):
        j[i * n : (i + 1) * n, 0] = x / s
        j[i * n : (i + 1) * n, 1 + i] = 1 / s
        r.append((y - a * x - offsets[i]) / s)
    r = np.concatenate(r)
    redchi = r @ r / (k * n - k - 1)
    return np.sqrt(np.diag(np.linalg.inv(j.T @ j)) * redchi)


def test_the_slope_error_beside_offsets_at_their_floor_is_the_same_every_way():
    rng = np.random.default_rng(3)
    data = [(X, 1.5 * X + o + rng.normal(0, 0.05, X.size), 0.05) for o in (0.4, -0.3, 0.2, -0.5)]
    seen = []
    for vectorized in (True, False):
        fit = GlobalFit(_square_offset, data, shared=["a"], local=["b"],
                        init={"a": 1.0, "b": 1.0}, vectorized=vectorized)  # fmt: skip
        with pytest.warns(FitWarning, match=r"NaN for 'b\[dataset 1\]' .*; 'b\[dataset 3\]'"):
            res = fit.run()
        b = res.values["b"]
        ref = _beside_free_offsets(data, res.values["a"], b**2)
        assert res.stderr["a"] == pytest.approx(ref[0], rel=1e-6)  # looped: 0.0418 for 0.0648
        # b[0] = sqrt(c0) off the floor: its error is the free offset's over 2·b0
        assert res.stderr["b"][0] == pytest.approx(ref[1] / (2 * b[0]), rel=1e-6)
        seen.append(res.stderr["a"])
    assert seen[0] == pytest.approx(seen[1], rel=1e-8)


@pytest.mark.parametrize("vectorized", [True, False])
def test_a_square_on_its_bound_keeps_the_complex_step_and_the_slope_error(vectorized):
    y = 2 * X - 0.5 + np.random.default_rng(0).normal(0, 0.05, X.size)
    fit = GlobalFit(_square_offset, [(X, y)], shared=["a", "b"], init={"a": 1.0, "b": 1.0},
                    bounds={"b": (0.0, None)}, vectorized=vectorized)  # fmt: skip
    with (
        pytest.warns(FitWarning, match="ended at a bound"),
        pytest.warns(FitWarning, match=r"NaN for 'b' = 0 "),
    ):
        res = fit.run()
    assert res.success and res.values["b"] == 0.0 and np.isnan(res.stderr["b"])
    assert res.why_not_complex_step == ""  # was "... not analytic there ..."
    assert "plateau" not in res.message and "does not change the model" not in res.message
    a = np.sum(X * y) / np.sum(X * X)
    redchi = np.sum((a * X - y) ** 2) / (X.size - 2)
    sxx = np.sum(X * X) - np.sum(X) ** 2 / X.size
    assert res.stderr["a"] == pytest.approx(np.sqrt(redchi / sxx), rel=1e-6)
    assert np.isnan(res.covariance[1]).all() and np.isfinite(res.covariance[0, 0])


def test_a_parameter_the_model_does_not_read_is_still_named_singular():
    # a zero column that no move of its parameter changes stays a singular Jacobian
    y = 2 * X + 1 + np.random.default_rng(1).normal(0, 0.05, X.size)
    fit = GlobalFit(lambda x, a, b, d: a * x + b, [(X, y)], shared=["a", "b", "d"],
                    init={"a": 1.0, "b": 0.0, "d": 1.0})  # fmt: skip
    with pytest.warns(FitWarning, match=r"'d' do\(es\) not change the model"):
        res = fit.run()
    assert np.isnan(res.stderr["a"])


def test_conf_interval_names_a_nan_error_as_such_not_as_a_held_slot():
    # b was fitted (it ended at its floor); "held at its start value ... does not change
    # with it" was the reason given for refusing its profile
    y = 2 * X - 0.5 + np.random.default_rng(0).normal(0, 0.05, X.size)
    fit = GlobalFit(_square_offset, [(X, y)], shared=["a", "b"], init={"a": 1.0, "b": 1.0},
                    bounds={"b": (0.0, None)})  # fmt: skip
    with pytest.warns(FitWarning):
        res = fit.run()
    with pytest.raises(ValueError, match=r"names has 'b', fitted but with a NaN standard error"):
        res.conf_interval(["b"])
    ci = res.conf_interval(["a"], sigmas=(1,))["a"]
    assert ci.lower[0] < res.values["a"] < ci.upper[0]
