"""Stop 41: NumPy integer sizes (``np.prod(shape)``, a config read by NumPy) are taken by
every layer and function of ``tying.nn`` as torch's own layers take them, and stored as
plain Python ints; bools (Python's and NumPy's) and floats stay refused.

Before, every layer but ``HashedEmbedding`` refused ``np.int64(8)`` with "must be a
positive int, got np.int64(8)" while ``nn.Linear(np.int64(8), 4)`` works.
"""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
import tying.nn as tn
from tying.nn.hashing import HashedTable

SMALL = settings(max_examples=6, deadline=None, derandomize=True)


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _ids(*shape, high=10):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(2))


def _graph_adj():
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    return tn.normalized_adjacency(edges, 4)


# name -> (builder taking an int converter ``c``, call on the built module)
LAYERS = {
    "Attention": (
        lambda c: tn.Attention(c(8), c(2), kv_heads=c(1), d_head=c(4), d_context=c(6)),
        lambda m: m(_x(2, 3, 8), _x(2, 5, 6)),
    ),
    "TiedAutoencoder": (lambda c: tn.TiedAutoencoder(c(8), c(4)), lambda m: m(_x(3, 8))),
    "TiedGateLSTM": (lambda c: tn.TiedGateLSTM(c(3), c(5)), lambda m: m(_x(2, 4, 3))[0]),
    "MultiHopGraphConv": (
        lambda c: tn.MultiHopGraphConv(c(3), c(2), c(2)),
        lambda m: m(_x(4, 3), _graph_adj()),
    ),
    "GroupConv2d": (
        lambda c: tn.GroupConv2d(c(2), c(3), c(3), padding=c(1)),
        lambda m: m(_x(1, 2, 4, 5, 5)),
    ),
    "LiftingConv2d": (
        lambda c: tn.LiftingConv2d(c(2), c(3), c(3), padding=c(1)),
        lambda m: m(_x(1, 2, 5, 5)),
    ),
    "HashedEmbedding": (
        lambda c: tn.HashedEmbedding(c(10), c(4), c(8), seed=c(3)),
        lambda m: m(_ids(5)),
    ),
    "HashedEmbeddingBag": (
        lambda c: tn.HashedEmbeddingBag(c(10), c(4), c(8), mode="block", block=c(2)),
        lambda m: m(_ids(2, 3)),
    ),
    "HashedLinear": (
        lambda c: tn.HashedLinear(c(6), c(4), c(8), seed=c(1)),
        lambda m: m(_x(2, 6)),
    ),
    "LocallyConnected2d": (
        lambda c: tn.LocallyConnected2d(c(2), c(3), (c(5), c(4)), c(3), stride=c(1), padding=c(1)),
        lambda m: m(_x(1, 2, 5, 4)),
    ),
    "PeriodicFeatures": (
        lambda c: tn.PeriodicFeatures(c(3), 2.0, harmonics=c(2), periodic_dims=(c(0), c(2))),
        lambda m: m(_x(4, 3)),
    ),
    "SharedBoundary": (
        lambda c: tn.SharedBoundary(c(2), 1.0, dim=c(0), hidden=c(5), derivatives=c(1)),
        lambda m: m.boundary(_x(4, 1)),
    ),
    "VectorField": (lambda c: tn.VectorField(c(4), c(6)), lambda m: m(_x(2, 4))),
    "TiedResidualNet": (lambda c: tn.TiedResidualNet(c(4), c(6), c(3)), lambda m: m(_x(2, 4))),
    "NeuralODE": (
        lambda c: tn.NeuralODE(tn.VectorField(c(3), c(4)), method="rk4", steps=c(7)),
        lambda m: m(_x(2, 3)),
    ),
    "SymmetricConv1d": (
        lambda c: tn.SymmetricConv1d(
            c(4), c(6), c(5), stride=c(2), padding=c(1), dilation=c(1), groups=c(2)
        ),
        lambda m: m(_x(2, 4, 11)),
    ),
    "TransformerBlock": (
        lambda c: tn.TransformerBlock(c(8), c(2), d_ff=c(12), kv_heads=c(1), v_heads=c(2)),
        lambda m: m(_x(2, 3, 8)),
    ),
    "EncoderDecoder": (
        lambda c: tn.EncoderDecoder(c(11), c(8), c(2), c(2), c(6), d_ff=c(16)),
        lambda m: m(_ids(2, 4, high=11), _ids(2, 3, high=11)),
    ),
    "TiedUNet": (
        lambda c: tn.TiedUNet(c(2), c(1), (c(4), c(8)), kernel_size=c(3)),
        lambda m: m(_x(1, 2, 8, 8)),
    ),
    "mlp": (lambda c: tn.mlp([c(3), c(5), c(2)]), lambda m: m(_x(4, 3))),
}


def _numpy_ints(obj, path="", seen=None) -> list[str]:
    """Paths of every NumPy integer held in a module's attributes (tuples and lists too)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.generic):
        return [path]
    if isinstance(obj, tuple | list):
        return [p for i, v in enumerate(obj) for p in _numpy_ints(v, f"{path}[{i}]", seen)]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _numpy_ints(v, f"{path}.{k}", seen)]
    if isinstance(obj, nn.Module):
        skip = ("_parameters", "_buffers", "_modules")
        found = [
            p
            for k, v in vars(obj).items()
            if k not in skip and not k.endswith("hooks")
            for p in _numpy_ints(v, f"{path}.{k}", seen)
        ]
        for name, child in obj.named_children():
            found += _numpy_ints(child, f"{path}.{name}", seen)
        return found
    if hasattr(obj, "__dataclass_fields__"):
        return [p for k in obj.__dataclass_fields__ for p in _numpy_ints(getattr(obj, k), k, seen)]
    return []


def _build(name, c):
    build, _ = LAYERS[name]
    torch.manual_seed(0)
    return build(c)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_numpy_sizes_build_the_same_layer_with_python_ints(name):
    plain = _build(name, int)
    numpy = _build(name, np.int64)
    assert _numpy_ints(numpy) == [], f"{name} kept NumPy ints"
    assert repr(numpy) == repr(plain)  # "np.int64(8)" nowhere in the repr
    sd_plain, sd_numpy = plain.state_dict(), numpy.state_dict()
    assert sd_plain.keys() == sd_numpy.keys()
    for k in sd_plain:
        torch.testing.assert_close(sd_numpy[k], sd_plain[k], rtol=0, atol=0)
    _, call = LAYERS[name]
    torch.testing.assert_close(call(numpy), call(plain), rtol=0, atol=0)
    clone = pickle.loads(pickle.dumps(numpy))  # np ints would pickle as numpy objects
    assert _numpy_ints(clone) == []


def test_every_public_layer_with_a_size_is_covered():
    """A new public layer taking sizes must be added to LAYERS (and so to this guard)."""
    sized = {
        n
        for n in tn.__all__
        if isinstance(getattr(tn, n), type)
        and issubclass(getattr(tn, n), nn.Module)
        and n not in {"GroupPool", "Siamese", "SoftDiceLoss", "SoftIoULoss", "Stack"}
    }
    assert sized <= set(LAYERS), sorted(sized - set(LAYERS))


def test_autoencoder_numpy_size_was_the_reported_refusal():
    ae = tn.TiedAutoencoder(np.int64(8), np.int32(4))
    assert type(ae.in_features) is int and type(ae.latent) is int
    json.dumps({"in_features": ae.in_features, "latent": ae.latent})  # np.int64 is not JSON
    assert "np." not in repr(ae)


def test_hashed_table_relation_stores_plain_ints():
    rel = HashedTable(mode="block", buckets=np.int64(16), block=np.int32(2), seed=np.uint8(3))
    assert rel == HashedTable(mode="block", buckets=16, block=2, seed=3)
    assert all(type(getattr(rel, k)) is int for k in ("buckets", "block", "seed"))
    with pytest.raises(tying.TieError, match=r"HashedTable\(block=...\) must be a positive int"):
        HashedTable(mode="block", buckets=16, block=np.True_)


def test_functions_take_numpy_ints():
    edges = torch.tensor([[0, 1], [1, 2]])
    torch.testing.assert_close(
        tn.normalized_adjacency(edges, np.int64(3)).to_dense(),
        tn.normalized_adjacency(edges, 3).to_dense(),
        rtol=0,
        atol=0,
    )
    x = torch.linspace(0, 1, 5, dtype=torch.float64).unsqueeze(1).requires_grad_()
    u = x**3
    torch.testing.assert_close(
        tn.partial(u, x, np.int64(0), order=np.int32(2)), tn.partial(u, x, 0, order=2)
    )
    torch.manual_seed(0)
    f = tn.VectorField(3, 4).double()
    x0 = _x(2, 3).double()
    torch.testing.assert_close(
        tn.odeint(f, x0, method="rk4", steps=np.int64(9)),
        tn.odeint(f, x0, method="rk4", steps=9),
        rtol=0,
        atol=0,
    )


REFUSED = [
    ("TiedAutoencoder", lambda v: tn.TiedAutoencoder(v, 4), "in_features must be a positive int"),
    ("TiedGateLSTM", lambda v: tn.TiedGateLSTM(3, v), "hidden_size must be a positive int"),
    ("Attention", lambda v: tn.Attention(8, v), "n_heads must be a positive int"),
    ("Attention", lambda v: tn.Attention(8, 2, kv_heads=v), "kv_heads must divide n_heads"),
    ("MultiHopGraphConv", lambda v: tn.MultiHopGraphConv(3, 2, v), "hops must be an int >= 0"),
    ("GroupConv2d", lambda v: tn.GroupConv2d(2, 3, v), "kernel_size must be one positive int"),
    (
        "LocallyConnected2d",
        lambda v: tn.LocallyConnected2d(2, 3, 5, v),
        "kernel_size: expected an int or a pair|kernel_size must be >= 1",
    ),
    ("SymmetricConv1d", lambda v: tn.SymmetricConv1d(4, 6, 3, groups=v), "groups must be a pos"),
    ("SymmetricConv1d", lambda v: tn.SymmetricConv1d(v, 6, 3), "in_channels must be a positive"),
    ("SymmetricConv1d", lambda v: tn.SymmetricConv1d(4, 6, 3, stride=v), "stride must be an int"),
    ("TiedUNet", lambda v: tn.TiedUNet(2, 1, (4, v)), "widths must be at least two positive"),
    ("EncoderDecoder", lambda v: tn.EncoderDecoder(11, 8, 2, v, 6), "layers must be a positive"),
    ("TransformerBlock", lambda v: tn.TransformerBlock(8, 2, d_ff=v), "d_ff must be a positive"),
    ("TiedResidualNet", lambda v: tn.TiedResidualNet(4, 6, v), "depth must be a positive int"),
    ("SharedBoundary", lambda v: tn.SharedBoundary(1, 1.0, hidden=v), "hidden must be a positive"),
    ("mlp", lambda v: tn.mlp([3, v]), "sizes must be at least two positive ints"),
    ("NeuralODE", lambda v: tn.NeuralODE(tn.VectorField(3, 4), steps=v), "an int steps >= 1"),
    ("HashedLinear", lambda v: tn.HashedLinear(v, 4, 8), "in_features must be a positive int"),
    ("PeriodicFeatures", lambda v: tn.PeriodicFeatures(2, 1.0, harmonics=v), "harmonics must be"),
]


@pytest.mark.parametrize("bad", [True, np.True_, 2.0, np.float64(2.0), "2", np.int64(-1)])
@pytest.mark.parametrize("case", REFUSED, ids=[f"{n}-{m[:14]}" for n, _, m in REFUSED])
def test_bools_floats_and_negative_numpy_ints_stay_refused(case, bad):
    _, build, match = case
    with pytest.raises((ValueError, TypeError), match=match):
        build(bad)


@SMALL
@given(
    name=st.sampled_from(sorted(LAYERS)),
    kind=st.sampled_from([np.int64, np.int32, np.int16, np.uint16, np.uint64]),
)
def test_property_any_numpy_integer_kind_builds_the_python_int_layer(name, kind):
    """Guards the kind (a NumPy size refused, or kept as a NumPy scalar), not one layer: any
    NumPy integer type gives the layer built with Python ints, same outputs and repr."""
    plain, numpy = _build(name, int), _build(name, kind)
    assert _numpy_ints(numpy) == []
    assert repr(numpy) == repr(plain)
    _, call = LAYERS[name]
    torch.testing.assert_close(call(numpy), call(plain), rtol=0, atol=0)
    deep = copy.deepcopy(numpy)
    torch.testing.assert_close(call(deep), call(plain), rtol=0, atol=0)


@SMALL
@given(bad=st.sampled_from([True, False, np.True_, np.False_]), case=st.sampled_from(REFUSED))
def test_property_bools_are_never_sizes(bad, case):
    _, build, match = case
    with pytest.raises((ValueError, TypeError), match=match):
        build(bad)


# a NumPy bool where a number is meant: t1=True was refused, t1=np.True_ read as 1.0
NUMBERS = [
    ("TiedResidualNet(t1=)", lambda v: tn.TiedResidualNet(2, 3, 2, t1=v), "t1 must be > 0"),
    ("NeuralODE(t1=)", lambda v: tn.NeuralODE(tn.VectorField(2, 3), t1=v), "finite t1 > 0"),
    ("NeuralODE(rtol=)", lambda v: tn.NeuralODE(tn.VectorField(2, 3), rtol=v), "rtol must be"),
    (
        "odeint(t1=)",
        lambda v: tn.odeint(tn.VectorField(2, 3), torch.ones(1, 2), t1=v, method="rk4"),
        "finite t1 > 0",
    ),
    ("PeriodicFeatures(period)", lambda v: tn.PeriodicFeatures(2, v), "period must be > 0"),
    ("SharedBoundary(period)", lambda v: tn.SharedBoundary(2, v), "period must be > 0"),
    (
        "contrastive_loss(margin=)",
        lambda v: tn.contrastive_loss(
            torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([1, 0]), margin=v
        ),
        "margin must be > 0",
    ),
    ("soft_dice(eps=)", lambda v: tn.soft_dice(torch.rand(2, 3), torch.rand(2, 3), eps=v), "eps"),
    ("soft_iou(eps=)", lambda v: tn.soft_iou(torch.rand(2, 3), torch.rand(2, 3), eps=v), "eps"),
    ("SoftDiceLoss(eps=)", lambda v: tn.SoftDiceLoss(eps=v), "eps must be a finite number"),
    (
        "to_conv(atol=)",
        lambda v: tn.LocallyConnected2d.from_conv(nn.Conv2d(1, 2, 3), input_size=5).to_conv(atol=v),
        "atol must be a non-negative number",
    ),
]


@pytest.mark.parametrize("case", NUMBERS, ids=[n for n, _, _ in NUMBERS])
def test_numpy_bools_are_not_numbers(case):
    _, build, match = case
    for bad in (True, np.True_):
        with pytest.raises(ValueError, match=match):
            build(bad)


def test_numpy_numbers_still_taken_where_numbers_are_meant():
    torch.manual_seed(0)
    f = tn.VectorField(2, 3).double()
    x0 = torch.ones(1, 2, dtype=torch.float64)
    torch.testing.assert_close(
        tn.odeint(f, x0, t1=np.float64(0.5), method="rk4", steps=8),
        tn.odeint(f, x0, t1=0.5, method="rk4", steps=8),
        rtol=0,
        atol=0,
    )
    assert tn.PeriodicFeatures(2, np.float32(2.0)).period == 2.0
    lc = tn.LocallyConnected2d.from_conv(nn.Conv2d(1, 2, 3), input_size=5)
    assert lc.to_conv(atol=np.int64(0)).weight.shape == (2, 1, 3, 3)  # was refused


def test_locally_connected_takes_a_list_pair_as_conv2d_does():
    torch.manual_seed(0)
    a = tn.LocallyConnected2d(1, 2, [5, 4], [3, 2], stride=[1, 2], padding=[1, 0])
    torch.manual_seed(0)
    b = tn.LocallyConnected2d(1, 2, (5, 4), (3, 2), stride=(1, 2), padding=(1, 0))
    assert (a.input_size, a.kernel_size, a.stride, a.padding) == ((5, 4), (3, 2), (1, 2), (1, 0))
    x = _x(2, 1, 5, 4)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"input_size: expected an int or a pair of ints"):
        tn.LocallyConnected2d(1, 2, [5, 4, 3], 3)
