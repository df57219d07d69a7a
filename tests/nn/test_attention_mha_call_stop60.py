"""``nn.MultiheadAttention``'s call on an :class:`Attention` names the call here (stop 60).

``attn(q, k, v)``, ``need_weights=``, ``is_causal=`` got Python's bare "takes from 2 to 3
positional arguments" / "unexpected keyword argument". Each test follows the advice.
"""

import pytest
import torch

from tests.nn.mha_pairs import E, mha_and_attention
from tying.nn import Attention


def test_query_key_value_self_attention_names_attn_x_and_it_matches_mha():
    mha, att = mha_and_attention(batch_first=True)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"3 positional arguments .*pass attn\(x\) \(self-"):
        att(x, x, x)
    torch.testing.assert_close(att(x), mha(x, x, x, need_weights=False)[0])


def test_key_is_value_names_attn_query_key_and_it_matches_mha():
    mha, att = mha_and_attention(batch_first=True)
    x, mem = torch.randn(2, 5, E, dtype=torch.float64), torch.randn(2, 7, E, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"pass attn\(query, key\) \(the key tensor also"):
        att(x, mem, mem)
    torch.testing.assert_close(att(x, mem), mha(x, mem, mem, need_weights=False)[0])


def test_separate_values_refused_as_not_supported():
    att = Attention(8, n_heads=2)
    x = torch.randn(2, 3, 8)
    with pytest.raises(TypeError, match="separate key and value tensors are not supported"):
        att(x, torch.randn(2, 4, 8), torch.randn(2, 4, 8))


def test_fourth_positional_named_as_key_padding_mask_and_the_advice_works():
    mha, att = mha_and_attention(batch_first=True)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[0, 3:] = True
    with pytest.raises(TypeError, match="4th positional is key_padding_mask: pass key_padding_m"):
        att(x, x, x, pad)
    want = mha(x, x, x, pad, need_weights=False)[0]
    torch.testing.assert_close(att(x, key_padding_mask=pad), want)


@pytest.mark.parametrize("name", ["need_weights", "average_attn_weights"])
def test_need_weights_refused_naming_the_tensor_result(name):
    att = Attention(8, n_heads=2)
    x = torch.randn(2, 3, 8)  # (output, weights) = att(x) would split the batch of 2
    with pytest.raises(TypeError, match=f"no keyword '{name}' here; .*do not unpack it"):
        att(x, **{name: False})


def test_is_causal_advice_matches_mha_is_causal():
    mha, causal = mha_and_attention(batch_first=True, causal=True)
    _, plain = mha_and_attention(batch_first=True)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"no keyword 'is_causal' here; .*causal=True\), or pass"):
        plain(x, is_causal=True)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)  # MHA: True = masked
    want = mha(x, x, x, attn_mask=future, is_causal=True, need_weights=False)[0]
    torch.testing.assert_close(causal(x), want)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()  # the advice's mask: True = may attend
    torch.testing.assert_close(plain(x, attn_mask=allowed), want)


def test_unknown_keyword_keeps_pythons_message():
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Attention(8, n_heads=2)(torch.randn(1, 2, 8), colour=1)
