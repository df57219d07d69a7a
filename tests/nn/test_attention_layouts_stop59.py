"""Stop 59: what a user of ``nn.MultiheadAttention`` writes, number for number.

``Attention`` was batch-first only and had no ``key_padding_mask``: a ``(T, B, E)`` input
(``nn.MultiheadAttention``'s default ``batch_first=False``) was read as ``(B, T, E)``, every
position attending across the batch, and a ``(B, S)`` key-padding mask passed as
``attn_mask`` with ``B == T`` was read as a ``(T, S)`` attention mask, with no error.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.nn.mha_pairs import E, H
from tests.nn.mha_pairs import mha_and_attention as _pair
from tying.nn import Attention, Stack, TransformerBlock


def _inputs(batch_first: bool, b: int, t: int, s: int):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, t, E, generator=g, dtype=torch.float64)
    c = torch.randn(b, s, E, generator=g, dtype=torch.float64)
    if not batch_first:
        x, c = x.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()
    return x, c


@pytest.mark.parametrize("batch_first", [True, False])
def test_layouts_and_masks_match_multihead_attention(batch_first):
    mha, att = _pair(batch_first)
    b, t, s = 3, 3, 5  # B == T: the layout a transposed input hid
    x, c = _inputs(batch_first, b, t, s)
    pad = torch.zeros(b, s, dtype=torch.bool)
    pad[0, 3:], pad[2, 1:] = True, True  # True = padding, as torch's
    allowed = torch.rand(t, s, generator=torch.Generator().manual_seed(2)) > 0.3
    allowed[:, 0] = True
    additive = torch.zeros(b, s, dtype=torch.float64).masked_fill(pad, float("-inf"))
    cases = [
        ({}, {}),
        ({"key_padding_mask": pad}, {"key_padding_mask": pad}),
        ({"key_padding_mask": additive}, {"key_padding_mask": additive}),
        # torch's bool attn_mask is True = masked, ours (SDPA's) True = may attend
        (
            {"key_padding_mask": pad, "attn_mask": ~allowed},
            {"key_padding_mask": pad, "attn_mask": allowed},
        ),
    ]
    for theirs, ours in cases:
        want = mha(x, c, c, need_weights=False, **theirs)[0]
        got = att(x, c, **ours)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # causal self-attention with padding: torch's square subsequent mask plus the padding
    # (a float padding mask for torch, which warns on a bool one next to a float attn_mask)
    causal = _pair(batch_first, causal=True)[1]
    causal.load_state_dict(att.state_dict())
    square = nn.Transformer.generate_square_subsequent_mask(t, dtype=torch.float64)
    kp = pad[:, :t].clone()
    kp[1, 2] = True
    kp_float = torch.zeros(b, t, dtype=torch.float64).masked_fill(kp, float("-inf"))
    want = mha(x, x, x, key_padding_mask=kp_float, attn_mask=square, need_weights=False)[0]
    torch.testing.assert_close(causal(x, key_padding_mask=kp), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        att(x, key_padding_mask=kp, attn_mask=square), want, rtol=0, atol=1e-12
    )


def test_transposed_input_is_named_by_the_padding_mask():
    att = Attention(E, H)  # batch first, as before stop 59
    x = torch.randn(4, 3, E)  # (T, B, E) from a MultiheadAttention port
    pad = torch.zeros(3, 4, dtype=torch.bool)  # (B, S)
    with pytest.raises(
        ValueError, match=r"key_padding_mask must be \(B, S\) = \(4, 3\).*batch_first=False"
    ):
        att(x, key_padding_mask=pad)
    # the advice works: the same call on a batch_first=False layer equals the batch-first
    # layer on the batch-first input
    port = Attention(E, H, batch_first=False)
    port.load_state_dict(att.state_dict())
    out = port(x, key_padding_mask=pad)
    torch.testing.assert_close(out, att(x.transpose(0, 1), key_padding_mask=pad).transpose(0, 1))


def test_padding_mask_keeps_causal_rule_of_a_cross_attention():
    att = Attention(E, H, causal=True)
    x, c = torch.randn(2, 4, E), torch.randn(2, 4, E)
    pad = torch.tensor([[False, False, False, True], [False] * 4])
    tril = torch.ones(4, 4, dtype=torch.bool).tril()
    want = att(x, c, attn_mask=tril & ~pad[:, None, None, :])
    torch.testing.assert_close(att(x, c, key_padding_mask=pad), want)
    assert att.unattended(x, c, key_padding_mask=pad).sum() == 0


def test_padding_mask_refusals_name_the_fix():
    att = Attention(E, H)
    x = torch.randn(2, 3, E)
    with pytest.raises(TypeError, match=r"key_padding_mask=attention_mask == 0"):
        att(x, key_padding_mask=torch.ones(2, 3, dtype=torch.long))
    bad = torch.zeros(2, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"additive key_padding_mask .* nan at index \(1, 2\)"):
        att(x, key_padding_mask=bad)
    with pytest.raises(TypeError, match=r"key_padding_mask.to\(torch.float32\)"):
        att(x, key_padding_mask=torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(
        ValueError, match=r"batch_first=False\): expected x of shape \(seq, batch, 8\)"
    ):
        Attention(E, H, batch_first=False)(torch.randn(3, E))
    with pytest.raises(TypeError, match="batch_first must be True or False"):
        Attention(E, H, batch_first="no")


def test_unattended_reads_the_padding_mask_in_either_layout():
    pad = torch.tensor([[True, True, True], [False, True, False]])
    for batch_first in (True, False):
        att = Attention(E, H, batch_first=batch_first)
        x = torch.randn(2, 3, E) if batch_first else torch.randn(3, 2, E)
        dead = att.unattended(x, key_padding_mask=pad).all(1)  # (B, T)
        assert dead.tolist() == [[True] * 3, [False] * 3]
        out = att(x, key_padding_mask=pad)
        row = out[0] if batch_first else out[:, 0]
        torch.testing.assert_close(row, att.out_proj.bias.expand(3, E))


def test_layers_built_on_attention_keep_their_layout():
    torch.manual_seed(0)
    stack = Stack(TransformerBlock(E, H, causal=True) for _ in range(2))
    x = torch.randn(2, 5, E)
    assert stack(x).shape == (2, 5, E)
    assert all(b.self_attn.batch_first for b in stack.layers)
