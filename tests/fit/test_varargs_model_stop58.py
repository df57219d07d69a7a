"""Stop 58: a model taking its parameters as ``*p`` (scipy ``curve_fit``'s style).

GlobalFit passes parameters by name, so ``f(x, *p)`` cannot be called; every role was
refused as "shared names 'a', which model_fn does not take; its parameters are []", with
no fix. The message now says why and gives the wrapper, which fits.
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.fit

X = np.linspace(0, 3, 20)
Y = 2 * np.exp(-0.8 * X) + 0.01 * np.cos(9 * X)


def _by_position(x, *p):
    return p[0] * np.exp(-p[1] * x)


def test_a_varargs_model_is_told_to_name_its_parameters_and_the_wrapper_fits():
    init = {"a": 1.0, "b": 1.0}
    fit = tying.fit.GlobalFit(_by_position, [(X, Y)], shared=["a", "b"], init=init)
    with pytest.raises(TypeError, match=r"takes its parameters as \*p \(model_fn\(x, \*p\)\), "
                       r"but GlobalFit passes each by name; name them: lambda x, a, b: "
                       r"model_fn\(x, a, b\)"):  # fmt: skip
        fit.run()
    fit.model_fn = lambda x, a, b: _by_position(x, a, b)
    assert fit.run().values["b"] == pytest.approx(0.8, abs=0.01)


def test_named_parameters_beside_varargs_still_fit():
    def model(x, a, b, *unused):
        return a * np.exp(-b * x)

    fit = tying.fit.GlobalFit(model, [(X, Y)], shared=["a", "b"], init={"a": 1.0, "b": 1.0})
    assert fit.run().values["a"] == pytest.approx(2.0, abs=0.01)
