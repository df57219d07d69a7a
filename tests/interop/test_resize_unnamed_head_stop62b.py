"""LXMERT's bias-free head, which ``get_output_embeddings`` does not name, resized when HF leaves
it behind (stop 62, second wave).

With ``tie_word_embeddings=False`` plus ``tying.hf.hf_ties_plan`` (Plan-tied) the resize was
refused with the advice "Untie it first (``tying.Plan([tying.free('cls.predictions.decoder.weight')])
.apply(model)``)"; following it and resizing left the head at 61 rows and LXMERT's bias at 74,
so every forward failed (untied LXMERT fails the same way in plain HF). Now the Plan-tied head
follows the resized embedding, and an untied head is resized as HF resizes an untied head it
names: kept-token logits equal the ones before.
"""

from __future__ import annotations

import pytest
import torch

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers
V = 61
HEAD = "cls.predictions.decoder.weight"


def _lxmert(tied: bool):
    torch.manual_seed(0)
    cfg = T.LxmertConfig(
        vocab_size=V, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        l_layers=1, x_layers=1, r_layers=1, visual_feat_dim=8, visual_pos_dim=4,
        num_qa_labels=3, num_object_labels=5, num_attr_labels=5, tie_word_embeddings=tied,
    )  # fmt: skip
    model = T.LxmertForPreTraining(cfg).eval()
    with torch.no_grad():
        model.cls.predictions.bias.copy_(torch.linspace(-1.0, 1.0, V))
    return model


def _plan_tied():
    model = _lxmert(False)
    hf.hf_ties_plan(_lxmert(True)).apply(model)
    return model


def _logits(model):
    g = torch.Generator().manual_seed(2)
    x = torch.randint(3, 40, (2, 8), generator=torch.Generator().manual_seed(1))
    feats, pos = torch.randn(2, 3, 8, generator=g), torch.rand(2, 3, 4, generator=g)
    with torch.no_grad():
        return model(input_ids=x, visual_feats=feats, visual_pos=pos).prediction_logits


def test_plain_hf_leaves_an_untied_head_behind():
    model = _lxmert(False)
    model.resize_token_embeddings(V + 13, mean_resizing=False)
    with pytest.raises(RuntimeError, match="must match the size"):
        _logits(model)


CASES = [(V + 13, {"mean_resizing": False}), (V - 16, {}), (V + 5, {"pad_to_multiple_of": 32})]
IDS = ["grow", "shrink", "pad"]


@pytest.mark.parametrize(("n", "kw"), CASES, ids=IDS)
def test_plan_tied_head_follows_the_resized_embedding(n, kw):
    model = _plan_tied()
    before = _logits(model)
    hf.resize_token_embeddings(model, n, **kw)
    emb = model.lxmert.embeddings.word_embeddings.weight
    rows = emb.shape[0]
    assert model.cls.predictions.decoder.weight is emb
    assert model.cls.predictions.bias.shape == (rows,)
    got, keep = _logits(model), min(V, rows)
    assert got.shape[-1] == rows and torch.equal(got[..., :keep], before[..., :keep])
    assert tying.verify(model) == 1


@pytest.mark.parametrize(("n", "kw"), CASES, ids=IDS)
@pytest.mark.parametrize("how", ["config-untied", "freed-from-plan"])
def test_untied_head_is_resized_and_keeps_its_rows(how, n, kw):
    model = _lxmert(False)
    if how == "freed-from-plan":  # the advice an earlier refusal gave, followed
        model = _plan_tied()
        tying.Plan([tying.free(HEAD)]).apply(model)
    head_before = model.cls.predictions.decoder.weight.detach().clone()
    before = _logits(model)
    hf.resize_token_embeddings(model, n, **kw)
    rows = model.lxmert.embeddings.word_embeddings.weight.shape[0]
    head = model.cls.predictions.decoder
    assert head.weight.shape == (rows, 32) and head.out_features == rows
    assert head.weight is not model.lxmert.embeddings.word_embeddings.weight
    keep = min(V, rows)
    assert torch.equal(head.weight[:keep], head_before[:keep])
    assert model.cls.predictions.bias.shape == (rows,)
    got = _logits(model)
    assert got.shape[-1] == rows and torch.equal(got[..., :keep], before[..., :keep])


def test_untied_head_grows_as_hf_grows_an_untied_head_it_names():
    # mean_resizing: the added rows drawn from the old rows' mean and covariance, as HF's
    # _get_resized_lm_head draws them (no NaN, no zeros)
    model = _lxmert(False)
    hf.resize_token_embeddings(model, V + 13)
    added = model.cls.predictions.decoder.weight[V:]
    assert torch.isfinite(added).all() and added.abs().sum() > 0


def test_hf_tied_lxmert_unchanged():
    model, ref = _lxmert(True), _lxmert(True)
    torch.manual_seed(5)
    hf.resize_token_embeddings(model, V + 13)
    torch.manual_seed(5)
    ref.resize_token_embeddings(V + 13)
    assert model.cls.predictions.decoder.weight is model.lxmert.embeddings.word_embeddings.weight
    assert torch.equal(_logits(model), _logits(ref))
