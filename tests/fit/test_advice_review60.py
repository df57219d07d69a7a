"""Advice of stop 60 that failed when followed (review 60).

``fit_kws={"maxfev": 500, "max_nfev": 100}`` advised ``GlobalFit(..., max_iter=500,
max_iter=100)``, a SyntaxError; ``conf_interval(sigmas=[0.95, 20])`` advised
``sigmas=(1.96, 20)``, refused again (20 σ is past the highest level, 10 σ).
"""

import re

import numpy as np
import pytest

from tying.fit import GlobalFit, conf_interval


def _model(x, a=1.0, b=0.0):
    return a * x + b


def _data():
    x = np.linspace(0, 1, 20)
    return [(x, 2 * x + 1 + np.random.default_rng(0).normal(0, 0.01, 20))]


def test_fit_kws_naming_one_budget_twice_is_advised_once_and_the_advice_runs():
    with pytest.raises(TypeError, match="fit_kws") as info:
        GlobalFit(_model, _data(), shared=["a", "b"], fit_kws={"maxfev": 500, "max_nfev": 100})
    call = re.search(r"pass GlobalFit\(\.\.\., (.*)\)$", str(info.value)).group(1)
    assert call == "max_iter=500"
    res = eval(f"GlobalFit(_model, _data(), shared=['a', 'b'], {call})").run()
    assert res.success


def test_fit_kws_on_a_built_fit_sets_each_attribute_once():
    fit = GlobalFit(_model, _data(), shared=["a", "b"])
    with pytest.raises(TypeError, match=r"on the built fit: fit\.max_iter = 500, then"):
        fit.run(fit_kws={"maxfev": 500, "max_nfev": 100})


def test_a_level_past_ten_sigma_is_not_advised_back():
    res = GlobalFit(_model, _data(), shared=["a", "b"]).run()
    with pytest.raises(ValueError, match=r"20\.0 σ is above the highest level offered, 10 σ"):
        conf_interval(res, sigmas=[0.95, 20])
