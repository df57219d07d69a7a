"""Review of stop 60 (nn): advice that holds when followed, sibling settings alike.

``is_causal=False`` (``nn.MultiheadAttention``'s default) was advised to build the layer
with ``causal=True`` (followed: outputs moved 1.10); ``is_causal=True`` kept its
``nn.MultiheadAttention`` bool mask (True = masked) beside ``causal=True`` (moved 1.69).
``HashedEmbedding(signed=np.False_)`` was refused where ``HashedLinear`` takes it.
``LocallyConnected2d(kernel_size=0, padding="same")`` advised negative pads.
"""

import numpy as np
import pytest
import torch

from tests.nn.mha_pairs import E, mha_and_attention
from tying.nn import HashedEmbedding, HashedEmbeddingBag, LocallyConnected2d


def test_is_causal_false_advice_is_to_drop_it_and_that_matches_mha():
    mha, att = mha_and_attention(batch_first=True)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    with pytest.raises(
        TypeError, match=r"is_causal=False is .*default; this layer is not causal: drop"
    ):
        att(x, is_causal=False)
    want = mha(x, x, x, is_causal=False, need_weights=False)[0]
    torch.testing.assert_close(att(x), want)


@pytest.mark.parametrize("value", [np.False_, 0.0])
def test_is_causal_false_spelt_otherwise_is_told_to_drop_it(value):
    # np.False_ was advised "build it with causal=True" (final read of stop 60)
    _, att = mha_and_attention(batch_first=True)
    with pytest.raises(TypeError, match=r"is_causal=False is .*default; .*: drop is_causal="):
        att(torch.randn(2, 5, E, dtype=torch.float64), is_causal=value)


def test_is_causal_true_with_mhas_bool_mask_advice_works():
    mha, causal = mha_and_attention(batch_first=True, causal=True)
    _, plain = mha_and_attention(batch_first=True)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    m = torch.ones(5, 5, dtype=torch.bool).triu(1)  # MHA: True = masked
    want = mha(x, x, x, attn_mask=m, is_causal=True, need_weights=False)[0]
    with pytest.raises(TypeError, match=r"drop that attn_mask, or pass ~attn_mask"):
        plain(x, attn_mask=m, is_causal=True)
    with pytest.raises(TypeError, match=r"already causal \(causal=True\): drop is_causal="):
        causal(x, attn_mask=m, is_causal=True)
    torch.testing.assert_close(causal(x), want)  # the mask dropped
    torch.testing.assert_close(causal(x, attn_mask=~m), want)  # the mask negated
    torch.testing.assert_close(plain(x, attn_mask=~m), want)


@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
def test_numpy_bool_settings_taken_as_python_bools(cls):
    a = cls(10, 4, 8, signed=np.False_, sparse=np.True_)
    b = cls(10, 4, 8, signed=False, sparse=True)
    assert a.signed is False and a.sparse is True
    b.load_state_dict(a.state_dict())
    ids = torch.tensor([[1, 2], [3, 9]])
    torch.testing.assert_close(a(ids), b(ids), rtol=0, atol=0)
    with pytest.raises(TypeError, match="signed must be True or False, got 1"):
        cls(10, 4, 8, signed=1)


def test_same_padding_with_kernel_0_is_refused_as_kernel_size():
    with pytest.raises(ValueError, match=r"kernel_size must be >= 1 in both dimensions"):
        LocallyConnected2d(2, 3, (7, 6), 0, padding="same")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("num_layers", 1),
        ("bias", True),
        ("dropout", 0.0),
        ("bidirectional", False),
        ("proj_size", 0),
    ],
)
def test_lstm_keyword_at_nn_lstm_default_is_advised_to_be_dropped(name, value):
    from tying.nn import TiedGateLSTM

    # bias=True was advised "layer.bias.data.zero_()", dropout=0.0 an nn.Dropout
    with pytest.raises(TypeError, match=rf"{name}={value!r} is nn.LSTM's default, .*drop {name}="):
        TiedGateLSTM(3, 5, **{name: value})
    lstm = TiedGateLSTM(3, 5, tie_gates=False)  # the advice followed: nn.LSTM's outputs
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(lstm(x)[0], lstm.to_lstm()(x)[0])


@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
def test_embedding_keyword_at_default_is_advised_to_be_dropped(cls):
    with pytest.raises(TypeError, match=r"padding_idx=None is nn.Embedding(Bag)?'s default"):
        cls(10, 4, 8, padding_idx=None)
    with pytest.raises(TypeError, match=r"zero the padding|leave the padding ids out"):
        cls(10, 4, 8, padding_idx=0)  # a real padding id keeps its advice
