"""NaN in a data set: the refusal gives lmfit's nan_policy='omit' as code that runs (stop 61).

It said "drop those points before fitting", with no way to do it; the mask now tests every
array given per point (NaN in x at one point and in y at another goes in one pass), keeps
the metadata, and indexes a list as an array.
"""

import numpy as np
import pytest

from tying.fit import GlobalFit


def _follow(message: str, x, y, sigma=None, metadata=None):
    code = message.split("keep = ")[1]
    mask_src, data_src = code.split(", then pass ")
    scope = {"np": np, "x": x, "y": y, "sigma": sigma, "metadata": metadata}
    scope["keep"] = eval(mask_src, scope)  # noqa: S307 (the advice, as typed)
    return eval(data_src, scope)  # noqa: S307


@pytest.mark.parametrize("with_sigma", [False, True])
def test_the_omit_advice_drops_every_bad_point_and_fits(with_sigma):
    x = np.linspace(0, 1, 12)
    y = 2 * x + 1
    x[2], y[7] = np.nan, np.inf
    sigma = np.full(12, 0.1)
    data = (x, y, sigma, {"T": 300}) if with_sigma else (x, y)
    fit = GlobalFit(lambda x, a, b: a * x + b, [data], shared=["a", "b"], init={"a": 1, "b": 0})
    with pytest.raises(ValueError, match=r"x has 1 NaN/inf value\(s\), the first at point 2; "
                       r"drop those points before fitting \(lmfit's nan_policy='omit'\)"):  # fmt: skip
        fit.run()
    msg = str(pytest.raises(ValueError, fit.run).value)
    fixed = _follow(msg, x, y, sigma if with_sigma else None, {"T": 300})
    assert len(fixed) == (4 if with_sigma else 2) and len(fixed[1]) == 10
    fit.datasets = [fixed]
    res = fit.run()
    assert res.values["a"] == pytest.approx(2.0) and res.values["b"] == pytest.approx(1.0)


def test_a_list_and_a_two_column_x_get_advice_that_indexes():
    rng = np.random.default_rng(0)
    x2 = rng.normal(size=(10, 2))
    y = list(x2[:, 0] + 3 * x2[:, 1])
    x2[4, 1] = np.nan
    fit = GlobalFit(lambda x, a, b: a * x[:, 0] + b * x[:, 1], [(x2, y)], shared=["a", "b"],
                    init={"a": 0, "b": 0})  # fmt: skip
    msg = str(pytest.raises(ValueError, fit.run).value)
    assert "np.isfinite(x).reshape(len(x), -1).all(axis=1)" in msg and "np.asarray(y)[keep]" in msg
    fit.datasets = [_follow(msg, x2, y)]
    assert fit.run().values["b"] == pytest.approx(3.0)


def test_one_sigma_for_all_points_is_told_to_be_finite():
    x = np.linspace(0, 1, 5)
    with pytest.raises(
        ValueError, match=r"sigma has 5 NaN/inf .*; give a finite sigma \(one number"
    ):
        GlobalFit(lambda x, a: a * x, [(x, x, np.nan)], shared=["a"], init={"a": 1}).run()
