"""TiedUNet: decoder filters are the encoder's tensors, switchable, counted, shape-checked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tying
from tying.nn import TiedUNet


def test_decoder_reads_the_encoder_weights_transposed():
    torch.manual_seed(0)
    net = TiedUNet(1, 2, widths=(4, 8, 16))
    for level in range(net.levels):
        assert net.up[level].weight is net.down[level].weight
    # a transposed conv with the encoder's weight is the adjoint of the encoder conv
    conv = net.down[0]
    x, y = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 8, 8)
    lhs = (F.conv2d(x, conv.weight, padding=1) * y).sum()
    rhs = (x * F.conv_transpose2d(y, net.up[0].weight, padding=1)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_counts_and_untie_switch():
    tied, untied = TiedUNet(1, 1, widths=(4, 8, 16)), TiedUNet(1, 1, widths=(4, 8, 16), tied=False)
    ct, cu = tying.count(tied), tying.count(untied)
    shared = 8 * 4 * 9 + 16 * 8 * 9
    assert ct.logical == cu.logical == cu.physical
    assert ct.physical == cu.physical - shared
    x = torch.randn(2, 1, 16, 16)
    y = tied(x)
    tying.untie(tied)
    assert tying.count(tied).physical == cu.physical
    torch.testing.assert_close(tied(x), y, rtol=0, atol=0)


def test_gradient_of_a_shared_filter_sums_both_uses_and_tie_survives_a_step():
    torch.manual_seed(2)
    net = TiedUNet(1, 1, widths=(3, 6))
    x = torch.randn(2, 1, 8, 8)
    net(x).square().sum().backward()
    # recompute with the two uses split into independent copies
    ref = TiedUNet(1, 1, widths=(3, 6), tied=False)
    ref.load_state_dict({**net.state_dict(), "up.0.weight": net.down[0].weight.detach().clone()})
    ref(x).square().sum().backward()
    torch.testing.assert_close(
        net.down[0].weight.grad, ref.down[0].weight.grad + ref.up[0].weight.grad
    )
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert net.up[0].weight is net.down[0].weight
    assert tying.verify(net) == 1


def test_shape_errors():
    with pytest.raises(ValueError, match="at least two positive ints"):
        TiedUNet(1, 1, widths=(8,))
    with pytest.raises(ValueError, match="kernel_size must be an odd positive int"):
        TiedUNet(1, 1, kernel_size=4)
    net = TiedUNet(1, 1, widths=(4, 8, 16))
    with pytest.raises(ValueError, match=r"needs H and W divisible by 4, got \(10, 12\)"):
        net(torch.randn(1, 1, 10, 12))
    with pytest.raises(ValueError, match=r"expected \(B, 1, H, W\), got shape \(1, 3, 8, 8\)"):
        net(torch.randn(1, 3, 8, 8))
