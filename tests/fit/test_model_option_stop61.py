"""A model option that is not a number, given as fixed=, is told to bind it (stop 61).

lmfit's ``Model`` passes a non-numeric keyword (``kind="quad"``) through to the function;
``fixed={"kind": "quad"}`` was told "give a float", which cannot hold the option.
"""

import functools

import numpy as np
import pytest

from tying.fit import GlobalFit


def _model(x, a, b, kind="lin", flip=False):
    y = a * x + b if kind == "lin" else a * x**2 + b
    return -y if flip else y


@pytest.mark.parametrize(
    "fixed, bound",
    [({"kind": "quad"}, "kind='quad'"), ({"flip": True}, "flip=True")],
)
def test_a_non_numeric_option_is_bound_and_the_advice_fits(fixed, bound):
    x = np.linspace(0, 1, 10)
    y = 2 * x**2 + 1 if "kind" in fixed else -(2 * x + 1)
    fit = GlobalFit(_model, [(x, y)], shared=["a", "b"], fixed=fixed, init={"a": 1, "b": 0})
    with pytest.raises(TypeError, match=rf"GlobalFit\(functools\.partial\(model_fn, {bound}\)"):
        fit.run()
    fit.model_fn = functools.partial(_model, **fixed)  # the advice, followed
    fit.fixed = None
    res = fit.run()
    assert res.values["a"] == pytest.approx(2.0) and res.values["b"] == pytest.approx(1.0)
