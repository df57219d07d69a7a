"""Siamese: one physical tower, symmetric distances, summed gradients, contrastive loss."""

from __future__ import annotations

import pytest
import torch

import tying
from tying.nn import Siamese, contrastive_loss


def _tower():
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def test_tied_towers_share_parameters_and_sum_gradients():
    torch.manual_seed(0)
    net = Siamese(_tower())
    assert net.right[0].weight is net.left[0].weight
    c = tying.count(net)
    assert c.logical == 2 * c.physical
    a, b = torch.randn(5, 6), torch.randn(5, 6)
    za, zb = net(a, b)
    (za.square().sum() + (zb * 2).sum()).backward()
    w = net.left[0].weight
    ga = torch.autograd.grad(net.left(a).square().sum(), w)[0]
    gb = torch.autograd.grad((net.left(b) * 2).sum(), w)[0]
    torch.testing.assert_close(w.grad, ga + gb)  # claim B5/B7: one tensor, summed uses
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert tying.verify(net) == 4
    assert torch.equal(net.distance(a, b), net.distance(b, a))
    assert net.distance(a, a).abs().max().item() == 0.0


def test_untied_towers_are_independent():
    torch.manual_seed(0)
    net = Siamese(_tower(), tied=False)
    assert not torch.equal(net.left[0].weight, net.right[0].weight)
    c = tying.count(net)
    assert c.logical == c.physical
    a = torch.randn(4, 6)
    assert net.distance(a, a).min().item() > 0  # untied towers do not map alike to alike


def test_contrastive_loss_values_and_errors():
    za = torch.zeros(3, 2)
    zb = torch.tensor([[0.3, 0.4], [0.3, 0.4], [3.0, 4.0]])
    same = torch.tensor([1.0, 0.0, 0.0])
    # 0.5² for the match; (1 - 0.5)² for the close non-match; 0 beyond the margin
    torch.testing.assert_close(contrastive_loss(za, zb, same), torch.tensor((0.25 + 0.25) / 3))
    with pytest.raises(ValueError, match=r"same must be \(3,\), one label per pair"):
        contrastive_loss(za, zb, torch.ones(2))
    with pytest.raises(ValueError, match="must hold 0 .* or 1"):
        contrastive_loss(za, zb, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="margin must be > 0"):
        contrastive_loss(za, zb, same, margin=0.0)
    with pytest.raises(ValueError, match="same batch size on both inputs"):
        Siamese(_tower())(torch.randn(2, 6), torch.randn(3, 6))
    with pytest.raises(TypeError, match="needs an nn.Module, got function"):
        Siamese(_tower)
