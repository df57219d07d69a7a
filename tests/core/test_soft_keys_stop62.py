"""laplacian_penalty: a float edge end on a list and an int lam past float's range are
named (stop 62: both failed in Python's words, naming no argument)."""

import numpy as np
import pytest
import torch

import tying


def _pair():
    return [torch.zeros(2), torch.ones(2)]


@pytest.mark.parametrize("k", [1.0, np.float64(1.0), np.float32(1.0)])
def test_a_whole_float_edge_end_is_named_with_its_int(k):
    with pytest.raises(ValueError, match=r"edge \(0, .*1\.0.*\) names .*a float.*use the int 1"):
        tying.soft.laplacian_penalty(_pair(), [(0, k)], 2.0)
    # the advice, followed
    assert float(tying.soft.laplacian_penalty(_pair(), [(0, int(k))], 2.0)) == 2.0


def test_a_fractional_float_edge_end_is_named_with_the_ints():
    with pytest.raises(ValueError, match=r"names 1\.5, a float.*use the ints 0\.\.1"):
        tying.soft.laplacian_penalty(_pair(), [(0, 1.5)], 2.0)


def test_a_float_key_of_a_mapping_is_still_a_key():
    params = {0: torch.zeros(2), 1.0: torch.ones(2)}
    assert float(tying.soft.laplacian_penalty(params, [(0, 1.0)], 2.0)) == 2.0


def test_an_int_lam_past_floats_range_is_named():
    with pytest.raises(ValueError, match=r"lam must be finite.*401 digits.*pass a smaller lam"):
        tying.soft.laplacian_penalty(_pair(), [(0, 1)], 10**400)
    big = 10**30  # in range: taken, as before
    assert float(tying.soft.laplacian_penalty(_pair(), [(0, 1)], big)) == pytest.approx(1e30)
