"""The group conv's large-bank tie by numba loops (stop 23): the same bits as the gather.

The reference is the general path kept in the layer (one ``index_select`` of the
stacked blocks, ``index_add_`` backward), reached through ``_banks()``. ``MIN_BANK`` is
lowered here so that small layers, fast to test, take the loops.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tying
from tying.nn import GroupConv2d, LiftingConv2d, _group_conv_tie

pytest.importorskip("numba")

F64 = torch.float64
_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


@pytest.fixture(autouse=True)
def _small_banks_take_the_loops(monkeypatch):
    monkeypatch.setattr(_group_conv_tie, "MIN_BANK", 1)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits: ``-0.0`` and ``+0.0`` differ, NaNs compare by payload."""
    return t.contiguous().view(_INT[t.dtype])


def _assert_same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(_bits(a), _bits(b))


def _layer(kind, group, c_in, c_out, k, dtype, bias=True):
    cls = LiftingConv2d if kind == "lift" else GroupConv2d
    return cls(c_in, c_out, k, group=group, dtype=dtype, bias=bias, padding=k // 2)


def _input(layer, batch, side, dtype):
    n = len(layer.elements)
    if isinstance(layer, LiftingConv2d):
        return torch.randn(batch, layer.in_channels, side, side, dtype=dtype)
    return torch.randn(batch, layer.in_channels, n, side, side, dtype=dtype)


def _reference(layer, x, g):
    """Output and parameter gradients by the general path (the gather and its index_add)."""
    bank, bias = layer._banks()
    flat = x.flatten(1, 2) if x.ndim == 5 else x
    y = F.conv2d(flat, bank, bias, padding=layer.padding)
    y = y.unflatten(1, (layer.out_channels, len(layer.elements)))
    return y.detach(), torch.autograd.grad(y, list(layer.parameters()), g)


def _step(layer, x, g):
    y = layer(x)
    return y.detach(), torch.autograd.grad(y, list(layer.parameters()), g)


def _count_loop_calls(monkeypatch) -> list:
    calls = []
    real = _group_conv_tie.tie_bank
    monkeypatch.setattr(_group_conv_tie, "tie_bank", lambda t, p: calls.append(1) or real(t, p))
    return calls


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["lift", "group"]),
    group=st.sampled_from(["C4", "D4"]),
    c_in=st.integers(1, 5),
    c_out=st.integers(1, 5),
    k=st.sampled_from([1, 2, 3, 5]),
    dtype=st.sampled_from([torch.float32, F64]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_loops_equal_the_gather_bit_for_bit(kind, group, c_in, c_out, k, dtype, bias, seed):
    torch.manual_seed(seed)
    layer = _layer(kind, group, c_in, c_out, k, dtype, bias)
    assert layer._tie_tables() is not None  # else this checks the gather against itself
    x = _input(layer, 2, 6, dtype)
    with torch.no_grad():
        g = torch.randn(layer(x).shape, dtype=dtype)
    g[0] = -0.0  # an all -0.0 gradient slice: index_add_ into zeros gives +0.0
    want_y, want = _reference(layer, x, g)
    y, got = _step(layer, x, g)
    _assert_same_bits(y, want_y)
    for a, b in zip(got, want, strict=True):
        _assert_same_bits(a, b)


def test_the_loops_serve_a_large_bank_and_an_optimizer_step_keeps_the_tie(monkeypatch):
    calls = _count_loop_calls(monkeypatch)
    torch.manual_seed(0)
    layer = GroupConv2d(6, 5, 3, group="D4")
    x = _input(layer, 2, 7, torch.float32)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    assert len(calls) == 2
    tying.verify(layer)
    torch.testing.assert_close(layer.filter_bank(), layer._slot_bank(), rtol=0, atol=0)


def test_double_backward_through_the_loops_equals_the_gather():
    torch.manual_seed(0)
    layer = GroupConv2d(3, 4, 3, group="C4", dtype=F64)
    x = _input(layer, 2, 5, F64)
    params = list(layer.parameters())

    def penalty(y):
        grads = torch.autograd.grad(y.square().sum(), params, create_graph=True)
        return sum(gr.square().sum() for gr in grads)

    got = torch.autograd.grad(penalty(layer(x)), params)
    bank, bias = layer._banks()
    y = F.conv2d(x.flatten(1, 2), bank, bias, padding=1)
    want = torch.autograd.grad(penalty(y), params)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# torch's forward AD loads its jit decompositions on first use, which warns in torch 2.13
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_forward_mode_ad_through_the_loops_equals_the_gather():
    import torch.autograd.forward_ad as fwad

    torch.manual_seed(0)
    layer = GroupConv2d(3, 4, 3, group="D4", dtype=F64)
    x = _input(layer, 1, 5, F64)
    names = [n for n, _ in layer.named_parameters()]
    tangents = {n: torch.randn_like(p) for n, p in layer.named_parameters()}
    with fwad.dual_level():
        duals = {n: fwad.make_dual(p.detach(), tangents[n]) for n, p in layer.named_parameters()}
        y = torch.func.functional_call(layer, duals, (x,))
        got = fwad.unpack_dual(y).tangent
    assert names
    # the tangent of a linear map is the map of the tangent: the layer with the tangents
    # as parameters and no bias contribution beyond the bias tangent
    want = torch.func.functional_call(layer, tangents, (x,))
    zero = torch.func.functional_call(
        layer, {n: torch.zeros_like(t) for n, t in tangents.items()}, (x,)
    )
    torch.testing.assert_close(got, want - zero, rtol=1e-12, atol=1e-12)


def test_torch_func_grad_takes_the_gather_and_matches():
    torch.manual_seed(0)
    layer = GroupConv2d(3, 4, 3, group="C4")
    x = _input(layer, 2, 5, torch.float32)
    params = {n: p.detach() for n, p in layer.named_parameters()}

    def loss(p):
        return torch.func.functional_call(layer, p, (x,)).square().sum()

    got = torch.func.grad(loss)(params)
    want = torch.autograd.grad(loss(dict(layer.named_parameters())), list(layer.parameters()))
    for n, w in zip(params, want, strict=True):  # the eager step took the loops
        torch.testing.assert_close(got[n], w, rtol=0, atol=0)


@pytest.mark.parametrize("why", ["no numba", "bfloat16", "channels_last blocks"])
def test_layers_the_loops_cannot_serve_take_the_gather(why, monkeypatch):
    calls = _count_loop_calls(monkeypatch)
    dtype = torch.bfloat16 if why == "bfloat16" else torch.float32
    if why == "no numba":
        monkeypatch.setattr(_group_conv_tie, "kernels", lambda: None)
    torch.manual_seed(0)
    layer = GroupConv2d(3, 4, 3, group="C4", dtype=dtype)
    if why == "channels_last blocks":
        layer = layer.to(memory_format=torch.channels_last)
    x = _input(layer, 2, 5, dtype)
    g = torch.randn(2, 4, 4, 5, 5, dtype=dtype)
    want_y, want = _reference(layer, x, g)
    y, got = _step(layer, x, g)
    assert calls == []
    assert torch.equal(y, want_y)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_tables_refuse_an_index_without_the_per_channel_pattern():
    layer = GroupConv2d(3, 4, 3, group="C4")
    index = layer._gather_index().clone()
    assert _group_conv_tie.tables_for(index, 4, 3, 3, 4) is not None
    swapped = index.clone()
    swapped.view(-1)[[0, -1]] = swapped.view(-1)[[-1, 0]]  # two channels read each other
    assert _group_conv_tie.tables_for(swapped, 4, 3, 3, 4) is None
    twice = index.clone()
    twice.view(4, -1)[:, 1] = twice.view(4, -1)[:, 0]  # an entry read 5 times, one 3 times
    assert _group_conv_tie.tables_for(twice, 4, 3, 3, 4) is None


def test_a_bank_below_the_size_threshold_keeps_the_gather(monkeypatch):
    monkeypatch.setattr(_group_conv_tie, "MIN_BANK", 10**9)
    assert GroupConv2d(3, 4, 3, group="C4")._tie_tables() is None


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_the_bank_gradient_keeps_the_bits_of_index_add_with_signed_zeros_inf_and_nan(group, dtype):
    torch.manual_seed(0)
    layer = GroupConv2d(3, 4, 3, group=group, dtype=dtype)
    physical = [p.detach().requires_grad_() for p in layer._physical_params()]
    index = layer._bank_flat_index
    shape = layer._bank_shape
    n = len(layer.elements)
    g = torch.randn(shape, dtype=dtype)
    g[:n] = -0.0  # every use of output channel 0's entries: 0.0 + -0.0 + ... is +0.0
    g[n, 0, 0, 0] = float("inf")  # output channel 1
    g[n + 1, 1, 1, 1] = float("nan")
    bank = _group_conv_tie.tie_bank(layer._tie_tables(), physical)
    got = torch.autograd.grad(bank, physical, g)
    want_bank = torch.index_select(torch.stack(physical).reshape(-1), 0, index).view(shape)
    want = torch.autograd.grad(want_bank, physical, g)
    _assert_same_bits(bank.detach(), want_bank.detach())
    for a, b in zip(got, want, strict=True):
        _assert_same_bits(a, b)
    assert all((_bits(a[0]) == 0).all() for a in got)  # +0.0, not -0.0


def test_numba_with_its_jit_disabled_leaves_the_bank_to_the_gather(monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    _group_conv_tie.kernels.cache_clear()
    try:
        assert _group_conv_tie.kernels() is None  # pure-Python loops: seconds a call
    finally:
        monkeypatch.undo()
        _group_conv_tie.kernels.cache_clear()
    assert _group_conv_tie.kernels() is not None
