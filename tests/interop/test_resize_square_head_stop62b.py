"""DeBERTa / DeBERTa-v2 masked-LM with ``legacy=False`` through ``tying.hf.resize_token_embeddings``
(stop 62, second wave).

Their ``get_output_embeddings()`` is ``lm_predictions.lm_head.dense``, a hidden-to-hidden layer;
the vocabulary projection is the word embedding itself (``h @ word_embeddings.weight.T +
lm_head.bias``). HF's resize made ``dense`` (new vocab x hidden) and seated its resized bias as
the vocabulary bias, so every forward after failed (``Given normalized_shape=[32] ... got input
of size [2, 8, 74]``), after HF's own resize as after ours. Now ``dense`` stays, the embedding
grows or shrinks, and the vocabulary bias follows it: kept-token logits equal the ones before.
"""

from __future__ import annotations

import pytest
import torch

import tying
from tests.interop import models as M
from tests.interop.test_resize_owner_bias_stop62 import _logits, _x

hf = pytest.importorskip("tying.hf")
T = M.transformers
V = 61
FAMILIES = {
    "deberta": ("DebertaConfig", "DebertaForMaskedLM"),
    "deberta-v2": ("DebertaV2Config", "DebertaV2ForMaskedLM"),
}


def _deberta(family: str, tied: bool = True):
    cfg_cls, model_cls = (getattr(T, n) for n in FAMILIES[family])
    torch.manual_seed(0)
    cfg = cfg_cls(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=1, max_position_embeddings=64, legacy=False, tie_word_embeddings=tied,
    )  # fmt: skip
    model = model_cls(cfg).eval()
    with torch.no_grad():  # a trained-looking vocabulary bias (HF initialises it to zeros)
        model.lm_predictions.lm_head.bias.copy_(torch.linspace(-1.0, 1.0, V))
    return model


def _hidden(model, x):
    """What the word embedding is multiplied with: dense, activation, layer norm."""
    base = model.deberta if hasattr(model, "deberta") else model.deberta_v2
    head = model.lm_predictions.lm_head
    with torch.no_grad():
        h = base(input_ids=x).last_hidden_state
        return head.LayerNorm(head.transform_act_fn(head.dense(h)))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_own_resize_breaks_the_forward(family):
    # the anchor's behaviour: HF resizes dense into a vocabulary projection
    model = _deberta(family)
    model.resize_token_embeddings(V + 13, mean_resizing=False)
    with pytest.raises(RuntimeError, match="normalized_shape"):
        _logits(model, _x())


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("tied", [True, False], ids=["config-tied", "config-untied"])
@pytest.mark.parametrize(
    ("n", "kw"),
    [
        (V + 13, {"mean_resizing": False}),
        (V + 13, {}),
        (V - 16, {}),
        (V + 5, {"pad_to_multiple_of": 32}),
    ],
    ids=["grow", "grow-mean", "shrink", "pad"],
)
def test_kept_logits_equal_and_the_bias_follows_the_embedding(family, tied, n, kw):
    model = _deberta(family, tied)
    hf.hf_ties_plan(model).apply(model)  # nothing declared: the head reads the embedding
    x = _x()
    before, old_bias = _logits(model, x), model.lm_predictions.lm_head.bias.detach().clone()
    dense = model.lm_predictions.lm_head.dense
    dense_w = dense.weight.detach().clone()
    hf.resize_token_embeddings(model, n, **kw)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == (96 if "pad_to_multiple_of" in kw else n)
    assert model.lm_predictions.lm_head.dense is dense and torch.equal(dense.weight, dense_w)
    bias = model.lm_predictions.lm_head.bias
    assert bias.shape == (rows,) and bias.dtype == old_bias.dtype
    keep = min(V, rows)
    assert torch.equal(bias[:keep], old_bias[:keep])
    if rows > V:
        fill = old_bias.mean() if kw.get("mean_resizing", True) else torch.tensor(0.0)
        assert torch.allclose(bias[V:], fill.expand(rows - V))
    got = _logits(model, x)
    assert got.shape[-1] == rows
    assert torch.equal(got[..., :keep], before[..., :keep])
    if rows > V:  # the added tokens read the resized embedding plus their bias
        emb = model.get_input_embeddings().weight
        want = _hidden(model, x) @ emb[V:].T + bias[V:]
        torch.testing.assert_close(got[..., V:], want, rtol=1e-5, atol=1e-5)
    assert model.config.vocab_size == rows
    tying.verify(model)


def test_a_refused_resize_leaves_dense_and_the_bias_as_they_were():
    model = _deberta("deberta")
    head = model.lm_predictions.lm_head
    dense, bias = head.dense, head.bias
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        hf.resize_token_embeddings(model, V + 3, pad_to_multiple_of=-4)
    assert head.dense is dense and head.bias is bias
    assert model.get_input_embeddings().weight.shape[0] == V
    assert model.get_output_embeddings() is dense  # HF's own method, not hidden any more
    assert "get_output_embeddings" not in model.__dict__


def test_a_failure_inside_the_resize_restores_the_model(monkeypatch):
    model = _deberta("deberta-v2")
    x = _x()
    before = _logits(model, x)
    head = model.lm_predictions.lm_head
    bias = head.bias

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("tying.interop.hf_resize.follow_head", boom)
    with pytest.raises(RuntimeError, match="boom"):
        hf.resize_token_embeddings(model, V + 13)
    assert head.bias is bias and model.get_input_embeddings().weight.shape[0] == V
    assert model.config.vocab_size == V and "get_output_embeddings" not in model.__dict__
    assert torch.equal(_logits(model, x), before)


def test_legacy_heads_resize_as_before():
    # legacy=True names cls.predictions.decoder, a real vocabulary projection: HF's own path
    torch.manual_seed(0)
    cfg = T.DebertaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=1, max_position_embeddings=64, legacy=True,
    )  # fmt: skip
    model, ref = T.DebertaForMaskedLM(cfg).eval(), T.DebertaForMaskedLM(cfg).eval()
    ref.load_state_dict(model.state_dict())
    torch.manual_seed(5)
    hf.resize_token_embeddings(model, V + 13)
    torch.manual_seed(5)
    ref.resize_token_embeddings(V + 13)
    assert torch.equal(_logits(model, _x()), _logits(ref, _x()))
