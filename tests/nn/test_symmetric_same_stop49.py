"""Stop 49: ``SymmetricConv1d(padding="same")`` with an even filter length pads as
``nn.Conv1d(padding="same")`` does (the left ``d·(k-1)//2``, the rest on the right), in
every padding mode, and says so (docs/nn.md): the palindrome is then centred half a
sample to the right of each output, so mirroring the input mirrors the output one
sample off. Checked against ``nn.Conv1d`` on the expanded filter and a hand-padded
``F.conv1d`` (the brute-force reference), never against the layer itself.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tying.nn import SymmetricConv1d

MODES = ("zeros", "reflect", "replicate", "circular")
# torch's own performance note (once per process) for an even filter and odd dilation in
# zeros mode: nn.Conv1d gives it too; it is not a difference of ours
TORCH_NOTE = "Using padding='same' with even kernel lengths"


def _pair(k, mode, dilation, seed=0):
    torch.manual_seed(seed)
    ours = SymmetricConv1d(2, 3, k, padding="same", padding_mode=mode, dilation=dilation)
    ours.double()
    plain = nn.Conv1d(2, 3, k, padding="same", padding_mode=mode, dilation=dilation).double()
    with torch.no_grad():
        plain.weight.copy_(ours.weight)
        plain.bias.copy_(ours.bias)
    return ours, plain


def _hand_padded(ours, x, mode):
    """The brute-force 'same': pad d·(k-1)//2 on the left, the rest on the right."""
    k, d = ours.kernel_size[0], ours.dilation[0]
    total = d * (k - 1)
    left = total // 2
    padded = F.pad(x, (left, total - left), mode="constant" if mode == "zeros" else mode)
    return F.conv1d(padded, ours.weight, ours.bias, dilation=d)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k, dilation", [(2, 1), (4, 1), (4, 2), (6, 3), (2, 2)])
def test_even_filter_same_padding_equals_nn_conv1d_and_hand_padding(k, mode, dilation):
    ours, plain = _pair(k, mode, dilation)
    x = torch.randn(2, 2, 11, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCH_NOTE)
        got, want = ours(x), plain(x)
    assert got.shape == x.shape[:1] + (3, 11)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(got, _hand_padded(ours, x, mode), rtol=0, atol=1e-12)


def test_even_filter_same_padding_mirrors_one_sample_off():
    """What the docs say: with an even filter the mirrored input's output, mirrored back,
    is the output one sample to the left (odd filters: the output itself)."""
    x = torch.randn(1, 2, 9, dtype=torch.float64)
    even, _ = _pair(4, "zeros", 1)
    odd, _ = _pair(5, "zeros", 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCH_NOTE)
        back_even = even(x.flip(-1)).flip(-1)
        y_even = even(x)
    torch.testing.assert_close(back_even[..., 1:], y_even[..., :-1], rtol=0, atol=1e-12)
    assert not torch.allclose(back_even, y_even)  # not the output itself
    torch.testing.assert_close(odd(x.flip(-1)).flip(-1), odd(x), rtol=0, atol=1e-12)


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    k=st.integers(1, 6),
    dilation=st.integers(1, 3),
    mode=st.sampled_from(MODES),
    length=st.integers(16, 20),  # reflect needs each side shorter than the input
    channels_last_like=st.booleans(),
)
def test_property_same_padding_equals_nn_conv1d_for_every_filter_length(
    k, dilation, mode, length, channels_last_like
):
    """The kind of defect: a 'same' output that pads another way than torch's with no
    error. Every filter length, dilation and mode against nn.Conv1d and hand padding."""
    ours, plain = _pair(k, mode, dilation, seed=k * 7 + dilation)
    x = torch.randn(3, 2, length, dtype=torch.float64)
    if channels_last_like:  # a non-contiguous input reads the same values
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCH_NOTE)
        got = ours(x)
        want = plain(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(got, _hand_padded(ours, x, mode), rtol=0, atol=1e-12)
    assert torch.equal(ours.weight, ours.weight.flip(-1))
