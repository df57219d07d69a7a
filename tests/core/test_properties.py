"""Property test: random models and random rule lists give either a correct apply
or a TieError with the model bit-identical to before."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tying

from .helpers import state_bytes

RELATIONS = [
    tying.Same(),
    tying.Same(),
    tying.Same(),
    tying.Transposed(),
    tying.Rotated(1),
    tying.Flipped((0,)),
    tying.Mirrored(),
    tying.Scaled(2.0),
]


def _model(dims: list[int]) -> nn.Module:
    layers = nn.ModuleDict()
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers[f"l{i}"] = nn.Linear(a, b)
    return layers


@st.composite
def cases(draw):
    dims = draw(st.lists(st.sampled_from([2, 2, 3]), min_size=3, max_size=5))
    n = len(dims) - 1
    rules = []
    for _ in range(draw(st.integers(1, 4))):
        suffix = draw(st.sampled_from(["", ".weight", ".bias"]))
        target = draw(st.sampled_from([f"l{i}" for i in range(n)] * 3 + ["*", "l9"])) + suffix
        if draw(st.integers(0, 5)) == 0:
            rules.append(tying.free(target))
            continue
        rel = draw(st.sampled_from(RELATIONS))
        like = draw(st.sampled_from([f"l{i}" for i in range(n)] + [None]))
        like = None if like is None else like + suffix
        if like is None and type(rel) is tying.Same:
            like = "l0" + suffix
        rules.append(tying.share(target, like=like, relation=rel))
    return dims, rules


@settings(
    max_examples=int(os.environ.get("TYING_HYPOTHESIS_EXAMPLES", "200")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cases())
def test_apply_is_correct_or_changes_nothing(case):
    dims, rules = case
    torch.manual_seed(0)
    m = _model(dims)
    before = state_bytes(m)
    x = torch.randn(2, dims[0])
    try:
        tying.Plan(rules).apply(m)
    except tying.TieError:
        assert state_bytes(m) == before
        assert tying.ties(m) == []
        return
    # a correct apply: every declared tie holds, each physical tensor is yielded once,
    # counts add up, and the model still runs on the same input
    tying.verify(m)
    params = list(m.parameters())
    assert len(params) == len({id(p) for p in params})
    c = tying.count(m)
    assert c.physical == sum(p.numel() for p in params)
    assert c.logical == sum(int(torch.Size(s).numel()) for s in _logical_shapes(m))
    h = x
    for layer in m.values():
        h = layer(h)
    assert h.shape == (2, dims[-1])
    # and applying the same plan again changes nothing
    assert not tying.Plan(rules).apply(m).changed


def _logical_shapes(m):
    for layer in m.values():
        yield layer.weight.shape
        yield layer.bias.shape
