"""lmfit's fit_kws, calc_covar, iter_cb, reduce_fcn, args and kws name ours (stop 60).

``GlobalFit(..., fit_kws={'xtol': 1e-12, 'maxfev': 500})`` (lmfit's ``Model.fit`` /
``minimize`` keywords) got Python's bare "unexpected keyword argument"; fit_kws now gets its
entries as GlobalFit's keywords, and the advice works when followed.
"""

import numpy as np
import pytest

from tying.fit import GlobalFit

X = np.linspace(0, 1, 10)
DATA = [(X, 2 * X + 1 + 0.01 * np.cos(7 * X))]


def _line(x, a, c):
    return a * x + c


def _fit(**kw):
    return GlobalFit(_line, DATA, shared=["a", "c"], init={"a": 1.0, "c": 0.0}, **kw)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        (
            "fit_kws",
            {"xtol": 1e-12, "maxfev": 500, "epsfcn": 1e-9},
            r"pass GlobalFit\(\.\.\., xtol=1e-12, max_iter=500\); 'epsfcn' has no counterpart",
        ),
        ("calc_covar", False, r"always computed"),
        ("iter_cb", print, r"no per-iteration callback"),
        ("reduce_fcn", "negentropy", r"a robust loss is not offered"),
        ("kws", {"c": 1.0}, r"pass fixed=\{'c': 1\.0\}"),
    ],
)
def test_lmfit_keywords_name_ours(key, value, match):
    with pytest.raises(TypeError, match=rf"GlobalFit\(\) got .* '{key}': .*{match}"):
        _fit(**{key: value})
    with pytest.raises(TypeError, match=rf"GlobalFit\.run\(\) got .* '{key}': .*{match}"):
        _fit().run(**{key: value})


def test_the_fit_kws_advice_works_when_followed():
    with pytest.raises(TypeError, match=r"on the built fit: fit\.xtol = 1e-12; fit\.max_iter = 3"):
        _fit().run(fit_kws={"xtol": 1e-12, "maxfev": 3})
    built = _fit()
    built.xtol, built.max_iter = 1e-12, 3
    assert built.run().success
    assert _fit(xtol=1e-12, max_iter=500).run().success


def test_args_names_the_data_sets_as_lmfit_minimize_passes_data_there():
    # lmfit's minimize(residual, params, args=(x, y)) passes the data in args: the
    # advice named only fixed= (a constant), which is not where data go
    with pytest.raises(TypeError, match=r"'args': the data go in the data sets, one \(x, y\)"):
        _fit(args=(X, 2 * X + 1))
    fit = GlobalFit(_line, [(X, 2 * X + 1)], shared=["a", "c"], init={"a": 1.0, "c": 0.0})
    assert fit.run().values["a"] == pytest.approx(2.0, abs=1e-9)  # the advice followed
