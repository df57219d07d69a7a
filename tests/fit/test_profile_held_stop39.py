"""conf_interval of a local slot the fit held at its start (stop 39).

A model of different forms per data set (a switch on a fixed value) leaves a local
parameter unread in some data sets: the fit holds that slot at its start, standard error
NaN (stop 36, lmfit's vary=False). ``conf_interval`` stepped its profile by that NaN: each
refit ran max_iter at a NaN value and the interval came back [nan, nan] with "the refit
at b[1] = nan failed (max_iter=2000 reached ...)"; with names=None and no shared
parameter it did so for every held slot. Now a held slot named is refused by name, and
names=None leaves it out. The anchor for the fitted ones is linear least squares, where
lmfit's F-test profile is exact: the half-width is stderr times Student's t quantile.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import tying.fit

X = np.linspace(0, 4, 12)


def switch(x, a, b, kind):
    return np.where(kind == 0, a * x + b, a * x)  # kind 1 reads no b


def _result(kinds, seed=0, shared=()):
    rng = np.random.default_rng(seed)
    data = [(X, 2.0 * X + (1.0 - k) + rng.normal(0, 0.1, X.size), 0.1) for k in kinds]
    local = [n for n in ("a", "b") if n not in shared]
    fit = tying.fit.GlobalFit(
        switch, data, shared=list(shared), local=local, fixed={"kind": list(kinds)},
        init={"a": 1.0, "b": 0.5},
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tying.fit.FitWarning)  # "held at its start value"
        return fit.run()


def test_a_held_slot_named_is_refused_by_name():
    res = _result([0, 1, 0], shared=["a"])
    assert np.isnan(res.stderr["b"][1])
    with pytest.raises(ValueError, match=r"names has 'b\[1\]', held at its start value"):
        res.conf_interval(["b[1]"], sigmas=(1,))
    ci = res.conf_interval(["b[0]"], sigmas=(1,))["b[0]"]  # a fitted slot still profiles
    assert ci.message == "" and ci.lower[0] < res.values["b"][0] < ci.upper[0]


def test_default_names_leave_held_slots_out():
    res = _result([1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # old code: FitWarning "the refit at b[0] = nan failed"
        out = res.conf_interval(sigmas=(1,))
    assert list(out) == ["a[0]", "a[1]", "b[1]"]


@settings(derandomize=True, deadline=None, max_examples=6)
@given(
    kinds=st.lists(st.sampled_from([0, 1]), min_size=2, max_size=3).filter(lambda k: 0 in k),
    seed=st.integers(0, 1000),
)
def test_property_profile_of_fitted_slots_is_the_linear_interval(kinds, seed):
    res = _result(kinds, seed)
    held = {f"b[{i}]" for i, k in enumerate(kinds) if k == 1}
    out = res.conf_interval(sigmas=(1,))
    assert set(out) == set(res.physical_names) - held
    t = stats.t.ppf((1 + stats.norm.cdf(1) - stats.norm.cdf(-1)) / 2, res.nfree)
    for name, ci in out.items():
        p = res.physical_names.index(name)
        half = t * res._stderr_x[p]
        np.testing.assert_allclose([ci.lower[0], ci.upper[0]], res.x[p] + [-half, half],
                                   rtol=0, atol=1e-6 * half)  # fmt: skip
    for name in held:
        with pytest.raises(ValueError, match="held at its start value"):
            res.conf_interval([name], sigmas=(1,))
