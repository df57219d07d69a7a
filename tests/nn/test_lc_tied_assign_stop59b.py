"""Assigning to a tied LocallyConnected2d's weight/bias is checked (stop 59b).

After tie_filters() every position reads one stored filter. ``layer.weight = value``
kept position (0, 0)'s filter of ``value`` and dropped the others with no error (the
output was 7.6 off the per-position layer assigned), and a conv-shaped
(C_out, C_in, kh, kw) value stored its [0, 0] (kh, kw) slice as the filter.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from tying.nn import LocallyConnected2d


def _tied():
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, input_size=5, kernel_size=3).double()
    with torch.no_grad():
        layer.weight.normal_()  # positions differ, as after training
    return layer.tie_filters()  # keeps position (0, 0)'s, by design


def test_per_position_value_refused_state_unchanged_and_advice_works():
    layer = _tied()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    before = layer(x)
    value = torch.randn(3, 3, 3, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"position \(\d, \d\) differs from position \(0, 0\)"):
        layer.weight = value
    with pytest.raises(ValueError, match=r"reads as \(3, 3, 3, 2, 3, 3\), got .* \(3, 2, 3, 3\)"):
        layer.weight = value[0, 0]
    with pytest.raises(ValueError, match=r"bias is tied across positions"):
        layer.bias = torch.randn(3, 3, 3, dtype=torch.float64)
    assert torch.equal(layer(x), before)
    # the advice: untie, then assign per-position values
    parametrize.remove_parametrizations(layer, "weight")
    layer.weight = nn.Parameter(value)
    ref = LocallyConnected2d(2, 3, input_size=5, kernel_size=3).double()
    with torch.no_grad():
        ref.weight.copy_(value)
        ref.bias.copy_(layer.bias)
    torch.testing.assert_close(layer(x), ref(x), atol=1e-12, rtol=0)


def test_equal_positions_still_assign_and_tie_holds():
    layer = _tied()
    one = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    layer.weight = one.expand(3, 3, 3, 2, 3, 3)  # the advice for one filter
    layer.bias = torch.ones(3, dtype=torch.float64).expand(3, 3, 3)
    assert torch.equal(layer.parametrizations.weight.original, one)
    assert torch.equal(layer.bias[2, 1], torch.ones(3, dtype=torch.float64))
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.to_conv()(x), atol=1e-12, rtol=0)
