"""``tying.hf.resize_token_embeddings(..., pad_to_multiple_of=)`` on Marian and MVP (stop 61).

Their ``resize_token_embeddings`` resizes ``final_logits_bias`` to ``new_num_tokens`` before
HF rounds the tables up: a padded head (96 rows for 84 tokens) met a bias of 84 entries and
every forward after the resize failed (``RuntimeError: The size of tensor a (96) must match
the size of tensor b (84)``), in plain HF too; with ``new_num_tokens=None`` the resize itself
crashed inside HF (``TypeError: '<=' not supported between instances of 'NoneType' and
'int'``). The bias now follows the head as BART's does (zeros for the added rows), so the
padded resize computes what HF's resize to the padded size computes, to the bit.
"""

from __future__ import annotations

import pytest
import torch

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers
_S2S = dict(
    d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64,
    encoder_attention_heads=2, decoder_attention_heads=2, max_position_embeddings=32,
    pad_token_id=0, decoder_start_token_id=0,
)  # fmt: skip
FAMILIES = {
    "marian": (T.MarianMTModel, T.MarianConfig),
    "mvp": (T.MvpForConditionalGeneration, T.MvpConfig),
}


def _build(family: str, tied: bool = True):
    cls, cfg = FAMILIES[family]
    torch.manual_seed(0)
    model = cls(cfg(vocab_size=71, tie_word_embeddings=tied, **_S2S)).eval()
    with torch.no_grad():  # a bias HF would leave at zero: the kept entries must stay
        model.final_logits_bias.copy_(torch.linspace(-1, 1, 71))
    return model


def _logits(model) -> torch.Tensor:
    x = torch.randint(3, 71, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(input_ids=x, decoder_input_ids=x).logits


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("asked", "padded"), [(84, 96), (None, 80), (66, 80)])
def test_padded_resize_matches_hf_resize_to_the_padded_size(family, asked, padded):
    model, ref = _build(family), _build(family)
    bias = model.final_logits_bias.clone()
    torch.manual_seed(5)
    hf.resize_token_embeddings(model, asked, pad_to_multiple_of=16, mean_resizing=False)
    torch.manual_seed(5)
    ref.resize_token_embeddings(padded, mean_resizing=False)
    got = _logits(model)
    assert got.shape[-1] == padded and model.final_logits_bias.shape == (1, padded)
    assert torch.equal(got, _logits(ref))
    assert torch.equal(model.final_logits_bias[0, :71], bias[0, :71])
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tying.verify(model) == tying.verify(ref)


def test_plan_tied_marian_padded_resize_matches_hf_tied():
    anchor = _build("marian")
    model = _build("marian", tied=False)
    hf.hf_ties_plan(anchor).apply(model)
    torch.manual_seed(5)
    hf.resize_token_embeddings(model, 84, pad_to_multiple_of=16, mean_resizing=False)
    torch.manual_seed(5)
    anchor.resize_token_embeddings(96, mean_resizing=False)
    assert torch.equal(_logits(model), _logits(anchor))
    assert model.lm_head.weight is model.model.shared.weight


def test_marian_unshared_decoder_bias_left_alone():
    # share_encoder_decoder_embeddings=False: HF resizes the encoder's table only; the head
    # and its bias keep the decoder's vocabulary, as in plain HF
    torch.manual_seed(0)
    cfg = T.MarianConfig(
        vocab_size=71, decoder_vocab_size=71, share_encoder_decoder_embeddings=False, **_S2S
    )
    model = T.MarianMTModel(cfg).eval()
    want = _logits(model)
    hf.resize_token_embeddings(model, 84, pad_to_multiple_of=16)
    assert model.get_input_embeddings().weight.shape[0] == 96
    assert model.final_logits_bias.shape == (1, 71)
    assert torch.equal(_logits(model), want)
