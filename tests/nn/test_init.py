"""Every layer ``tying.nn`` exports survives the round-trips a user puts it through (stop 26).

One property test over ``tying.nn.__all__`` instead of one per layer, so a layer added
later is covered (or the coverage test names it): ``deepcopy``, pickle, a
``state_dict`` loaded into a layer built from another seed, a ``meta`` build then
``to_empty`` + ``reset_parameters``, and an eval-mode forward after the parameters
are changed in place (a kept filter bank or other derived tensor must not go stale).
Each compares numbers with a layer that never ran, and checks that the ties hold
(``tying.count``) and that no state-dict entry holds a tensor twice.
"""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest
import torch
from torch import nn

import tying
import tying.nn as tnn


def _adjacency():
    edges = torch.tensor([[0, 1, 2, 3, 1], [1, 2, 3, 4, 0]])
    return tnn.normalized_adjacency(edges, 5, dtype=torch.float64)


# name: (build, inputs); every input float64 so the comparisons can be exact or near it
LAYERS = {
    "Attention": (
        lambda: tnn.Attention(8, 2, kv_heads=1, causal=True),
        lambda: (torch.randn(2, 5, 8),),
    ),
    "EncoderDecoder": (
        lambda: tnn.EncoderDecoder(11, 8, 2, 2, 7),
        lambda: (torch.randint(0, 11, (2, 5)), torch.randint(0, 11, (2, 4))),
    ),
    "GroupConv2d": (
        lambda: tnn.GroupConv2d(2, 3, 3, group="D4"),
        lambda: (torch.randn(2, 2, 8, 7, 7),),
    ),
    "GroupPool": (lambda: tnn.GroupPool("mean"), lambda: (torch.randn(2, 3, 4, 5, 5),)),
    "HashedEmbedding": (
        lambda: tnn.HashedEmbedding(20, 4, 7),
        lambda: (torch.randint(0, 20, (3, 5)),),
    ),
    "HashedEmbeddingBag": (
        lambda: tnn.HashedEmbeddingBag(20, 4, 7),
        lambda: (torch.randint(0, 20, (3, 5)),),
    ),
    "HashedLinear": (lambda: tnn.HashedLinear(6, 4, 9), lambda: (torch.randn(3, 6),)),
    "LiftingConv2d": (lambda: tnn.LiftingConv2d(2, 3, 3), lambda: (torch.randn(2, 2, 7, 7),)),
    "LocallyConnected2d": (
        lambda: tnn.LocallyConnected2d(2, 3, 6, 3),
        lambda: (torch.randn(2, 2, 6, 6),),
    ),
    "MultiHopGraphConv": (
        lambda: tnn.MultiHopGraphConv(4, 3, 2),
        lambda: (torch.randn(5, 4), _adjacency()),
    ),
    "NeuralODE": (
        lambda: tnn.NeuralODE(tnn.VectorField(3, 5), method="rk4", steps=8),
        lambda: (torch.randn(2, 3),),
    ),
    "PeriodicFeatures": (
        lambda: tnn.PeriodicFeatures(2, 1.0, harmonics=2),
        lambda: (torch.rand(4, 2),),
    ),
    "SharedBoundary": (lambda: tnn.SharedBoundary(2, 1.0), lambda: (torch.rand(4, 1),)),
    "Siamese": (
        lambda: tnn.Siamese(nn.Linear(4, 3)),
        lambda: (torch.randn(2, 4), torch.randn(2, 4)),
    ),
    "SoftDiceLoss": (
        lambda: tnn.SoftDiceLoss(from_logits=True),
        lambda: (torch.randn(2, 1, 4, 4), torch.ones(2, 1, 4, 4)),
    ),
    "SoftIoULoss": (
        lambda: tnn.SoftIoULoss(from_logits=True),
        lambda: (torch.randn(2, 1, 4, 4), torch.ones(2, 1, 4, 4)),
    ),
    "Stack": (lambda: tnn.Stack(nn.Linear(4, 4) for _ in range(3)), lambda: (torch.randn(2, 4),)),
    "SymmetricConv1d": (
        lambda: tnn.SymmetricConv1d(2, 3, 5, padding=2),
        lambda: (torch.randn(2, 2, 11),),
    ),
    "TiedAutoencoder": (lambda: tnn.TiedAutoencoder(6, 3, bias=True), lambda: (torch.randn(2, 6),)),
    "TiedGateLSTM": (lambda: tnn.TiedGateLSTM(4, 5), lambda: (torch.randn(2, 3, 4),)),
    "TiedResidualNet": (lambda: tnn.TiedResidualNet(3, 5, 4), lambda: (torch.randn(2, 3),)),
    "TiedUNet": (lambda: tnn.TiedUNet(1, 2, (4, 8)), lambda: (torch.randn(1, 1, 8, 8),)),
    "TransformerBlock": (
        lambda: tnn.TransformerBlock(8, 2, cross=True, causal=True),
        lambda: (torch.randn(2, 5, 8), torch.randn(2, 3, 8)),
    ),
    "VectorField": (lambda: tnn.VectorField(3, 5), lambda: (torch.randn(2, 3),)),
}


def _double(args):
    return tuple(a.double() if a.is_floating_point() else a for a in args)


def _field(x):  # a fixed u(x) for SharedBoundary.penalty, which has no forward
    return torch.sin(3.0 * x).sum(-1, keepdim=True) + x[..., :1] ** 2


def _out(layer, args):
    out = layer.penalty(_field, *args) if isinstance(layer, tnn.SharedBoundary) else layer(*args)
    while isinstance(out, tuple):  # (output, state), (za, zb)
        out = (
            torch.cat([o.flatten() for o in out])
            if all(isinstance(o, torch.Tensor) for o in out)
            else out[0]
        )
    return out


def _built(name, seed):
    torch.manual_seed(seed)
    return LAYERS[name][0]().double()


def _inputs(name):
    torch.manual_seed(100)
    return _double(LAYERS[name][1]())


def test_every_exported_layer_is_covered():
    exported = {
        name
        for name in tnn.__all__
        if inspect.isclass(getattr(tnn, name)) and issubclass(getattr(tnn, name), nn.Module)
    }
    assert exported == set(LAYERS), f"add a factory for {sorted(exported - set(LAYERS))}"


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_copies_and_state_dict_round_trip_give_the_same_numbers(name):
    layer, args = _built(name, 0).eval(), _inputs(name)
    with torch.no_grad():
        want = _out(layer, args)
        for copied in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            torch.testing.assert_close(_out(copied, args), want, rtol=0, atol=0)
        state = layer.state_dict()
        # a tie is stored once: no two entries share storage
        ptrs = [t.untyped_storage().data_ptr() for t in state.values() if t.numel()]
        assert len(ptrs) == len(set(ptrs))
        fresh = _built(name, 1).eval()
        fresh.load_state_dict(state)
        torch.testing.assert_close(_out(fresh, args), want, rtol=0, atol=0)
    before = tying.count(layer)
    assert (tying.count(fresh).logical, tying.count(fresh).physical) == (
        before.logical,
        before.physical,
    )


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_eval_output_follows_an_in_place_change(name):
    # a kept bank (or any derived tensor) that outlives an in-place write is a silent
    # wrong number: compare with a layer that never ran, given the changed state
    layer, args = _built(name, 0).eval(), _inputs(name)
    with torch.no_grad():
        _out(layer, args)  # fill any eval cache
        for p in layer.parameters():
            p.mul_(2.0).add_(0.01)
        got = _out(layer, args)
        fresh = _built(name, 1).eval()
        fresh.load_state_dict(layer.state_dict())
        torch.testing.assert_close(got, _out(fresh, args), rtol=1e-12, atol=1e-12)
        layer.load_state_dict(_built(name, 2).state_dict())  # and after load_state_dict
        torch.testing.assert_close(
            _out(layer, args), _out(_built(name, 2).eval(), args), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_meta_build_then_to_empty_and_reset_keeps_the_ties(name):
    want = tying.count(_built(name, 0))
    with torch.device("meta"):
        torch.manual_seed(0)
        layer = LAYERS[name][0]()
    layer = layer.to_empty(device="cpu").double()
    for module in layer.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    got = tying.count(layer)
    assert (got.logical, got.physical) == (want.logical, want.physical)
    with torch.no_grad():
        assert torch.isfinite(_out(layer.eval(), _inputs(name))).all()


# every int size argument of a layer: True is an int to Python, so it was read as 1
# (TiedResidualNet(2, 3, True) built a one-step net; hops=True one hop) with no error
BOOL_SIZES = [
    ("Attention", lambda v: tnn.Attention(8, 2, kv_heads=v)),
    ("Attention", lambda v: tnn.Attention(8, v)),
    ("Attention", lambda v: tnn.Attention(8, 2, d_head=v)),
    ("Attention", lambda v: tnn.Attention(8, 2, d_context=v)),
    ("MultiHopGraphConv", lambda v: tnn.MultiHopGraphConv(3, 2, v)),
    ("MultiHopGraphConv", lambda v: tnn.MultiHopGraphConv(v, 2)),
    ("PeriodicFeatures", lambda v: tnn.PeriodicFeatures(2, 1.0, harmonics=v)),
    ("SymmetricConv1d", lambda v: tnn.SymmetricConv1d(2, 3, v)),
    ("TiedAutoencoder", lambda v: tnn.TiedAutoencoder(4, v)),
    ("TiedGateLSTM", lambda v: tnn.TiedGateLSTM(3, v)),
    ("TiedResidualNet", lambda v: tnn.TiedResidualNet(2, 3, v)),
    ("TiedUNet", lambda v: tnn.TiedUNet(1, 1, (4, v))),
    ("TiedUNet", lambda v: tnn.TiedUNet(1, 1, (4, 8), kernel_size=v)),
    ("VectorField", lambda v: tnn.VectorField(2, v)),
    ("mlp", lambda v: tnn.mlp([2, v])),
    ("TransformerBlock", lambda v: tnn.TransformerBlock(8, 2, d_ff=v)),
    ("EncoderDecoder", lambda v: tnn.EncoderDecoder(11, 8, 2, v, 7)),
    ("EncoderDecoder", lambda v: tnn.EncoderDecoder(v, 8, 2, 2, 7)),
    ("normalized_adjacency", lambda v: tnn.normalized_adjacency(torch.tensor([[0], [0]]), v)),
]


@pytest.mark.parametrize(
    "name, build", BOOL_SIZES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BOOL_SIZES)]
)
def test_a_bool_size_is_refused(name, build):
    with pytest.raises((ValueError, TypeError), match=r"got .*True"):
        build(True)
