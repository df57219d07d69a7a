"""A peft target on one nn.Parameter held by several modules: one refusal names them all (stop 60).

``tying.interop.lora.get_peft_model`` refuses a target in a hand-made tie (one
``nn.Parameter`` in two modules). Its advice named one tie per refusal: on M2M100 (HF's
``shared`` table seated in the encoder, the decoder and the head) ``target_modules=
['model.shared']`` took three tries, each following the advice printed, before peft
ran; a Parameter in three Linears took two. The refusal now names every module that holds
the Parameter and gives one plan for all of them; followed once, the model is accepted,
and the merged model computes the adapter model's outputs.
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


def _follow(model, targets: list[str], make) -> tuple[object, int, list[str]]:
    """Call get_peft_model, following each refusal's plans and target_modules, as a user would."""
    messages = []
    for tries in range(1, 6):
        try:
            return lora.get_peft_model(model, make(targets)), tries, messages
        except tying.TieError as err:
            msg = str(err)
            messages.append(msg)
            plans = re.findall(r"tying\.Plan\(\[.*?\]\)", msg)
            assert plans, msg
            for plan in plans:
                eval(plan, {"tying": tying}).apply(model)  # the advice, as printed
            if "tie_word_embeddings = False" in msg and hasattr(model, "config"):
                model.config.tie_word_embeddings = False
            listed = re.search(r"target_modules=(\[[^\]]*\])", msg)
            if listed:
                targets = eval(listed.group(1))
            else:  # "... and target both"
                for t, like in re.findall(r"tying\.share\('([^']+)', like='([^']+)'\)", msg):
                    targets += [p for p in (t, like) if p not in targets]
    raise AssertionError(f"still refused after 5 tries: {messages[-1]}")


def _lora(targets):
    return peft.LoraConfig(r=2, target_modules=list(targets), init_lora_weights=False)


def _three_linears(bias: bool = False):
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        *[torch.nn.Linear(6, 6, bias=bias) for _ in range(3)], torch.nn.Linear(6, 2)
    )
    m[1].weight = m[0].weight
    m[2].weight = m[0].weight
    return m.eval()


def test_parameter_in_three_linears_refused_once_naming_all():
    m = _three_linears()
    x = torch.randn(4, 6)
    with pytest.raises(tying.TieError, match=r"the same nn.Parameter is also at 2\.weight"):
        lora.get_peft_model(copy.deepcopy(m), _lora(["0"]))
    pm, tries, _ = _follow(m, ["0"], _lora)
    assert tries == 2  # one refusal, then accepted (3 before: one tie per refusal)
    with torch.no_grad():
        adapted = pm(x)
        merged = lora.merge_and_unload(pm)
        assert torch.allclose(merged(x), adapted, atol=1e-6)
    ties = {(t.target, t.source) for t in tying.ties(merged)}
    assert {("1.weight", "0.weight"), ("2.weight", "0.weight")} <= ties  # one tensor, merged once


def _m2m100():
    torch.manual_seed(0)
    cfg = T.M2M100Config(
        vocab_size=41, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
        decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        max_position_embeddings=16, pad_token_id=1,
    )  # fmt: skip
    return T.M2M100ForConditionalGeneration(cfg).eval()


def _logits(model, x):
    with torch.no_grad():
        return model(input_ids=x, decoder_input_ids=x).logits


def test_m2m100_shared_table_one_refusal():
    model = _m2m100()
    x = torch.randint(3, 41, (2, 5))
    pm, tries, messages = _follow(model, ["model.shared"], _lora)
    assert tries == 2, messages  # 4 before: one tie per refusal
    (msg,) = messages
    for slot in ("model.encoder.embed_tokens", "model.decoder.embed_tokens", "lm_head"):
        assert f"{slot}.weight" in msg
    assert "tie_word_embeddings = False" in msg  # the Linear head gets its own copy
    adapted = _logits(pm, x)
    merged = lora.merge_and_unload(pm)
    assert torch.allclose(_logits(merged, x), adapted, atol=1e-5)
    ties = {(t.target, t.source) for t in tying.ties(merged)}
    assert {
        ("model.encoder.embed_tokens.weight", "model.shared.weight"),
        ("model.decoder.embed_tokens.weight", "model.shared.weight"),
    } <= ties


def test_own_biases_advice_keeps_the_model():
    """Linears sharing a weight by hand but not their biases: the advice tied them whole,
    so each read the source's bias (outputs 0.069-0.18 off, no error, stop 60); now they
    get their own copies and the model is unchanged."""
    m = _three_linears(bias=True)
    x = torch.randn(4, 6)
    with torch.no_grad():
        before = m(x)
    pm, tries, messages = _follow(m, ["0"], _lora)
    assert tries == 2 and "'1' holds other values than '0' in 1.bias" in messages[0]
    with torch.no_grad(), pm.disable_adapter():
        assert torch.equal(pm(x), before)


def test_head_target_keeps_its_one_tie_fix():
    """Targeting the head, which only needs its own copy, does not re-tie the tables."""
    model = _m2m100()
    pm, tries, messages = _follow(model, ["lm_head"], _lora)
    assert tries == 2, messages
    assert "also at" not in messages[0]
    assert "tying.Plan([tying.free('lm_head.weight')])" in messages[0]
    assert model.model.encoder.embed_tokens.weight is model.model.shared.weight
