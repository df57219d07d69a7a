"""find_accidental_ties scans transposed convolutions (stop 56).

ConvTranspose layers were left out of the scan, so a decoder whose units a symmetric init
made identical came back as "no accidental ties". A transposed conv's weight is
``(in, out / groups, *kernel)``: its units are the second axis, within their group.
The reference is the definition itself: two units are accidentally tied when swapping
them leaves the network's output unchanged and gives them equal gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tying


def _plant(net, units, groups):
    """Make units (u, v) of net[0] (a ConvTranspose2d) identical, incoming and outgoing."""
    u, v = units
    out_g = net[0].weight.shape[1]
    in_g = net[0].weight.shape[0] // groups
    g = u // out_g
    assert g == v // out_g  # same group
    with torch.no_grad():
        rows = slice(g * in_g, (g + 1) * in_g)
        net[0].weight[rows, v % out_g] = net[0].weight[rows, u % out_g]
        net[0].bias[v] = net[0].bias[u]
        nxt = net[2]
        axis = 0 if isinstance(nxt, nn.ConvTranspose2d) else 1
        nxt.weight.select(axis, v).copy_(nxt.weight.select(axis, u))


def _swapped_output_and_grads(net, u, v, x):
    """The output with units u, v swapped, and the gradients of the two units' biases."""
    net.zero_grad()
    y = net(x)
    y.pow(2).sum().backward()
    g = net[0].bias.grad
    perm = torch.arange(net[0].bias.numel())
    perm[u], perm[v] = v, u
    swapped = copy.deepcopy(net)
    with torch.no_grad():
        out_g = net[0].weight.shape[1]
        in_g = net[0].weight.shape[0] // net[0].groups
        rows = slice(u // out_g * in_g, (u // out_g + 1) * in_g)  # u's group reads these
        w = net[0].weight.clone()
        for a, b in ((u, v), (v, u)):
            swapped[0].weight[rows, a % out_g] = w[rows, b % out_g]
        swapped[0].bias.copy_(net[0].bias[perm])
        axis = 0 if isinstance(net[2], nn.ConvTranspose2d) else 1
        swapped[2].weight.copy_(net[2].weight.index_select(axis, perm))
    return y, swapped(x), g[u], g[v]


@pytest.mark.parametrize(
    "groups, nxt",
    [(1, "conv"), (1, "convT"), (2, "conv")],
)
def test_identical_units_of_a_transposed_conv_are_found(groups, nxt):
    torch.manual_seed(0)
    layer2 = nn.Conv2d(4, 3, 1) if nxt == "conv" else nn.ConvTranspose2d(4, 3, 2)
    net = nn.Sequential(nn.ConvTranspose2d(2, 4, 3, groups=groups), nn.Tanh(), layer2)
    units = (2, 3)
    assert tying.find_accidental_ties(net) == []
    _plant(net, units, groups)
    found = tying.find_accidental_ties(net)
    assert found == [tying.AccidentalTie("0", units, "2")]
    y, y_swapped, gu, gv = _swapped_output_and_grads(net, *units, torch.randn(2, 2, 5, 5))
    torch.testing.assert_close(y, y_swapped)  # the definition: the two are interchangeable
    torch.testing.assert_close(gu, gv)


def test_units_differing_only_in_what_they_feed_are_not_reported():
    torch.manual_seed(0)
    net = nn.Sequential(nn.ConvTranspose2d(2, 4, 3), nn.Tanh(), nn.ConvTranspose2d(4, 3, 2))
    _plant(net, (0, 1), 1)
    with torch.no_grad():
        net[2].weight[1] += 0.5  # unit 1 feeds the next layer differently
    assert tying.find_accidental_ties(net) == []
    # the input channels of a transposed conv are no units: equal ones are not reported
    with torch.no_grad():
        net[0].weight[1] = net[0].weight[0]
    assert [t.units for t in tying.find_accidental_ties(net)] == []
