"""Advice for lmfit's keywords written as Python literals (review 60).

``kws={"b": np.array([1.])}`` advised ``fixed={'b': array([1.])}`` (a NameError when
followed, and an array that ``fixed=`` reads as one value per data set); numpy scalars
came out as ``np.float64(1e-12)``.
"""

import functools
import re

import numpy as np
import pytest

from tying.fit import GlobalFit


def _model(x, a, b):
    return a * x + np.sum(b)


def _data(n=1):
    x = np.linspace(0, 1, 20)
    return [(x, 2 * x + 1 + np.random.default_rng(k).normal(0, 0.01, 20)) for k in range(n)]


@pytest.mark.parametrize("b", [np.array([1.0]), np.array(1.0), np.float64(1.0), np.int64(1)])
@pytest.mark.parametrize("n", [1, 3])
def test_a_numpy_constant_in_kws_is_advised_as_a_number_that_runs(b, n):
    with pytest.raises(TypeError, match=r"pass fixed=\{'b': 1(\.0)?\}$") as info:
        GlobalFit(_model, _data(n), shared=["a"], init={"a": 1.0}, kws={"b": b})
    fixed = re.search(r"pass fixed=(\{.*\})$", str(info.value)).group(1)
    res = GlobalFit(_model, _data(n), shared=["a"], init={"a": 1.0}, fixed=eval(fixed)).run()
    assert res.success and res.values["b"] == 1.0


def test_an_array_constant_in_kws_is_bound_to_the_model_not_read_per_data_set():
    b = np.array([0.25, 0.75])
    with pytest.raises(TypeError, match=r"'b' hold\(s\) more than one value") as info:
        GlobalFit(_model, _data(2), shared=["a"], init={"a": 1.0}, kws={"b": b})
    assert "functools.partial(model_fn, b=<the array>)" in str(info.value)
    res = GlobalFit(functools.partial(_model, b=b), _data(2), shared=["a"], init={"a": 1.0}).run()
    assert res.success and abs(res.values["a"] - 2.0) < 0.02


def test_numpy_fit_kws_are_advised_as_literals_that_run():
    fit_kws = {"xtol": np.float64(1e-12), "maxfev": np.int64(500)}
    with pytest.raises(TypeError, match=r"pass GlobalFit\(\.\.\., xtol=1e-12, max_iter=500\)$"):
        GlobalFit(_model, _data(), shared=["a", "b"], init={"a": 1, "b": 0}, fit_kws=fit_kws)
    fit = GlobalFit(_model, _data(), shared=["a", "b"], init={"a": 1, "b": 0})
    with pytest.raises(TypeError, match=r"fit\.xtol = 1e-12; fit\.max_iter = 500, then"):
        fit.run(fit_kws=fit_kws)


def test_numpy_p_names_are_advised_as_a_list_that_runs():
    from tying.fit import conf_interval

    res = GlobalFit(_model, _data(), shared=["a", "b"], init={"a": 1, "b": 0}).run()
    with pytest.raises(TypeError, match=r"pass names=\['a'\]") as info:
        conf_interval(res, p_names=np.array(["a"]))
    names = eval(re.search(r"pass names=(\[.*?\])", str(info.value)).group(1))
    assert "a" in conf_interval(res, names)
