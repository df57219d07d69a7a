"""Stop 53: checks that ran at recording time only, and calls that died on an internal
name.

- a ``torch.jit.trace`` of a model that builds its ``EdgeAdjacency`` from its inputs
  kept the node-id check of the trace's own graph only: a later call with node -1 read
  the last node's features, no error (the eager layer refuses it);
- a traced or compiled ``HashedEmbeddingBag`` given bad offsets failed in torch's
  ``repeat_interleave`` ("allocated size does not match required size"), naming
  neither the offsets nor the rule; a traced bag took only the trace's number of ids
  (it recorded ``numel()`` as a constant) and failed the same way on any other;
- ``reset_parameters()`` of an untied hashed layer died on "no attribute
  'weight_physical'".

Anchors: the eager layer (its refusal and its numbers), ``nn.Linear`` for a
weight-normed dense layer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
import tying.nn as tnn
from tying.nn.graph import EdgeAdjacency

pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace.* is deprecated:DeprecationWarning"),
]


class _GraphModel(nn.Module):
    """Builds Â's entries inside the traced forward, as a model fed edge lists does."""

    def __init__(self):
        super().__init__()
        self.conv = tnn.MultiHopGraphConv(3, 2, hops=2).double()

    def forward(self, x, index, weight):
        return self.conv(x, EdgeAdjacency(index, weight))


def test_a_traced_graph_conv_refuses_node_ids_out_of_range_as_eager_does():
    torch.manual_seed(0)
    model = _GraphModel()
    x = torch.randn(4, 3, dtype=torch.float64)
    good = torch.tensor([[0, 1, 2], [1, 2, 3]])
    w = torch.rand(3, dtype=torch.float64)
    traced = torch.jit.trace(model, (x, good, w))
    other = torch.tensor([[3, 0, 1], [2, 2, 0]])  # ids the trace did not see
    torch.testing.assert_close(traced(x, other, w), model(x, other, w), rtol=0, atol=0)
    bad = torch.tensor([[0, 1, 2], [1, 2, -1]])
    with pytest.raises(ValueError, match=r"node ids must lie in \[0, 4\).*got \[-1, 2\]"):
        model(x, bad, w)
    with pytest.raises(RuntimeError, match=r"node ids must lie in \[0, N\).*check the graph"):
        traced(x, bad, w)  # read node 3 for -1 before


def test_a_traced_bag_refuses_bad_offsets_by_name():
    torch.manual_seed(0)
    bag = tnn.HashedEmbeddingBag(10, 3, 5, pooling="sum").double()
    ids = torch.tensor([1, 2, 3, 4, 5])
    traced = torch.jit.trace(bag, (ids, torch.tensor([0, 2])), check_trace=False)
    good = torch.tensor([0, 1, 4])  # another bag count than the trace's
    torch.testing.assert_close(traced(ids, good), bag(ids, good), rtol=0, atol=0)
    for more in (torch.tensor([1, 2, 3, 4, 5, 6, 9]), torch.tensor([7, 8])):
        # other numbers of ids: torch's "allocated size does not match" before (the
        # trace kept its own 5 as the number of items)
        torch.testing.assert_close(traced(more, good[:2]), bag(more, good[:2]), rtol=0, atol=0)
    for bad in ([1, 2], [0, 3, 2], [0, 6]):
        with pytest.raises(ValueError, match=r"offsets must start at 0, not decrease"):
            bag(ids, torch.tensor(bad))
        with pytest.raises(RuntimeError, match=r"offsets must start at 0, not decrease"):
            traced(ids, torch.tensor(bad))


def test_a_compiled_bag_refuses_bad_offsets_by_name():
    torch.manual_seed(0)
    bag = tnn.HashedEmbeddingBag(10, 3, 5, pooling="mean").double()
    ids = torch.tensor([1, 2, 3, 4, 5])
    compiled = torch.compile(bag, backend="eager", dynamic=False)
    good = torch.tensor([0, 2])
    torch.testing.assert_close(compiled(ids, good), bag(ids, good), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r"offsets must start at 0, not decrease"):
        compiled(ids, torch.tensor([2, 1]))  # torch's "allocated size does not match" before


def test_reset_parameters_of_an_untied_hashed_linear_draws_the_dense_weight():
    torch.manual_seed(0)
    layer = tnn.HashedLinear(40, 30, 7)
    tying.untie(layer)
    before = layer.weight.detach().clone()
    layer.reset_parameters()  # died on "no attribute 'weight_physical'"
    w = layer.weight.detach()
    bound = 1 / 40**0.5
    assert not torch.equal(w, before)
    assert w.abs().max() <= bound
    assert w.unique().numel() > 7  # entries drawn one by one, not 7 bucket values


@pytest.mark.parametrize("cls", [tnn.HashedEmbedding, tnn.HashedEmbeddingBag])
def test_reset_parameters_of_an_untied_hashed_embedding_is_refused_by_name(cls):
    emb = cls(10, 3, 5)
    tying.untie(emb)
    before = emb.weight.detach().clone()
    name = cls.__name__
    fix = name.removeprefix("Hashed")
    with pytest.raises(tying.TieError, match=rf"{name}.reset_parameters: .*nn\.{fix}\.from_pre"):
        emb.reset_parameters()
    assert torch.equal(emb.weight, before)


@pytest.mark.parametrize(
    "build, x, ref",
    [
        (lambda: tnn.HashedLinear(6, 4, 5), torch.randn(3, 6), F.linear),
        (lambda: tnn.SymmetricConv1d(2, 3, 5), torch.randn(3, 2, 9), F.conv1d),
    ],
)
def test_weight_norm_needs_the_layer_untied_and_then_matches_the_dense_anchor(build, x, ref):
    """The logical weight is computed from the stored values, so torch's weight_norm finds
    no parameter ``weight`` (its error, loud); untied, it is the dense layer's."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    layer = build().double()
    x = x.double()
    with pytest.raises(ValueError, match=r"does not have a parameter.*name 'weight'"):
        weight_norm(layer)
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    tying.untie(layer)
    weight_norm(layer)
    g = layer.parametrizations.weight.original0
    torch.testing.assert_close(g.flatten(), w.flatten(1).norm(dim=1), rtol=1e-12, atol=0)
    torch.testing.assert_close(layer(x), ref(x, w, b), rtol=1e-12, atol=1e-12)


def _sweep_names():
    from tests.nn.test_layer_transforms_stop42 import CASES

    return sorted(CASES)


@pytest.mark.parametrize("name", _sweep_names())
def test_every_layer_untied_then_reset_draws_new_values_or_refuses_by_name(name):
    """The kind of the defect above: an untied layer's ``reset_parameters`` must not read
    a parameter the untie removed (every public layer and variant of stop 42's sweep)."""
    from tests.nn.test_layer_transforms_stop42 import _case

    layer, module, args, kwargs = _case(name)
    if not hasattr(layer, "reset_parameters"):
        pytest.skip(f"{name} has no reset_parameters")
    tying.untie(layer)
    before = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    try:
        layer.reset_parameters()
    except tying.TieError as e:
        assert str(e).startswith(f"{type(layer).__name__}.reset_parameters: ")
        assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
        return
    assert any(not torch.equal(before[k], v) for k, v in layer.state_dict().items())
    assert torch.isfinite(module(*args, **kwargs)).all()
