"""lmfit's calling idioms on GlobalFit name where the values go (stop 59, second pass).

``fit.fit(params)``, ``fit.run(params)``, ``fit.run(x, y)`` and ``tying.fit.minimize``
met Python's bare "takes 1 positional argument but 2 were given" / "has no attribute";
the message now says where start values, bounds and data sets go, and that advice
works when followed.
"""

import numpy as np
import pytest

import tying.fit
from tying.fit import GlobalFit

X = np.linspace(0, 1, 12)
DATA = [(X, 2 * X + 1 + 0.01 * np.sin(7 * X)), (X, 2 * X + 3 + 0.01 * np.cos(5 * X))]


def _line(x, a, b):
    return a * x + b


def _fit():
    return GlobalFit(_line, DATA, shared=["a"], local=["b"])


def test_fit_given_a_dict_of_start_values_names_init_and_the_advice_works():
    fit = _fit()
    with pytest.raises(
        TypeError, match=r"GlobalFit.run\(\) takes no arguments: start values are init="
    ):
        fit.run({"a": 1.5, "b": 0.5})
    with pytest.raises(TypeError, match=r"set fit.init = <that dict>, then fit.fit\(\)"):
        fit.fit({"a": 1.5, "b": 0.5})
    assert not hasattr(fit, "result_")  # the refused call ran nothing
    fit.init = {"a": 1.5, "b": 0.5}
    result = fit.run()
    assert result.success and abs(result.values["a"] - 2.0) < 0.02


def test_fit_given_data_names_datasets():
    with pytest.raises(
        TypeError, match=r"2 positional arguments \(numpy.ndarray, ...\).*fit.datasets = \[\(x, y\)"
    ):
        _fit().fit(X, DATA[0][1])


def test_lmfit_parameters_advice_keeps_values_and_bounds():
    lmfit = pytest.importorskip("lmfit")
    params = lmfit.Parameters()
    params.add("a", value=1.5)
    params.add("b", value=0.5, min=-10, max=10)
    fit = _fit()
    with pytest.raises(
        TypeError, match=r"\(lmfit.Parameters\); for lmfit Parameters set fit.init ="
    ):
        fit.run(params)
    # the advice, as written
    fit.init = {name: p.value for name, p in params.items()}
    fit.bounds = {name: (p.min, p.max) for name, p in params.items()}
    result = fit.run()
    assert result.success and abs(result.values["a"] - 2.0) < 0.02


def test_run_keywords_name_ours():
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument 'max_nfev': the budget is max_iter="
    ):
        _fit().run(max_nfev=100)
    with pytest.raises(TypeError, match=r"'verbose'.*takes no arguments"):
        _fit().fit(verbose=True)


def test_minimize_names_run_on_the_module_and_the_fit():
    with pytest.raises(
        AttributeError,
        match=r"'tying.fit' has no attribute 'minimize': GlobalFit runs with fit.run\(\)",
    ):
        tying.fit.minimize  # noqa: B018
    with pytest.raises(
        AttributeError, match=r"'GlobalFit' object has no attribute 'leastsq': GlobalFit runs"
    ):
        _fit().leastsq  # noqa: B018
    # other names keep Python's plain message; hasattr still answers
    with pytest.raises(AttributeError, match=r"^module 'tying.fit' has no attribute 'nosuch'$"):
        tying.fit.nosuch  # noqa: B018
    assert not hasattr(_fit(), "result_") and not hasattr(_fit(), "nosuch")
