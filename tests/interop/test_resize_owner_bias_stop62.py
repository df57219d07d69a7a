"""A head whose owner adds the vocabulary bias beside it (ESM) keeps one bias entry per row
through ``tying.hf.resize_token_embeddings`` (stop 62).

``EsmLMHead`` computes ``decoder(x) + bias``: the tied ``lm_head.decoder`` has no bias and
``lm_head.bias`` sits on its owner. HF's resize left that bias at the old size, so every
forward after it failed (``The size of tensor a (74) must match ... (61)``), after HF's own
resize as after ours. The kept tokens must read what they read before (bias included),
the added ones the resized head's rows plus zeros (``mean_resizing=False``) or the old
bias's mean (HF's default, as for a ``Linear`` head's own bias), the tie must hold.
"""

from __future__ import annotations

import pytest
import torch

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers
V = 61


def _esm(tied: bool = True):
    torch.manual_seed(0)
    cfg = T.EsmConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=1, max_position_embeddings=64, pad_token_id=0, mask_token_id=1,
        tie_word_embeddings=tied,
    )  # fmt: skip
    model = T.EsmForMaskedLM(cfg).eval()
    with torch.no_grad():  # a trained-looking bias (HF initialises it to zeros)
        model.lm_head.bias.copy_(torch.linspace(-1.0, 1.0, V))
    return model


def _x():
    return torch.randint(3, 40, (2, 8), generator=torch.Generator().manual_seed(1))


def _logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits


def _hidden(model, x):
    """What the decoder reads: the head's input (dense, gelu, layer norm of the last state)."""
    with torch.no_grad():
        h = model.esm(input_ids=x).last_hidden_state
        head = model.lm_head
        return head.layer_norm(torch.nn.functional.gelu(head.dense(h)))


def test_hf_own_resize_leaves_the_bias_behind():
    # the anchor's behaviour that made ours fail: HF resizes the decoder, not lm_head.bias
    model = _esm()
    model.resize_token_embeddings(V + 13)
    with pytest.raises(RuntimeError, match="must match the size"):
        _logits(model, _x())


@pytest.mark.parametrize("tied", [True, False], ids=["hf-tied", "plan-tied"])
@pytest.mark.parametrize("mean_resizing", [False, True])
def test_grow_keeps_kept_logits_and_fills_the_bias_as_a_linear_head(tied, mean_resizing):
    model = _esm(tied)
    if not tied:
        hf.hf_ties_plan(_esm(True)).apply(model)
    x = _x()
    before, old_bias = _logits(model, x), model.lm_head.bias.detach().clone()
    torch.manual_seed(5)
    hf.resize_token_embeddings(model, V + 13, mean_resizing=mean_resizing)
    got = _logits(model, x)
    assert got.shape[-1] == V + 13
    assert torch.equal(got[..., :V], before)
    bias = model.lm_head.bias
    assert torch.equal(bias[:V], old_bias)
    fill = old_bias.mean() if mean_resizing else torch.tensor(0.0)
    assert torch.allclose(bias[V:], fill.expand(13))
    want_new = _hidden(model, x) @ model.lm_head.decoder.weight[V:].T + bias[V:]
    torch.testing.assert_close(got[..., V:], want_new, rtol=0, atol=1e-6)
    assert model.lm_head.decoder.weight is model.esm.embeddings.word_embeddings.weight
    assert tying.verify(model) == 1


def test_shrink_and_pad_keep_the_bias_one_entry_per_head_row():
    model = _esm()
    x = _x()
    before, old_bias = _logits(model, x), model.lm_head.bias.detach().clone()
    hf.resize_token_embeddings(model, 45, mean_resizing=False)
    assert torch.equal(_logits(model, x), before[..., :45])
    assert torch.equal(model.lm_head.bias, old_bias[:45])
    hf.resize_token_embeddings(model, 50, pad_to_multiple_of=32, mean_resizing=False)
    rows = model.lm_head.decoder.weight.shape[0]
    assert rows == 64 and model.lm_head.bias.shape == (64,)
    assert torch.equal(_logits(model, x)[..., :45], before[..., :45])
    assert torch.equal(model.lm_head.bias[45:], torch.zeros(19))


def test_bias_keeps_dtype_and_trains_with_the_tie_after_the_resize():
    model = _esm().to(torch.bfloat16)
    hf.resize_token_embeddings(model, V + 3, mean_resizing=False)
    assert model.lm_head.bias.dtype == torch.bfloat16 and model.lm_head.bias.requires_grad
    model.float().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(input_ids=_x()).logits.square().mean().backward()
    opt.step()
    assert tying.verify(model) == 1
    assert model.lm_head.bias.grad is not None


def test_resized_model_saves_and_loads_exactly_with_tying_and_plain_hf(tmp_path):
    model = _esm()
    hf.resize_token_embeddings(model, V + 13, mean_resizing=False)
    x = _x()
    want = _logits(model, x)
    hf.save_pretrained(model, tmp_path)
    again = hf.from_pretrained(T.EsmForMaskedLM, tmp_path).eval()
    assert torch.equal(_logits(again, x), want)
    assert again.lm_head.decoder.weight is again.esm.embeddings.word_embeddings.weight
    plain = T.EsmForMaskedLM.from_pretrained(tmp_path).eval()
    assert torch.equal(_logits(plain, x), want)


def test_a_head_with_its_own_bias_leaves_the_owner_bias_as_hf_does():
    # untied BERT: the decoder adds its own bias and cls.predictions.bias is unused by the
    # forward; HF leaves it at the old size, and so does tying (nothing to follow)
    torch.manual_seed(0)
    cfg = T.BertConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=1, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    model, ref = T.BertForMaskedLM(cfg).eval(), T.BertForMaskedLM(cfg).eval()
    ref.load_state_dict(model.state_dict())
    hf.resize_token_embeddings(model, V + 13, mean_resizing=False)
    ref.resize_token_embeddings(V + 13, mean_resizing=False)
    assert model.cls.predictions.bias.shape == ref.cls.predictions.bias.shape


def test_an_optimizer_built_before_the_resize_is_refused_for_the_new_bias():
    model = _esm().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hf.resize_token_embeddings(model, V + 5, mean_resizing=False)
    model(input_ids=_x()).logits.square().mean().backward()
    with pytest.raises(
        tying.TieError, match=r"lm_head\.bias \(replaced by resize_token_embeddings\)"
    ):
        opt.step()
