"""``PeriodicFeatures(periodic_dims=0)``: one column as an int, as torch's ``dim=`` (stop 60).

It died on Python's "'int' object is not iterable" (``None`` too), naming no layer.
"""

import numpy as np
import pytest
import torch

from tying.nn import PeriodicFeatures


@pytest.mark.parametrize("dim", [0, 1, -1, np.int64(1)])
def test_one_int_column_equals_the_one_tuple(dim):
    x = torch.randn(5, 2)
    one = PeriodicFeatures(2, 1.5, harmonics=2, periodic_dims=dim)
    assert one.periodic_dims == (int(dim) % 2,)
    want = PeriodicFeatures(2, 1.5, harmonics=2, periodic_dims=(int(dim),))(x)
    torch.testing.assert_close(one(x), want, rtol=0, atol=0)


@pytest.mark.parametrize("dims", [None, 1.5, True])
def test_not_an_int_nor_ints_is_refused_by_name(dims):
    with pytest.raises(
        ValueError,
        match=rf"^PeriodicFeatures: periodic_dims must be ints \(column indices\), got {dims!r}; pass a sequence of column indices or one int$",
    ):
        PeriodicFeatures(2, 1.0, periodic_dims=dims)
