"""LXMERT's vocabulary bias beside its bias-free tied head, which ``get_output_embeddings``
does not name (review of stop 62): with ``pad_to_multiple_of`` LXMERT's own resize sized the
bias to the unpadded count (96 head rows, 66 entries), so every forward failed after
``tying.hf.resize_token_embeddings``; a bfloat16 bias came back float32."""

from __future__ import annotations

import pytest
import torch

from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers
V = 61


def _lxmert():
    torch.manual_seed(0)
    cfg = T.LxmertConfig(
        vocab_size=V, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        l_layers=1, x_layers=1, r_layers=1, visual_feat_dim=8, visual_pos_dim=4,
        num_qa_labels=3, num_object_labels=5, num_attr_labels=5,
    )  # fmt: skip
    model = T.LxmertForPreTraining(cfg).eval()
    with torch.no_grad():
        model.cls.predictions.bias.copy_(torch.linspace(-1.0, 1.0, V))
    return model


def _logits(model):
    g = torch.Generator().manual_seed(2)
    x = torch.randint(3, 40, (2, 8), generator=torch.Generator().manual_seed(1))
    feats, pos = torch.randn(2, 3, 8, generator=g), torch.rand(2, 3, 4, generator=g)
    with torch.no_grad():
        return model(input_ids=x, visual_feats=feats, visual_pos=pos).prediction_logits


@pytest.mark.parametrize("mean_resizing", [False, True])
def test_padded_resize_gives_the_bias_one_entry_per_head_row(mean_resizing):
    model = _lxmert()
    before, old_bias = _logits(model), model.cls.predictions.bias.detach().clone()
    hf.resize_token_embeddings(model, V + 5, pad_to_multiple_of=32, mean_resizing=mean_resizing)
    assert model.cls.predictions.decoder.weight.shape[0] == 96
    bias = model.cls.predictions.bias
    assert bias.shape == (96,)
    assert torch.equal(bias[:V], old_bias)
    assert torch.equal(bias[V:], torch.zeros(96 - V))  # LXMERT's own fill: zeros
    got = _logits(model)
    assert got.shape[-1] == 96 and torch.equal(got[..., :V], before)


def test_grow_and_shrink_keep_lxmerts_own_bias():
    for n in (V + 13, V - 16):
        model, ref = _lxmert(), _lxmert()
        torch.manual_seed(5)
        hf.resize_token_embeddings(model, n, mean_resizing=False)
        torch.manual_seed(5)
        ref.resize_token_embeddings(n, mean_resizing=False)
        assert torch.equal(model.cls.predictions.bias, ref.cls.predictions.bias)
        assert torch.equal(_logits(model), _logits(ref))


def test_bfloat16_bias_stays_bfloat16():
    model = _lxmert().to(torch.bfloat16)
    hf.resize_token_embeddings(model, V + 13, mean_resizing=False)
    assert model.cls.predictions.bias.dtype == torch.bfloat16
    assert model.cls.predictions.bias.requires_grad
