from __future__ import annotations

import numpy as np
import pytest

from tying.fit import GlobalFit


def _gauss(x, c, w, a):
    return a * np.exp(-0.5 * ((x - c) / w) ** 2)


def _result(seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(-3, 3, 40)
    ds = [(x, _gauss(x, 0.3, 0.8, a) + rng.normal(0, 0.03, x.size), 0.03) for a in (1.0, 2.0)]
    return GlobalFit(_gauss, ds, shared=["c", "w"], local=["a"],
                     init={"c": 0.0, "w": 1.0, "a": 1.0}).run()  # fmt: skip


@pytest.mark.parametrize("seed", range(10))
def test_correlations_lie_in_minus_one_to_one_with_a_unit_diagonal(seed):
    # rounding left 1.0000000000000002 on the diagonal (seeds 1, 4, 6, 9)
    res = _result(seed)
    corr = res.correlation
    assert np.all(np.diag(corr) == 1.0)
    assert np.all(np.abs(corr) <= 1.0)
    np.testing.assert_array_equal(corr, corr.T)
    s = np.sqrt(np.diag(res.covariance))
    assert corr[0, 1] == res.covariance[0, 1] / (s[0] * s[1])  # off-diagonal unchanged


@pytest.mark.parametrize("index", [True, False, 1.0, 0.5, None])
def test_a_data_set_is_chosen_by_int_or_str_only(index):
    # True read data set 1 (False data set 0) with no error; 1.0 raised NumPy's error
    res = _result(0)
    for method in (res.params, res.stderrs, res.best_fit, res.residual, res.chi2_of):
        with pytest.raises(TypeError, match=r"chosen by its index \(int\) or name \(str\)"):
            method(index)
    assert res.params(np.int64(1)) == res.params("dataset 1") == res.params(-1)
