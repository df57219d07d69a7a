"""Stop 58: per-group labels a rounding apart are refused, not fitted as two groups.

A temperature label computed as ``0.1 + 0.2`` (0.30000000000000004) beside a typed ``0.3``
made two groups, each with its own value of the per-group parameter, with no error: the
fit below read b = {0.30000000000000004: 0.50048, 0.3: 0.49917} where the one group's b
is 0.49943 (the fit with the labels rounded).
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.fit

X = np.linspace(0, 3, 15)


def _decay(x, a, b):
    return a * np.exp(-b * x)


def _fit(labels):
    rng = np.random.default_rng(58)
    data = [
        (X, (1 + k) * np.exp(-0.5 * X) + rng.normal(0, 0.01, X.size), 0.01, {"T": t})
        for k, t in enumerate(labels)
    ]
    init = {"a": 1.0, "b": 1.0}
    return tying.fit.GlobalFit(_decay, data, per_group={"b": "T"}, local=["a"], init=init)


def test_labels_a_rounding_apart_are_refused_with_a_fix_that_works():
    labels = [0.1 + 0.2, 0.3, 0.5]
    fit = _fit(labels)
    with pytest.raises(ValueError, match=r"per_group\['b'\]: the labels 0.3 \(dataset 'dataset "
                       r"1'\) and 0.30000000000000004 \(dataset 'dataset 0'\) of metadata key "
                       r"'T' differ only by rounding .*round\(label, 9\)"):  # fmt: skip
        fit.run()
    res = _fit([round(t, 9) for t in labels]).run()
    assert list(res.values["b"]) == [0.3, 0.5]


@pytest.mark.parametrize(
    "labels",
    [
        [298.15, 298.16, 298.15],  # close, but not rounding
        [1.7e9, 1.7e9 + 1, 1.7e9],  # times in seconds, 1 s apart
        [2**60, 2**60 + 1, 2**60],  # ints are exact, though equal as floats
        [0.0, -0.0, 1.0],  # equal in Python: one group
    ],
)
def test_labels_that_differ_by_more_are_groups_as_given(labels):
    res = _fit(labels).parameter_map
    assert len(res.groups["b"]) == 2
