"""Stop 59: a local start or a per-data-set fixed value given by data set name.

``result.table()`` labels a local value by its data set's name (``a[r2]``), but
``init={"a": {"r1": 1, "r2": 2, "r3": 3}}`` was refused as "must be real numbers, got
{...} (dict)", and so was ``fixed={"k": {...}}``, while a per-group dict was read.
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.fit

X = np.linspace(0.0, 5.0, 20)


def _decay(x, a, k):
    return a * np.exp(-k * x)


DATA = [
    tying.fit.Dataset(X, _decay(X, a, 0.7) + 0.001 * np.cos(3 * X + a), 0.01, name=n)
    for a, n in [(1.0, "r1"), (2.0, "r2"), (3.0, "r3")]
]


def test_a_local_start_by_data_set_name_is_read_in_data_set_order():
    by_list = tying.fit.GlobalFit(
        _decay, DATA, shared=["k"], local=["a"], init={"a": [1.0, 2.0, 3.0], "k": 1.0}
    )
    by_name = tying.fit.GlobalFit(
        _decay, DATA, shared=["k"], local=["a"], init={"a": {"r3": 3.0, "r1": 1.0, "r2": 2.0}, "k": 1.0}
    )  # fmt: skip
    np.testing.assert_array_equal(by_name.parameter_map.x0, by_list.parameter_map.x0)
    assert by_name.run().values["a"] == pytest.approx([1.0, 2.0, 3.0], abs=2e-3)


def test_a_fixed_value_by_data_set_name_is_held_per_data_set():
    fixed = {"k": {"r2": 0.7, "r3": 0.7, "r1": 0.7}}
    res = tying.fit.GlobalFit(_decay, DATA, local=["a"], fixed=fixed, init={"a": 1.0}).run()
    assert isinstance(res.values["k"], np.ndarray) and res.values["k"].tolist() == [0.7] * 3
    # a continuation may repeat it by name too
    again = tying.fit.GlobalFit(_decay, DATA, local=["a"], fixed=fixed, init={"a": 1.0, **fixed})
    assert again.run().values["a"] == pytest.approx(res.values["a"])


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"r1": 1.0, "r2": 2.0}, r"has no value for data set\(s\) \['r3'\]; the data sets are"),
        ({"r1": 1, "r2": 2, "r3": 3, "r4": 4}, r"names data set\(s\) \['r4'\] the fit does not"),
    ],
)
def test_a_dict_missing_or_naming_unknown_data_sets_is_refused(given, match):
    fit = tying.fit.GlobalFit(_decay, DATA, shared=["k"], local=["a"], init={"a": given, "k": 1})
    with pytest.raises(ValueError, match=r"init\['a'\] is a dict by data set name, but " + match):
        fit.run()
