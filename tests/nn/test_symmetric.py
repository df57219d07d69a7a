"""SymmetricConv1d: palindromic filters stored as half, deaf to antisymmetric windows."""

from __future__ import annotations

import math

import pytest
import torch

import tying
from tying.nn import SymmetricConv1d


@pytest.mark.parametrize("k", [4, 5])
def test_filters_are_palindromes_and_stay_so_after_a_step(k):
    torch.manual_seed(0)
    conv = SymmetricConv1d(2, 3, k, padding=k // 2)
    assert tuple(conv.weight_physical.shape) == (3, 2, math.ceil(k / 2))
    x = torch.randn(4, 2, 20)
    for _ in range(2):
        assert torch.equal(conv.weight, conv.weight.flip(-1))
        opt = torch.optim.SGD(conv.parameters(), lr=0.5)
        opt.zero_grad()
        conv(x).sin().sum().backward()
        opt.step()
    assert tying.verify(conv) == 1


def test_response_to_antisymmetric_windows_is_zero():
    torch.manual_seed(1)
    conv = SymmetricConv1d(1, 4, 7, bias=False, dtype=torch.float64)
    half = torch.randn(16, 1, 3, dtype=torch.float64)
    anti = torch.cat([-half.flip(-1), torch.zeros(16, 1, 1, dtype=torch.float64), half], -1)
    assert conv(anti).abs().max().item() < 1e-14
    sym = anti.abs()
    assert conv(sym).abs().max().item() > 1e-3  # a symmetric window passes
    untied = SymmetricConv1d(1, 4, 7, bias=False, tied=False, dtype=torch.float64)
    assert untied(anti).abs().max().item() > 1e-2


def test_counts_fan_in_and_init_scale():
    conv = SymmetricConv1d(8, 16, 9)
    c = tying.count(conv)
    assert (c.logical, c.physical) == (16 * 8 * 9 + 16, 16 * 8 * 5 + 16)
    assert tying.fan_in(conv) == 8 * 9  # logical taps one output reads
    bound = 1 / math.sqrt(8 * 9)
    w = conv.weight_physical.detach()
    assert w.abs().max() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    plain = tying.count(SymmetricConv1d(8, 16, 9, tied=False))
    assert plain.logical == plain.physical == c.logical


def test_matches_conv1d_with_the_same_filter_and_compiles():
    conv = SymmetricConv1d(2, 2, 5, padding=2)
    ref = torch.nn.Conv1d(2, 2, 5, padding=2)
    with torch.no_grad():
        ref.weight.copy_(conv.weight)
        ref.bias.copy_(conv.bias)
    x = torch.randn(3, 2, 11)
    torch.testing.assert_close(conv(x), ref(x))
    compiled = torch.compile(conv, backend="aot_eager")
    torch.testing.assert_close(compiled(x), ref(x))


def test_shape_errors_and_tied_slot_guard():
    conv = SymmetricConv1d(3, 2, 3)
    with pytest.raises(
        ValueError, match=r"expected \(B, 3, L\) or \(3, L\), got shape \(2, 4, 10\)"
    ):
        conv(torch.randn(2, 4, 10))
    with pytest.raises(tying.TieError, match="weight is a tied slot"):
        conv.weight = torch.nn.Parameter(torch.zeros(2, 3, 3))


@pytest.mark.parametrize("k", [0, -1, (0,), 2.0])
def test_a_non_positive_or_non_int_kernel_is_refused(k):
    # stop 26: kernel_size=0 passed nn.Conv1d and died in reset_parameters (ZeroDivisionError)
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        SymmetricConv1d(2, 3, k)


@pytest.mark.parametrize("saved_k, k", [(5, 6), (6, 5)])
def test_a_state_dict_of_another_filter_length_is_refused(saved_k, k):
    # stop 32: lengths 5 and 6 both store 3 taps, so [a, b, c, b, a] loaded as
    # [a, b, c, c, b, a] with no error
    import io

    buf = io.BytesIO()
    torch.save(SymmetricConv1d(2, 3, saved_k).state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    conv = SymmetricConv1d(2, 3, k)
    before = conv.weight_physical.detach().clone()
    with pytest.raises(
        ValueError, match=rf"length {saved_k}.*build the layer with kernel_size={saved_k}"
    ):
        conv.load_state_dict(state)
    assert torch.equal(conv.weight_physical, before)
    same = SymmetricConv1d(2, 3, saved_k)
    same.load_state_dict(state)
    assert torch.equal(same.weight_physical, state["weight_physical"])
