"""A layer's printed tie setting after ``tying.untie`` (stop 55, second pass).

A layer built tied printed ``tied=True`` (``tie_gates=True``, ``shared=True``, a hashed
layer its buckets and seed) after ``tying.untie(layer)`` had given every slot its own
parameter: the printed model said the weights were shared when they were not. The
printed setting now follows the ties: ``tied=False (untied)`` once they are undone,
checked here against the layer's physical parameter count, which is what untie changes.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tying
import tying.nn as tnn

# (layer, the text that names its built tie)
CASES = {
    "LiftingConv2d": (lambda: tnn.LiftingConv2d(1, 2, 3), "tied="),
    "GroupConv2d": (lambda: tnn.GroupConv2d(2, 2, 3), "tied="),
    "TiedGateLSTM": (lambda: tnn.TiedGateLSTM(3, 4), "tie_gates="),
    "TiedResidualNet": (lambda: tnn.TiedResidualNet(4, 3, 3), "tied="),
    "SymmetricConv1d": (lambda: tnn.SymmetricConv1d(2, 3, 5), "tied="),
    "TiedAutoencoder": (lambda: tnn.TiedAutoencoder(6, 3), "tied="),
    "TiedUNet": (lambda: tnn.TiedUNet(2, 1, (4, 8)), "tied="),
    "MultiHopGraphConv": (lambda: tnn.MultiHopGraphConv(3, 4, 2), "shared="),
    "Siamese": (lambda: tnn.Siamese(nn.Linear(3, 2)), "tied="),
    "HashedLinear": (lambda: tnn.HashedLinear(8, 4, 10), "tied="),
    "HashedEmbedding": (lambda: tnn.HashedEmbedding(20, 4, 10), "tied="),
    "HashedEmbeddingBag": (lambda: tnn.HashedEmbeddingBag(20, 4, 10), "tied="),
}

HASHED = ("HashedLinear", "HashedEmbedding", "HashedEmbeddingBag")


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_printed_tie_follows_untie(name):
    make, key = CASES[name]
    layer = make()
    before = tying.count(layer)
    assert before.physical < before.logical  # built tied: something to untie
    if name not in HASHED:  # a hashed layer names its hash instead
        assert f"{key}True" in repr(layer)
    tying.untie(layer)
    after = tying.count(layer)
    assert after.physical == after.logical  # every slot has its own parameter now
    text = repr(layer)
    assert f"{key}False (untied)" in text
    assert f"{key}True" not in text
    # a copy of the untied layer prints as untied too
    assert f"{key}False (untied)" in repr(copy.deepcopy(layer))


@pytest.mark.parametrize("name", ["TiedAutoencoder", "Siamese", "HashedLinear"])
def test_a_tied_copy_still_prints_tied_and_untied_layers_as_built(name):
    make, key = CASES[name]
    layer = make()
    twin = copy.deepcopy(layer)
    tying.untie(layer)
    assert "(untied)" not in repr(twin)  # the copy keeps its ties and says so
    assert tying.count(twin).physical < tying.count(twin).logical


def test_a_layer_with_nothing_to_tie_keeps_its_setting():
    # depth 1 and 0 hops declare no tie: untie changes nothing, nor does the print
    for layer, key in (
        (tnn.TiedResidualNet(4, 3, 1), "tied=True"),
        (tnn.MultiHopGraphConv(3, 4, 0), "shared=True"),
        (tnn.TiedAutoencoder(6, 3, tied=False), "tied=False"),
    ):
        tying.untie(layer)
        assert key in repr(layer) and "(untied)" not in repr(layer)


def test_untied_layer_computes_as_its_untied_parameters_say():
    # the text is right because the layer is: after untie and a change of one copy,
    # the output moves (the untied copy is read, not the old tie's source)
    torch.manual_seed(0)
    layer = tnn.TiedAutoencoder(6, 3)
    tying.untie(layer)
    x = torch.randn(2, 6)
    y0 = layer(x)
    with torch.no_grad():
        layer.decoder.weight.add_(1.0)
    assert not torch.equal(layer(x), y0)
    assert "tied=False (untied)" in repr(layer)


def test_a_layer_re_tied_whole_prints_tied_and_untied_after_untie():
    # the right tower's own declarations are superseded by the Siamese plan, but its
    # slots still read the left tower's: it is tied, and prints so until untie
    net = tnn.Siamese(tnn.TiedAutoencoder(6, 3))
    stack = tnn.Stack(tnn.TiedAutoencoder(6, 6) for _ in range(3))
    tnn.share_layers(stack)
    for model in (net, stack):
        assert "(untied)" not in repr(model)
        tying.untie(model)
        assert tying.count(model).physical == tying.count(model).logical
        assert "(untied)" in repr(model) and "tied=True" not in repr(model)
