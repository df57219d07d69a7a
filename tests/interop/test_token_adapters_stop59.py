"""Token adapters on HF's embedding tie: encoder-decoders and heads with a bias (stop 59).

T5 and BART read one ``shared`` table in the encoder, the decoder and the head (HF's
own tie: one ``nn.Parameter`` in four modules). peft 0.21 wraps ``shared`` and gives
every module tied to it a token layer reading ``shared``'s very delta, so the adapter
model computes what plain PyTorch computes with those rows written into the one tensor
(measured: Δ = 0 for T5 and BART, adapter and merged). ``tying.interop.lora`` refused it
as a hand-made tie (``encoder.embed_tokens.weight <- shared.weight``): it accepted the
tie only where every tied module was a ``Linear`` head (decoder-only models). Naming
``encoder.embed_tokens`` itself stays refused: peft then trains that table's rows alone
(plain peft: merged logits 0.72 off the adapter model's).

A masked-LM head with a bias (BERT) is refused before peft runs: peft's token layer drops
the bias (plain peft 2.59 off plain PyTorch); it was refused after peft ran, with advice
naming the call just made.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import tying

peft = pytest.importorskip("peft", reason="the interop extra: pip install 'tying[interop]'")
transformers = pytest.importorskip("transformers", reason="the interop extra")

from tests.interop.models import bert_mlm_with_head_bias, t5_tiny  # noqa: E402
from tying import TieError  # noqa: E402
from tying.interop import lora  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _t5():
    return t5_tiny(), "shared", ["q"]


def _bart():
    torch.manual_seed(0)
    cfg = transformers.BartConfig(
        encoder_layers=1, decoder_layers=1, d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, vocab_size=40,
        max_position_embeddings=16, pad_token_id=1,
    )  # fmt: skip
    return transformers.BartForConditionalGeneration(cfg).eval(), "model.shared", ["q_proj"]


X = torch.tensor([[3, 5, 7, 9, 3, 11]])
Y = torch.tensor([[0, 5, 3, 8, 5]])


def _logits(model):
    with torch.no_grad():
        return model(input_ids=X, decoder_input_ids=Y).logits


@pytest.mark.parametrize(
    ("make", "dict_form"), [(_t5, True), (_bart, False)], ids=["t5-dict", "bart-list"]
)
def test_token_indices_on_the_shared_table_match_plain_torch_and_round_trip(
    make, dict_form, tmp_path
):
    model, shared, targets = make()
    tokens = {"shared": [3, 5]} if dict_form else [3, 5]
    config = peft.LoraConfig(r=2, target_modules=targets, trainable_token_indices=tokens)
    pm = lora.get_peft_model(model, config)  # refused as a hand-made tie before
    ((name, delta),) = [(n, p) for n, p in pm.named_parameters() if "trainable_tokens" in n]
    with torch.no_grad():
        delta.add_(torch.randn(delta.shape, generator=torch.Generator().manual_seed(0)))
    want = make()[0]  # plain PyTorch: the new rows written into HF's one shared tensor
    with torch.no_grad():
        want.get_submodule(shared).weight[[3, 5]] = delta
    assert torch.equal(_logits(pm), _logits(want)) and tying.verify(pm) > 0

    pm.save_pretrained(tmp_path)
    again = lora.from_pretrained(make()[0], tmp_path)
    assert torch.equal(_logits(again), _logits(want))
    merged = lora.merge_and_unload(pm)
    assert (_logits(merged) - _logits(want)).abs().max().item() < 1e-5
    assert merged.lm_head.weight is merged.get_submodule(shared).weight


def test_token_indices_on_one_tied_table_alone_stay_refused():
    model, _, targets = _t5()
    config = peft.LoraConfig(
        r=2, target_modules=targets, trainable_token_indices={"encoder.embed_tokens": [3]}
    )
    with pytest.raises(TieError, match=r"'encoder.embed_tokens' .*hand-made tie encoder"):
        lora.get_peft_model(model, config)
    assert type(model.encoder.embed_tokens) is torch.nn.Embedding
    assert model.encoder.embed_tokens.weight is model.shared.weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = peft.get_peft_model(_t5()[0], config)  # why: plain peft trains it apart
    with torch.no_grad():
        for n, p in plain.named_parameters():
            if "trainable_tokens" in n:
                p.add_(1.0)
        before = _logits(plain)
    merged = plain.merge_and_unload()  # writes the rows into shared: every use reads them
    assert (_logits(merged) - before).abs().max().item() > 0.1


_bert_mlm = bert_mlm_with_head_bias  # tests/interop/models.py


@pytest.mark.parametrize("tuner", [True, False], ids=["TrainableTokensConfig", "lora-tokens"])
def test_a_token_adapter_on_a_tied_head_with_a_bias_is_refused_with_advice_that_works(tuner):
    # peft's token layer runs the tied head as F.linear(x, W): the bias is dropped (plain
    # peft: logits 2.59 off plain PyTorch). tying refused after peft ran, advising the call
    # just made and, for TrainableTokensConfig, "target the input embedding alone" (done).
    config = (
        peft.TrainableTokensConfig(token_indices=[3, 5])
        if tuner
        else peft.LoraConfig(r=2, target_modules=["query"], trainable_token_indices=[3, 5])
    )
    model = _bert_mlm()
    with pytest.raises(
        TieError, match=r"'cls.predictions.decoder'.*without the head's bias"
    ) as err:
        lora.get_peft_model(model, config)
    assert "target the input embedding alone" not in str(err.value)
    head, emb = model.cls.predictions.decoder, model.bert.embeddings.word_embeddings
    assert type(emb) is torch.nn.Embedding and head.weight is emb.weight  # unchanged
    # the advice, followed: the head keeps its rows, the embedding trains alone
    tying.Plan([tying.free("cls.predictions.decoder.weight")]).apply(model)
    model.config.tie_word_embeddings = False
    pm = lora.get_peft_model(model, config)
    ((_, delta),) = [(n, p) for n, p in pm.named_parameters() if "trainable_tokens" in n]
    with torch.no_grad():
        delta.add_(0.5)
        got = pm(input_ids=X).logits
        want = _bert_mlm()
        want.cls.predictions.decoder.weight = torch.nn.Parameter(
            want.get_input_embeddings().weight.clone()
        )
        want.get_input_embeddings().weight[[3, 5]] = delta
        assert torch.equal(got, want(input_ids=X).logits)
