"""Stop 58: the formula ``result.rsquared`` advises is lmfit's R².

lmfit's ``ModelResult.rsquared`` is unweighted, ``1 - Σ(y - best_fit)² / Σ(y - ȳ)²``. The
advice was a χ² form, ``1 - chi2 / Σ((y - ȳ)/σ)²``, which differs wherever σ varies
(on the fit below, σ varying tenfold: 0.8965 advised, lmfit 1.3.4 reads 0.758402, by
hand 0.758402).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tying.fit

RNG = np.random.default_rng(1)
X = np.linspace(0, 5, 40)
SIGMA = 0.05 + 0.5 * RNG.random(40)  # varies tenfold
Y = 2.0 * np.exp(-1.3 * X) + 0.5 + RNG.normal(0, SIGMA)


def _decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def test_the_advised_r_squared_is_lmfits():
    res = tying.fit.GlobalFit(
        _decay, [(X, Y, SIGMA)], shared=["a", "b", "c"], init={"a": 1.0, "b": 1.0, "c": 0.0}
    ).run()
    with pytest.raises(AttributeError, match="no lmfit attribute 'rsquared'") as err:
        res.rsquared  # noqa: B018
    advice = re.search(r"read (.*?)(?: with data set i's y)?, computed by you", str(err.value))
    got = eval(advice.group(1), {"np": np, "result": res, "y": Y, "sigma": SIGMA, "i": 0})
    model = _decay(X, **{n: res.values[n] for n in "abc"})
    by_hand = 1 - np.sum((Y - model) ** 2) / np.sum((Y - Y.mean()) ** 2)  # lmfit's model.py
    assert got == pytest.approx(by_hand, rel=1e-12)


def test_lmfit_names_of_new_x_name_ours():
    x = np.linspace(0, 1, 8)
    res = tying.fit.GlobalFit(
        lambda x, a: a * x, [(x, 2 * x + 0.01 * np.cos(9 * x))], shared=["a"], init={"a": 1.0}
    ).run()
    with pytest.raises(AttributeError, match=r"'eval': read result\.predict\(i, x\)"):
        res.eval  # noqa: B018
    with pytest.raises(AttributeError, match=r"'dely': read result\.eval_uncertainty\(i, x"):
        res.dely  # noqa: B018
    assert res.predict(0, [1.0])[0] == pytest.approx(res.values["a"])
