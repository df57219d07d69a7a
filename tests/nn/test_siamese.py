"""Siamese: one physical tower, symmetric distances, summed gradients, contrastive loss."""

from __future__ import annotations

import copy
import pickle

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


def _bn_tower():
    return torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(), torch.nn.Linear(3, 2)
    )


def test_tied_towers_share_batchnorm_statistics_like_one_tower_called_twice():
    # stop 31: the plan ties parameters only, so each side kept its own running
    # statistics; in eval mode the towers normalised differently and d(x, x) was not 0
    torch.manual_seed(0)
    net = Siamese(_bn_tower()).double()
    ref = _bn_tower().double()  # the reference: one tower, called on a, then on b
    ref.load_state_dict(net.left.state_dict())
    a, b = torch.randn(8, 4, dtype=torch.float64), 3 * torch.randn(8, 4, dtype=torch.float64) + 2
    opt = torch.optim.Adam(net.parameters(), lr=0.1, weight_decay=0.1)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        za, zb = net(a, b)
        (za.sum() + zb.square().sum()).backward()
        opt.step()
        ref_opt.zero_grad()
        (ref(a).sum() + ref(b).square().sum()).backward()
        ref_opt.step()
    net.eval(), ref.eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    assert torch.equal(net.left[1].running_mean, ref[1].running_mean)
    assert net.right[1].running_var is net.left[1].running_var
    assert net.distance(x, x).abs().max().item() == 0.0
    za, zb = net(x, b[:5])
    assert torch.equal(za, ref(x)) and torch.equal(zb, ref(b[:5]))
    assert tying.verify(net) == 6
    for copied in (copy.deepcopy(net), copy.deepcopy(net).float(), pickle.loads(pickle.dumps(net))):
        assert copied.right[1].running_mean is copied.left[1].running_mean
    with torch.device("meta"):
        lazy = Siamese(_bn_tower())
    lazy = lazy.to_empty(device="cpu")
    assert lazy.right[1].running_var is lazy.left[1].running_var


def test_a_state_dict_with_two_values_for_a_shared_buffer_is_refused():
    torch.manual_seed(0)
    net = Siamese(_bn_tower())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    fresh = Siamese(_bn_tower())
    fresh.load_state_dict(state)  # equal values: one buffer, loads
    state["right.1.running_mean"] += 1.0  # e.g. a Siamese saved before stop 31
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=r"left.1.running_mean and right.1.running_mean are one"):
        fresh.load_state_dict(state)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_untied_siamese_towers_get_their_own_statistics():
    torch.manual_seed(0)
    net = Siamese(_bn_tower())
    tying.untie(net)
    a, b = torch.randn(8, 4), 3 * torch.randn(8, 4) + 2
    net(a, b)
    assert net.right[1].running_mean is not net.left[1].running_mean
    assert not torch.equal(net.right[1].running_mean, net.left[1].running_mean)
    untied = Siamese(_bn_tower(), tied=False)
    assert untied.right[1].running_mean is not untied.left[1].running_mean


def test_a_shared_buffer_made_two_tensors_is_joined_or_refused():
    torch.manual_seed(0)
    net = Siamese(_bn_tower())
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    net(a, b)
    fresh = Siamese(_bn_tower())
    fresh.load_state_dict({k: v.clone() for k, v in net.state_dict().items()}, assign=True)
    fresh(a, b)  # two equal copies: joined again
    assert fresh.right[1].running_mean is fresh.left[1].running_mean
    fresh.right[1].running_mean = torch.zeros(3)
    with pytest.raises(ValueError, match=r"right.1.running_mean is no longer left.1.running_mean"):
        fresh(a, b)


@pytest.mark.parametrize("margin", [float("inf"), True, float("nan"), 0.0])
def test_a_margin_that_is_not_a_finite_positive_number_is_refused(margin):
    # margin=inf made every matching pair's term 0·inf: the loss read NaN with no error
    za, zb = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"margin must be > 0 and finite, got"):
        contrastive_loss(za, zb, torch.tensor([0.0, 1.0]), margin=margin)
