"""The type of ``values[name]`` for a fixed parameter follows how it was given (stop 40).

Before, a per-data-set ``fixed`` array came back as a float when its entries happened to be
equal and as an array otherwise: code indexing ``values["c"][i]`` worked on one data set's
values and crashed (or, for a 1-element loop, read a float) on another's.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.fit import GlobalFit

X = np.linspace(0.0, 1.0, 12)


def line(x, a, c):
    return a * x + c


def _data(n):
    rng = np.random.default_rng(n)
    return [(X, 2.0 * X + 1.0 + 0.01 * rng.normal(size=X.size)) for _ in range(n)]


@pytest.mark.parametrize("held", [[1.0, 1.0], (1.0, 1.0), np.array([1.0, 1.0]), [1.0, 1.2]])
def test_a_per_dataset_fixed_value_is_an_array_whatever_its_entries(held):
    r = GlobalFit(line, _data(2), shared=["a"], fixed={"c": held}, init={"a": 0.0}).run()
    assert isinstance(r.values["c"], np.ndarray)
    np.testing.assert_array_equal(r.values["c"], np.asarray(held, dtype=float))
    assert r.stderr["c"] == 0.0  # a held value has no error, a scalar as before


def test_a_scalar_fixed_value_stays_a_float():
    r = GlobalFit(line, _data(2), shared=["a"], fixed={"c": 1.0}, init={"a": 0.0}).run()
    assert type(r.values["c"]) is float and r.values["c"] == 1.0


@settings(derandomize=True, deadline=None, max_examples=12)
@given(st.integers(1, 4), st.booleans(), st.floats(-2, 2, allow_nan=False))
def test_property_type_follows_the_argument_and_values_match_each_dataset(n, equal, base):
    held = [base] * n if equal else [base + 0.1 * i for i in range(n)]
    r = GlobalFit(line, _data(n), shared=["a"], fixed={"c": held}, init={"a": 0.0}).run()
    assert isinstance(r.values["c"], np.ndarray) and r.values["c"].shape == (n,)
    for i in range(n):  # the brute-force reference: what each data set was evaluated with
        assert r.params(i)["c"] == held[i]
