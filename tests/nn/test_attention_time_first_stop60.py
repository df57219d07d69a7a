"""``Attention(batch_first=False)`` returns a contiguous ``(T, B, d_model)`` (stop 60).

It returned a transposed view of its batch-first result: ``out.view(-1, d_model)``, which
works on ``nn.MultiheadAttention``'s output, raised torch's "view size is not compatible".
"""

import pytest
import torch

from tests.nn.mha_pairs import E, mha_and_attention
from tying.nn import Attention


@pytest.mark.parametrize("causal", [False, True])
def test_time_first_output_is_contiguous_and_views_as_mha(causal):
    mha, att = mha_and_attention(batch_first=False, causal=causal)
    x = torch.randn(5, 3, E, dtype=torch.float64)  # (T, B, E)
    mask = torch.ones(5, 5, dtype=torch.bool).triu(1) if causal else None  # MHA: True = masked
    want = mha(x, x, x, attn_mask=mask, need_weights=False)[0]
    got = att(x)
    assert got.shape == (5, 3, E) and got.is_contiguous()
    torch.testing.assert_close(got.view(-1, E), want.view(-1, E))


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_time_first_cross_attention_equals_batch_first_transposed(kv_heads):
    torch.manual_seed(1)
    tf = Attention(8, n_heads=4, kv_heads=kv_heads, d_context=6, batch_first=False)
    bf = Attention(8, n_heads=4, kv_heads=kv_heads, d_context=6)
    bf.load_state_dict(tf.state_dict())
    x, mem = torch.randn(2, 5, 8), torch.randn(2, 7, 6)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    got = tf(x.transpose(0, 1), mem.transpose(0, 1), key_padding_mask=pad)
    assert got.is_contiguous()
    torch.testing.assert_close(got, bf(x, mem, key_padding_mask=pad).transpose(0, 1))
    got.sum().backward()  # gradients flow through the time-first layout
    assert tf.q_proj.weight.grad is not None


def test_batch_first_output_still_contiguous():
    att = Attention(8, n_heads=2)
    assert att(torch.randn(3, 5, 8)).is_contiguous()
