"""Stop 39: ``tying.count`` of a quantized model counts its packed weights.

``torch.ao``'s quantized modules keep their int8 weight and bias packed, not as
parameters: ``tying.count`` reported 0 parameters and no tie group for a model whose one
quantized module is seated twice, and, for ``Sequential(lin, act, lin)`` (which
``quantize_dynamic`` splits: the first seat quantized, the second left float), the same
20 parameters as the float model, hiding the second copy.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying


def _dyn(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear})


def test_a_quantized_module_seated_twice_counts_once_with_a_group():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(4, 4))
    m = nn.Sequential(inner, nn.ReLU(), inner)
    q = _dyn(m)
    assert q[0] is q[2]  # one quantized module, two seats: the tie holds
    c = tying.count(q)
    assert (c.logical, c.physical) == (tying.count(m).logical, tying.count(m).physical) == (40, 20)
    assert c.bytes_physical == 16 * 1 + 4 * 4  # int8 weight, float32 bias
    uses = {g.physical_path: g.slots for g in c.groups}
    assert uses == {
        "0.0._packed_params.weight": ["0.0._packed_params.weight", "2.0._packed_params.weight"],
        "0.0._packed_params.bias": ["0.0._packed_params.bias", "2.0._packed_params.bias"],
    }


def test_the_float_copy_torch_leaves_at_a_second_seat_is_counted_apart():
    lin = nn.Linear(4, 4)
    q = _dyn(nn.Sequential(lin, nn.ReLU(), lin))
    assert type(q[2]) is nn.Linear and q[0] is not q[2]  # torch quantized one seat only
    c = tying.count(q)
    assert (c.logical, c.physical, c.groups) == (40, 40, [])  # two copies, no tie


def test_static_conv_and_embedding_packed_weights_count():
    from torch.ao.quantization import DeQuantStub, QuantStub, convert, get_default_qconfig, prepare

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.c, self.d = QuantStub(), nn.Conv2d(1, 2, 3), DeQuantStub()

        def forward(self, x):
            return self.d(self.c(self.q(x)))

    torch.manual_seed(0)
    net = Net().eval()
    floats = tying.count(net).physical  # 2*1*3*3 + 2
    net.qconfig = get_default_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare(net, inplace=True)
        net(torch.randn(1, 1, 5, 5))
        convert(net, inplace=True)
    assert sum(p.numel() for p in net.parameters()) == 0
    assert tying.count(net).physical == floats == 20
    emb = torch.ao.nn.quantized.Embedding(7, 3)
    assert tying.count(emb).physical == emb.weight().numel() == 21


@settings(derandomize=True, deadline=None, max_examples=15)
@given(
    seats=st.lists(st.integers(0, 2), min_size=1, max_size=5),
    nested=st.booleans(),
    bias=st.booleans(),
)
def test_count_of_a_quantized_model_matches_its_modules(seats, nested, bias):
    """Against a brute-force sum over the distinct modules, read through the quantized
    modules' public ``weight()`` / ``bias()``; logical matches the float model's."""
    torch.manual_seed(0)
    pool = [nn.Linear(3, 3, bias=bias) for _ in range(3)]
    mods = [nn.Sequential(pool[i]) if nested else pool[i] for i in range(3)]
    m = nn.Sequential(*(mods[i] for i in seats))
    logical = tying.count(m).logical
    q = _dyn(m)
    want = 0
    for mod in q.modules():  # distinct module objects
        if isinstance(mod, torch.ao.nn.quantized.dynamic.Linear):
            want += mod.weight().numel() + (0 if mod.bias() is None else mod.bias().numel())
        want += sum(p.numel() for p in mod.parameters(recurse=False))
    c = tying.count(q)
    assert c.physical == want
    assert c.logical == logical


def test_verify_keeps_a_recorded_seat_tie_that_quantization_packed():
    """A hand tie a plan saw (a module seated twice) whose one module ``quantize_dynamic``
    replaced: verify said "2.0.weight: no such parameter any more" and offered retie,
    though both seats are one quantized module."""
    inner = nn.Sequential(nn.Linear(4, 4))
    m = nn.Sequential(inner, nn.ReLU(), inner)
    tying.Plan([]).apply(m)  # records the hand ties 2.0.weight, 2.0.bias <- 0.0.*
    q = _dyn(m)
    assert q[0] is q[2]
    assert tying.verify(q) == 2
    lin = nn.Linear(4, 4)
    flat = nn.Sequential(lin, nn.ReLU(), lin)
    tying.Plan([]).apply(flat)
    split = _dyn(flat)  # torch quantized the first seat only: the tie is broken
    with pytest.raises(tying.TieError, match=r"2\.weight: is no longer the same nn\.Parameter"):
        tying.verify(split)
