"""A tied Siamese of a tower with buffers and no parameter (stop 55, second pass).

``Siamese(nn.BatchNorm1d(3, affine=False))`` parted its towers' running statistics at
the first call: the check for ``tying.untie`` read "no tied slot left" as untied, and a
tower with no parameter never had one. In eval mode ``d(a, a)`` then read 0.24, not 0,
with no error. The reference is one tower called on both inputs, as in
``test_siamese.py`` for a tower with parameters.
"""

from __future__ import annotations

import torch
from torch import nn

import tying
from tying.nn import Siamese


def test_tied_towers_without_parameters_share_their_statistics():
    torch.manual_seed(0)
    a, b = torch.randn(8, 3), torch.randn(8, 3) + 2.0
    net = Siamese(nn.BatchNorm1d(3, affine=False))
    one = nn.BatchNorm1d(3, affine=False)
    for _ in range(3):
        za, zb = net(a, b)
        torch.testing.assert_close(za, one(a), rtol=0, atol=0)
        torch.testing.assert_close(zb, one(b), rtol=0, atol=0)
    assert net.left.running_mean is net.right.running_mean
    torch.testing.assert_close(net.right.running_var, one.running_var, rtol=0, atol=0)
    net.eval()
    za, zb = net(a, a)
    assert torch.equal(za, zb)  # d(a, a) = 0: one normalisation for both sides
    assert torch.equal(net.distance(a, b), net.distance(b, a))


def test_untie_still_parts_the_statistics_of_a_tower_with_parameters():
    # the untie check kept for towers that had tied slots (stop 49's behaviour)
    torch.manual_seed(0)
    net = Siamese(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    a, b = torch.randn(8, 3), torch.randn(8, 3)
    tying.untie(net)
    net(a, b)
    assert net.left[1].running_mean is not net.right[1].running_mean
    assert not torch.equal(net.left[1].running_mean, net.right[1].running_mean)
