"""A refused TrainableTokensConfig names only the variants that are accepted (stop 60).

The refusal's hint was one fixed text: "target the input embedding alone
(target_modules=['embed_tokens'], or None) ... accepted". On BART, mBART, Pegasus, M2M100
and T5 the input embedding is ``shared`` and ``'embed_tokens'`` names its encoder and
decoder seats: that advice, followed, was refused again (with the same hint). On Marian
(its encoder and decoder hold ``shared``'s Parameter in modules of their own; plain peft
fails or trains one use apart) every variant is refused, so the hint looped. Each
variant is now checked against the model before it is named.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

import tying
from tests.interop import models as M

peft = pytest.importorskip("peft")
lora = pytest.importorskip("tying.interop.lora")
T = M.transformers

_S2S = dict(
    vocab_size=32,
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=16,
    decoder_ffn_dim=16,
    max_position_embeddings=32,
    tie_word_embeddings=True,
    pad_token_id=0,
    decoder_start_token_id=0,
)


def _tiny(name: str):
    torch.manual_seed(0)
    if name == "t5":
        cfg = T.T5Config(
            vocab_size=32, d_model=16, d_kv=8, d_ff=16, num_layers=1, num_heads=2,
            tie_word_embeddings=True, decoder_start_token_id=0,
        )  # fmt: skip
        return T.T5ForConditionalGeneration(cfg).eval()
    model, config = {
        "marian": (T.MarianMTModel, T.MarianConfig),
        "bart": (T.BartForConditionalGeneration, T.BartConfig),
        "mbart": (T.MBartForConditionalGeneration, T.MBartConfig),
        "pegasus": (T.PegasusForConditionalGeneration, T.PegasusConfig),
        "m2m100": (T.M2M100ForConditionalGeneration, T.M2M100Config),
    }[name]
    return model(config(**_S2S)).eval()


def _tokens(targets):
    return peft.TrainableTokensConfig(token_indices=[3, 5], target_modules=targets)


def _hint(name: str, targets) -> str:
    model = _tiny(name)
    with pytest.raises(tying.TieError, match=r"TrainableTokensConfig: on the head") as err:
        lora.get_peft_model(model, _tokens(targets))
    msg = str(err.value)
    return msg[msg.index("(TrainableTokensConfig") :]


@pytest.mark.parametrize("name", ["bart", "t5", "m2m100"])
@pytest.mark.parametrize("targets", [["embed_tokens"], ["lm_head"]])
def test_the_hint_names_the_input_embedding_of_the_model_and_each_variant_is_accepted(
    name, targets
):
    hint = _hint(name, targets)
    # old: target_modules=['embed_tokens'] (the encoder's seat: refused again)
    assert "target_modules=['shared'], or None" in hint, hint
    assert "'embed_tokens'" not in hint
    for named in re.findall(r"target_modules=(\[[^\].]*\])", hint):
        assert lora.get_peft_model(_tiny(name), _tokens(eval(named))) is not None
    assert lora.get_peft_model(_tiny(name), _tokens(None)) is not None
    lin = "q" if name == "t5" else "q_proj"
    (key,) = re.findall(r"trainable_token_indices=\{'(\w+)'", hint)
    cfg = peft.LoraConfig(r=2, target_modules=[lin], trainable_token_indices={key: [3, 5]})
    assert lora.get_peft_model(_tiny(name), cfg) is not None


@pytest.mark.parametrize("targets", [None, ["embed_tokens"], ["model.shared"]])
def test_on_marian_no_refused_variant_is_advised_and_the_fix_above_works(targets):
    model = _tiny("marian")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(tying.TieError, match=r"refused on this model too") as err:
        lora.get_peft_model(model, _tokens(targets))
    msg = str(err.value)
    assert "it is accepted" not in msg and "trainable_token_indices=" not in msg
    assert model.model.encoder.embed_tokens.weight is model.model.shared.weight  # unchanged
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # "untie them as the fix above says": its plans and target_modules, as printed
    for plan in re.findall(r"tying\.Plan\(\[.*?\]\)", msg):
        eval(plan, {"tying": tying}).apply(model)
    assert "also set model.config.tie_word_embeddings = False" in msg
    model.config.tie_word_embeddings = False
    (named,) = re.findall(r"pass target_modules=(\[[^\]]*\])", msg)
    base = copy.deepcopy(model)
    pm = lora.get_peft_model(model, _tokens(eval(named)))
    ((_, delta),) = [(n, p) for n, p in pm.named_parameters() if "trainable_tokens" in n]
    with torch.no_grad():
        delta.copy_(torch.randn(delta.shape, generator=torch.Generator().manual_seed(3)))
        base.model.shared.weight[[3, 5]] = delta  # every embedding seat; the head its own
    x = dict(input_ids=torch.tensor([[3, 5, 7, 3]]), decoder_input_ids=torch.tensor([[0, 5, 3]]))
    got = pm(**x).logits
    torch.testing.assert_close(got, base(**x).logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(lora.merge_and_unload(pm)(**x).logits, got, rtol=0, atol=1e-6)
