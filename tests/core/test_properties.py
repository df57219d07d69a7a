"""Property test: random models and random rule lists give either a correct apply
or a TieError with the model bit-identical to before."""

from __future__ import annotations

import copy
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


# -- any relation with any arguments: valid everywhere, or refused up front -----------

_ARG = st.one_of(
    st.integers(-4, 40),
    st.booleans(),
    st.sampled_from([0.0, 0.5, -2.0, float("nan"), float("inf"), 1e300]),
    st.none(),
    st.sampled_from(["", "1", "dims"]),
    st.lists(st.one_of(st.integers(-4, 4), st.booleans()), max_size=3),
    st.lists(st.integers(-4, 4), max_size=3).map(tuple),
)


def _two_modules(src_shape, dst_shape):
    return nn.ModuleDict(
        {
            "s": nn.ParameterDict({"w": nn.Parameter(torch.randn(src_shape))}),
            "t": nn.ParameterDict({"w": nn.Parameter(torch.randn(dst_shape))}),
        }
    )


@settings(
    max_examples=int(os.environ.get("TYING_HYPOTHESIS_EXAMPLES", "200")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_any_relation_is_valid_everywhere_or_refused_up_front(data):
    import dataclasses
    import tempfile

    from tying.core.relations import RELATIONS

    cls = data.draw(st.sampled_from(sorted(RELATIONS.values(), key=lambda c: c.kind)))
    fields = [f.name for f in dataclasses.fields(cls)]
    kwargs = {name: data.draw(_ARG) for name in fields if data.draw(st.booleans())}
    try:
        rel = cls(**kwargs)
    except tying.TieError:
        return  # refused at construction, with the library's error type
    shape = tuple(data.draw(st.lists(st.integers(1, 4), max_size=3)))
    own = type(rel) is not tying.Same and data.draw(st.booleans())
    try:
        src_shape = rel.source_shape(shape)
    except tying.TieError:
        src_shape = shape
    torch.manual_seed(0)
    m = _two_modules(src_shape, shape)
    before = state_bytes(m)
    rule = tying.share("t.w", relation=rel) if own else tying.share("t.w", like="s.w", relation=rel)
    try:
        tying.Plan([rule]).apply(m)
    except tying.TieError:
        assert state_bytes(m) == before and tying.ties(m) == []
        return  # refused at apply, model untouched
    # valid: the slot has its shape and the relation's value, verify/step/save/retie/untie work
    value = m["t"].w
    assert tuple(value.shape) == shape and torch.isfinite(value).all()
    if not own:
        assert torch.equal(value, rel(m["s"].w, shape=shape, **_extras(m["t"])))
    assert tying.verify(m) == 1
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    (m["t"].w.square().sum() + m["s"].w.sum()).backward()
    opt.step()
    tying.verify(m)
    with tempfile.TemporaryDirectory() as tmp:
        tying.save(m, f"{tmp}/m.safetensors")
        fresh = _two_modules(src_shape, shape)
        tying.load(fresh, f"{tmp}/m.safetensors")
    assert torch.equal(fresh["t"].w, m["t"].w) and tying.ties(fresh) == tying.ties(m)
    m["t"] = nn.ParameterDict({"w": nn.Parameter(torch.randn(shape))})  # a tool rebuilt it
    tying.retie(m)
    assert tying.verify(m) == 1
    value = m["t"].w.detach().clone()
    tying.untie(m)
    assert tying.ties(m) == [] and torch.equal(m["t"].w, value)


def _extras(mod):
    slot = tying.core.slots.slots_of(mod)["w"]
    return {r: getattr(mod, n) for r, n in slot.storage.items() if r != "source"}


# -- any single-byte change of a saved file: refused, or the very same model ----------


def _file_model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.ModuleDict({"enc": nn.Linear(3, 3), "dec": nn.Linear(3, 3), "head": nn.Linear(3, 3)})
    m["head"].bias = m["dec"].bias  # a hand-made tie
    tying.Plan(
        [
            tying.share("dec.weight", like="enc.weight", relation=tying.Transposed()),
            tying.share("head.weight", like="enc.weight", relation=tying.Rotated(1, (0, 1))),
            tying.share("enc.bias", relation=tying.Mirrored()),
        ]
    ).apply(m)
    return m


def _saved_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return tying.save(_file_model(), f"{tmp}/m.safetensors").read_bytes()


_FILE = _saved_bytes()
_HEADER_END = 8 + int.from_bytes(_FILE[:8], "little")
# where the tie metadata sits: single-digit edits there (dims [0, 1] -> [0, 0], k 1 -> 3)
# give another valid-looking model, the silent kind of corruption
_TIES = _FILE.index(b'"tying.ties"')
_TIES_END = _FILE.index(b'"tying.', _TIES + 1) if b'"tying.' in _FILE[_TIES + 1 :] else _HEADER_END
_DIGITS = [i for i in range(_TIES, _TIES_END) if chr(_FILE[i]).isdigit()]


def _build_fresh() -> nn.Module:
    torch.manual_seed(1)
    return nn.ModuleDict({"enc": nn.Linear(3, 3), "dec": nn.Linear(3, 3), "head": nn.Linear(3, 3)})


_FRESH = _build_fresh()


def _fresh() -> nn.Module:
    # a copy of one built model: the same values, without 3 initialisations per example
    return copy.deepcopy(_FRESH)


@settings(
    max_examples=int(os.environ.get("TYING_HYPOTHESIS_EXAMPLES", "200")) * 2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.sampled_from(_DIGITS),
        st.integers(_TIES, _TIES_END - 1),
        st.integers(0, _HEADER_END - 1),
        st.integers(0, len(_FILE) - 1),
    ),
    st.one_of(st.sampled_from(b'0123456789-[], "SameTrsposdRt'), st.integers(0, 255)),
)
def test_any_single_byte_change_is_refused_or_loads_the_same_model(index, byte):
    import tempfile

    data = bytearray(_FILE)
    if data[index] == byte:
        return
    data[index] = byte
    fresh = _fresh()
    before = state_bytes(fresh)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/m.safetensors"
        with open(path, "wb") as fh:
            fh.write(bytes(data))
        try:
            tying.load(fresh, path)
        except tying.TieError:
            assert state_bytes(fresh) == before and tying.ties(fresh) == []
            return
    original = _file_model()  # built only when the file loaded (stop 53)
    assert state_bytes(fresh) == state_bytes(original)
    assert tying.ties(fresh) == tying.ties(original)
    assert fresh["head"].bias is fresh["dec"].bias
    x = torch.randn(4, 3)
    assert torch.equal(fresh["dec"](fresh["enc"](x)), original["dec"](original["enc"](x)))
