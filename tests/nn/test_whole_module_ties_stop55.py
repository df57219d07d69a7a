"""Siamese towers and share_layers stacks built from layers with ties of their own (stop 55).

``Siamese(TiedAutoencoder(...))`` and ``share_layers(Stack(HashedLinear(...) ...))`` gave
the right values, but ``tying.verify`` refused the model: the copies kept the ties their
layer declared for itself ("right.decoder.weight: relation is Same(), declared
Transposed"), which the whole-module tie had replaced. Checked against anchors written
from the physical parameters by hand.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import tying
import tying.nn as tnn

F64 = torch.float64


def _ae_anchor(net, x):
    w = net.left.encoder.weight  # (latent, in): the decoder reads its transpose
    return F.linear(F.linear(x, w, net.left.encoder.bias), w.T, net.left.decoder.bias)


def _hashed_anchor(net, x):
    return F.linear(x, net.left.weight, net.left.bias)  # the logical weight of the buckets


def _symmetric_anchor(net, x):
    w = net.left.weight_physical  # (out, in, 3) half of a palindromic length-5 filter
    return F.conv1d(x, torch.cat([w, w[..., :-1].flip(-1)], -1), net.left.bias)


TOWERS = {
    "TiedAutoencoder": (lambda: tnn.TiedAutoencoder(6, 3, bias=True), (2, 6), _ae_anchor),
    "HashedLinear": (lambda: tnn.HashedLinear(6, 3, 7), (2, 6), _hashed_anchor),
    "SymmetricConv1d": (lambda: tnn.SymmetricConv1d(2, 3, 5), (2, 2, 9), _symmetric_anchor),
}


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_a_siamese_of_a_tied_layer_verifies_and_matches_the_anchor(name):
    make, shape, anchor = TOWERS[name]
    torch.manual_seed(0)
    net = tnn.Siamese(make()).to(F64)
    n_physical = sum(p.numel() for p in net.left.parameters())
    assert tying.verify(net) > 0
    assert sum(p.numel() for p in net.parameters()) == n_physical  # one tower stored
    a, b = torch.randn(*shape, dtype=F64), torch.randn(*shape, dtype=F64)
    za, zb = net(a, b)
    torch.testing.assert_close(za, anchor(net, a), atol=1e-12, rtol=0)
    torch.testing.assert_close(zb, anchor(net, b), atol=1e-12, rtol=0)
    (za.square().sum() + zb.square().sum()).backward()
    with torch.no_grad():
        for p in net.parameters():
            p.sub_(0.3 * p.grad)
    tying.verify(net)  # the tie holds after a step
    za, zb = net(a, a)
    torch.testing.assert_close(zb, za, atol=0, rtol=0)
    torch.testing.assert_close(zb, anchor(net, a), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["TiedAutoencoder", "HashedLinear"])
def test_share_layers_over_tied_layers_verifies_and_applies_the_first_layer(name):
    if name == "TiedAutoencoder":
        make, anchor = (lambda: tnn.TiedAutoencoder(6, 6, bias=True)), _ae_anchor
    else:
        make, anchor = (lambda: tnn.HashedLinear(6, 6, 7)), _hashed_anchor
    torch.manual_seed(1)
    stack = tnn.Stack(make() for _ in range(3)).to(F64)
    tnn.share_layers(stack)
    assert tying.verify(stack) > 0
    first = stack.layers[0]
    x = torch.randn(2, 6, dtype=F64)
    ref = x
    for _ in range(3):
        ref = anchor(type("Net", (), {"left": first}), ref)
    torch.testing.assert_close(stack(x), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tnn.HashedEmbedding(20, 4, 7),
        lambda: tnn.HashedEmbedding(20, 4, 8, mode="block", block=2),
        lambda: tnn.HashedEmbeddingBag(20, 4, 7, pooling="sum"),
    ],
    ids=["entry", "block", "bag"],
)
def test_a_siamese_of_a_hashed_embedding_looks_up_the_left_buckets(make):
    # refused at the first call before ("weight is tied through Same() ... build the layer
    # with the settings the tie or file was made with"): the right tower now reads the
    # left tower's buckets through the same hash
    torch.manual_seed(2)
    net = tnn.Siamese(make()).to(F64)
    lone = copy.deepcopy(net.left)  # the anchor: one tower called on both inputs
    a, b = torch.tensor([[1, 19], [3, 3]]), torch.tensor([[0, 7], [19, 2]])
    za, zb = net(a, b)
    torch.testing.assert_close(za, lone(a), atol=0, rtol=0)
    torch.testing.assert_close(zb, lone(b), atol=0, rtol=0)
    assert tying.verify(net) > 0
    assert sum(p.numel() for p in net.parameters()) == lone.weight_physical.numel()
    (za.square().sum() + zb.square().sum()).backward()
    (lone(a).square().sum() + lone(b).square().sum()).backward()
    torch.testing.assert_close(
        net.left.weight_physical.grad, lone.weight_physical.grad, atol=1e-12, rtol=0
    )
    fresh = tnn.Siamese(make()).to(F64)
    fresh.load_state_dict(net.state_dict())
    torch.testing.assert_close(fresh(a, b)[1], lone(b), atol=0, rtol=0)
