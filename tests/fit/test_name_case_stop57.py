"""A parameter name that differs from the model's only in case gets "did you mean" (stop 57).

difflib scores ``'K'`` against ``'k'`` as 0, so ``shared=["K"]`` for ``def f(x, a, k)``
was refused with the list of parameters and no hint, as ``init={"K": ...}`` was.
"""

import numpy as np
import pytest

from tying.fit import GlobalFit

X = np.linspace(0, 4, 20)


def _decay(x, a, k, c):
    return a * np.exp(-k * x) + c


@pytest.mark.parametrize(
    ("roles", "init", "match"),
    [
        ({"shared": ["a", "K", "c"]}, {"a": 1.0, "k": 0.5, "c": 0.0},
         r"shared names 'K', which model_fn does not take; .* did you mean 'k'\?"),
        ({"shared": ["a", "k", "c"]}, {"A": 1.0, "k": 0.5, "c": 0.0},
         r"init names 'A', which is not a fitted parameter; .* did you mean 'a'\?"),
    ],
)  # fmt: skip
def test_a_case_slip_is_named_with_the_parameter_meant(roles, init, match):
    fit = GlobalFit(_decay, [(X, _decay(X, 2.0, 0.7, 0.1))], init=init, **roles)
    with pytest.raises(ValueError, match=match):
        fit.run()
