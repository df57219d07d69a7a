"""A mask passed as the 3rd positional of Attention is named as attn_mask= (stop 61): it
was called "a separate value tensor", advice that fits no mask."""

import pytest
import torch

from tests.nn.mha_pairs import E, mha_and_attention


def test_mask_after_none_context_names_attn_mask_and_the_advice_works():
    mha, att = mha_and_attention(batch_first=True)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()
    with pytest.raises(TypeError, match=r"masks by keyword only.* pass attn\(x, attn_mask=mask\)"):
        att(x, None, allowed)
    want = mha(x, x, x, attn_mask=~allowed, need_weights=False)[0]  # MHA: True = masked
    torch.testing.assert_close(att(x, attn_mask=allowed), want)


def test_bool_mask_after_context_names_attn_mask():
    mha, att = mha_and_attention(batch_first=True)
    x, mem = torch.randn(2, 5, E, dtype=torch.float64), torch.randn(2, 4, E, dtype=torch.float64)
    allowed = torch.rand(5, 4) > 0.3
    allowed[:, 0] = True
    with pytest.raises(TypeError, match=r"pass attn\(x, context, attn_mask=mask\) \(True = may"):
        att(x, mem, allowed)
    want = mha(x, mem, mem, attn_mask=~allowed, need_weights=False)[0]
    torch.testing.assert_close(att(x, mem, attn_mask=allowed), want)


def test_value_tensor_keeps_its_message():
    _, att = mha_and_attention(batch_first=True)
    x, mem = torch.randn(2, 5, E, dtype=torch.float64), torch.randn(2, 4, E, dtype=torch.float64)
    with pytest.raises(TypeError, match="separate key and value tensors are not supported"):
        att(x, mem, torch.randn(2, 4, E, dtype=torch.float64))


def test_trailing_none_named_and_dropping_it_works():
    mha, att = mha_and_attention(batch_first=True)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"a 3rd, None\); drop the trailing None\(s\): attn\(x\)"):
        att(x, None, None)
    torch.testing.assert_close(att(x), mha(x, x, x, need_weights=False)[0])
