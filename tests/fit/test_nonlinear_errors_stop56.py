"""A standard error the model's linearisation does not support is NaN and named (stop 56).

``a*x + b**2`` fitted to data that want a negative offset ends where ``b**2`` is at its
floor, ``b ≈ 0``, whose derivative ``2b`` vanishes: the covariance read a standard error of
2.9e7 at ``b = 1.7e-9`` and 5.3e7 at ``b = 9.1e-10`` from another start (the inverse of
wherever the solver stopped), finite, with ``errorbars`` True; lmfit's leastsq reports no
error bars there. With ``bounds={"b": (0, None)}`` the fit ended on the bound with a
standard error of 15910, ``success=True``: the inverse of the one-sided difference step.
Such a standard error is now NaN with a ``FitWarning`` that names the parameter, and the
other parameters keep theirs.
"""

import numpy as np
import pytest

from tying.fit import FitWarning, GlobalFit

X = np.linspace(0, 1, 30)
NOISE = np.random.default_rng(0).normal(0, 0.05, X.size)


def _square_offset(x, a, b):
    return a * x + b**2


def test_vanishing_derivative_gives_nan_not_the_inverse_of_where_it_stopped():
    y = 2 * X - 0.5 + NOISE
    for b0 in (1.0, 0.3):
        fit = GlobalFit(_square_offset, [(X, y)], shared=["a", "b"], init={"a": 1.0, "b": b0})
        with pytest.warns(FitWarning, match=r"standard errors set to NaN for 'b' = .* far from "
                          r"linear in this parameter"):  # fmt: skip
            res = fit.run()
        assert abs(res.values["b"]) < 1e-6
        assert np.isnan(res.stderr["b"])
        assert np.isnan(res.covariance[1]).all() and np.isnan(res.covariance[:, 1]).all()
        # b**2 = 0: a is the slope through the origin, and keeps the covariance's
        # conditional error at b = 0, that of a slope beside a free offset (by hand here)
        a = np.sum(X * y) / np.sum(X * X)
        redchi = np.sum((a * X - y) ** 2) / (X.size - 2)
        assert res.values["a"] == pytest.approx(a, abs=1e-3 * res.stderr["a"])
        sxx = np.sum(X * X) - np.sum(X) ** 2 / X.size
        assert res.stderr["a"] == pytest.approx(np.sqrt(redchi / sxx), rel=1e-5)
        assert "'not a minimum' verdict above may come from it" in res.message
    # the fix the message names: c = b**2 bounded at 0 ends at its bound, said as such
    fix = GlobalFit(lambda x, a, c: a * x + c, [(X, y)], shared=["a", "c"],
                    init={"a": 1.0, "c": 1.0}, bounds={"c": (0.0, None)})  # fmt: skip
    with pytest.warns(FitWarning, match="ended at a bound"):
        ok = fix.run()
    assert ok.success and ok.values["c"] == 0.0
    assert ok.values["a"] == pytest.approx(res.values["a"], abs=1e-3 * res.stderr["a"])


def test_local_slots_at_the_floor_are_nan_the_others_keep_their_errors():
    rng = np.random.default_rng(3)
    offsets = [0.4, -0.3, 0.2, -0.5]
    data = [(X, 1.5 * X + o + rng.normal(0, 0.05, X.size), 0.05) for o in offsets]
    fit = GlobalFit(_square_offset, data, shared=["a"], local=["b"], init={"a": 1.0, "b": 1.0})
    with pytest.warns(
        FitWarning, match=r"NaN for 'b\[dataset 1\]' .*; 'b\[dataset 3\]' .* these parameters"
    ):
        res = fit.run()
    err = res.stderr["b"]
    assert np.isnan(err[[1, 3]]).all() and np.isfinite(err[[0, 2]]).all()
    assert np.isfinite(res.stderr["a"])
    # per group: the group at the floor only, its covariance row and column NaN
    groups = [(x, y, s, {"g": "up" if o > 0 else "down"}) for (x, y, s), o in zip(data, offsets)]
    fit = GlobalFit(_square_offset, groups, shared=["a"], per_group={"b": "g"},
                    init={"a": 1.0, "b": 1.0})  # fmt: skip
    with pytest.warns(FitWarning, match=r"NaN for 'b\[down\]'"):
        res = fit.run()
    assert np.isnan(res.stderr["b"]["down"]) and np.isfinite(res.stderr["b"]["up"])
    i = res.covariance_names.index("b[down]")
    assert np.isnan(res.covariance[i]).all() and np.isfinite(np.delete(res.covariance[0], i)).all()


def test_periodic_model_at_its_turning_point_is_caught_by_the_small_step():
    # cos(b) at b = π: a move by the huge error lands on a random phase, 1 % of b does not
    y = 2 * X - 1.3 + NOISE
    fit = GlobalFit(lambda x, a, b: a * x + np.cos(b), [(X, y)], shared=["a", "b"],
                    init={"a": 1.0, "b": 3.0})  # fmt: skip
    with pytest.warns(FitWarning, match=r"NaN for 'b' = 3\.14 .*moved by 0\.031"):
        res = fit.run()
    assert np.isnan(res.stderr["b"]) and np.isfinite(res.stderr["a"])


@pytest.mark.parametrize(
    ("model", "truth", "init"),
    [
        (_square_offset, lambda x: 2 * x + 0.3, {"a": 1.0, "b": 1.0}),  # b**2 off its floor
        (lambda x, a, b: a * x + b, lambda x: 2 * x + 0.001, {"a": 1.0, "b": 0.5}),  # b ~ 0 ± 0.01
        (lambda x, a, k: a * np.exp(k * x), lambda x: 1.0 + 0 * x, {"a": 1.0, "k": 0.1}),
    ],
)
def test_errors_wider_than_their_value_but_linear_enough_are_kept(model, truth, init):
    # the exp(k·x) rate is 0.01 ± 0.16: its error exceeds its value and the model is
    # curved over it on one side, but the error is the data's (lmfit reports it)
    noise = NOISE * (6.0 if "k" in init else 1.0)
    res = GlobalFit(model, [(X, truth(X) + noise)], shared=list(init), init=init).run()
    assert res.success and "NaN" not in res.message
    jw = np.column_stack(
        [(model(X, **{**res.values, n: res.values[n] + 1e-6}) - model(X, **res.values)) / 1e-6
         for n in init]
    )  # fmt: skip
    ref = np.sqrt(np.diag(np.linalg.inv(jw.T @ jw)) * res.redchi)  # independent of the fit's J
    assert [res.stderr[n] for n in init] == pytest.approx(ref, rel=1e-4)


def test_a_parameter_on_its_bound_is_judged_by_its_inward_side():
    # b**2 bounded at 0: the exact derivative there is 0, the one-sided difference reads
    # its own step h, and the standard error was 1/h scaled (15910, success=True)
    y = 2 * X - 0.5 + NOISE
    fit = GlobalFit(_square_offset, [(X, y)], shared=["a", "b"], init={"a": 1.0, "b": 1.0},
                    bounds={"b": (0.0, None)})  # fmt: skip
    with (
        pytest.warns(FitWarning, match="ended at a bound"),
        pytest.warns(FitWarning, match=r"NaN for 'b' = 0 "),
    ):
        res = fit.run()
    assert res.values["b"] == 0.0 and np.isnan(res.stderr["b"])
    assert "ended at a bound" in res.message
    # a linear offset on its bound, however hard the data pull past it (a linear term
    # 2·step·Jᵀr the check allows for), keeps the free parameter's error, by hand here
    for pull in (0.5, 5.0):
        y = 2 * X - pull + NOISE
        fit = GlobalFit(lambda x, a, c: a * x + c, [(X, y)], shared=["a", "c"],
                        init={"a": 1.0, "c": 1.0}, bounds={"c": (0.0, None)})  # fmt: skip
        with pytest.warns(FitWarning, match="ended at a bound") as caught:
            res = fit.run()
        assert not any("set to NaN" in str(w.message) for w in caught)
        j = np.column_stack([X, np.ones_like(X)])
        redchi = np.sum((res.values["a"] * X - y) ** 2) / (X.size - 2)
        ref = np.sqrt(np.diag(np.linalg.inv(j.T @ j)) * redchi)
        assert [res.stderr["a"], res.stderr["c"]] == pytest.approx(ref, rel=1e-6)
