"""peft's ``ensure_weight_tying`` acts on a ``modules_to_save`` entry by its *name* (stop 57).

peft 0.21 ties the copies of HF's embedding tie only when an entry's last component is one
of ``EMBEDDING_LAYER_NAMES`` (``embed_tokens``, ``lm_head``). Whisper's head ``proj_out``,
GPT-2's ``wte``, BERT's ``decoder`` / ``word_embeddings`` are copied alone and the tie breaks
(measured below with plain peft). ``tying.interop.lora.get_peft_model`` took such an entry
with ``ensure_weight_tying=True`` as kept, and its safety net then refused saying "Pass
ensure_weight_tying=True" (already passed); without the option its refusal advised passing
it, which led to that same refusal. Now the entry is refused up front, saying why, and naming
the entry peft does act on (following it is accepted, one copy), or that none exists.
"""

from __future__ import annotations

import pytest
import torch

import tying
from tests.interop import models as M

peft = pytest.importorskip("peft", reason="the interop extra (peft) is not installed")
from tying.interop.lora import from_pretrained, get_peft_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated", "ignore::UserWarning"
)
NAMES = "acts only on a modules_to_save entry ending in 'embed_tokens' or 'lm_head'"


def _whisper():
    torch.manual_seed(0)
    return M._whisper(True).eval()


def _bert():
    torch.manual_seed(0)
    cfg = M.transformers.BertConfig(
        vocab_size=67, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=1, max_position_embeddings=16, tie_word_embeddings=True,
    )  # fmt: skip
    return M.transformers.BertForMaskedLM(cfg).eval()


def _config(saved, ensure=True, targets=("q_proj",)):
    return peft.LoraConfig(
        r=2, target_modules=list(targets), modules_to_save=list(saved), ensure_weight_tying=ensure
    )


def _copy(module):
    return module.modules_to_save["default"].weight


def test_plain_peft_copies_proj_out_alone_and_ties_under_the_embedding_name():
    # the anchor: what peft itself does with the two entries
    apart = peft.get_peft_model(_whisper(), _config(["proj_out"])).base_model.model
    assert _copy(apart.proj_out) is not apart.model.decoder.embed_tokens.weight
    kept = peft.get_peft_model(_whisper(), _config(["model.decoder.embed_tokens"]))
    base = kept.base_model.model
    head = base.proj_out.modules_to_save["default"].weight
    assert head is _copy(base.model.decoder.embed_tokens)


@pytest.mark.parametrize("ensure", [False, True])
@pytest.mark.parametrize(
    "build, entry, advice",
    [
        (_whisper, "proj_out", "pass modules_to_save=['model.decoder.embed_tokens'] with"),
        (lambda: M.gpt2(tie_word_embeddings=True), "wte", "no modules_to_save entry keeps it"),
        (_bert, "decoder", "no modules_to_save entry keeps it"),
    ],
    ids=["whisper-proj_out", "gpt2-wte", "bert-decoder"],
)
def test_an_entry_peft_does_not_tie_is_refused_naming_the_one_it_does(build, entry, advice, ensure):
    model = build()
    before = dict(model.named_modules())
    with pytest.raises(tying.TieError, match=NAMES) as err:
        get_peft_model(model, _config([entry], ensure, targets=["q_proj", "c_attn", "query"]))
    msg = str(err.value)
    assert advice in msg
    assert "wrapping broke a tie" not in msg and "Pass ensure_weight_tying=True" not in msg
    assert dict(model.named_modules()) == before  # refused before peft wrapped anything
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    assert out.weight is emb.weight


def test_following_the_advice_is_accepted_with_one_copy(tmp_path):
    pm = get_peft_model(_whisper(), _config(["model.decoder.embed_tokens"]))
    base = pm.base_model.model
    emb = _copy(base.model.decoder.embed_tokens)
    assert base.proj_out.modules_to_save["default"].weight is emb
    assert tying.verify(pm) > 0
    with torch.no_grad():
        emb.add_(0.25)  # a trained copy: both uses read it
    pm.save_pretrained(tmp_path)
    again = from_pretrained(_whisper(), str(tmp_path)).base_model.model
    copy = _copy(again.model.decoder.embed_tokens)
    assert again.proj_out.modules_to_save["default"].weight is copy
    assert torch.equal(copy, emb)


def test_lora_on_the_head_names_the_entry_peft_acts_on():
    # the LoRA refusal's way out named modules_to_save=['proj_out'], which peft copies alone
    with pytest.raises(
        tying.TieError, match="modules_to_save=\\['model.decoder.embed_tokens'\\]"
    ) as err:
        get_peft_model(
            _whisper(),
            peft.LoraConfig(r=2, target_modules=["q_proj", "proj_out"], ensure_weight_tying=True),
        )
    assert "modules_to_save=['proj_out']" not in str(err.value)


@pytest.mark.parametrize("ensure", [False, True])
def test_loading_a_plain_peft_copy_trained_apart_is_refused_naming_the_entry(ensure, tmp_path):
    # plain peft copies proj_out alone (see the anchor above); loading it onto the tied model
    # was refused after peft wrapped it, advising ensure_weight_tying=True (already passed)
    made = peft.get_peft_model(_whisper(), _config(["proj_out"], ensure))
    made.save_pretrained(tmp_path)
    model = _whisper()
    before = dict(model.named_modules())
    with pytest.raises(tying.TieError, match="holds a modules_to_save copy of 'proj_out'") as err:
        from_pretrained(model, str(tmp_path))
    assert "modules_to_save=['model.decoder.embed_tokens'] and ensure_weight_tying=True" in str(
        err.value
    )
    assert dict(model.named_modules()) == before
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight


def test_gpt2_advice_survives_save_and_load(tmp_path):
    # peft saves modules_to_save=['lm_head'] as the input embedding's path 'transformer.wte',
    # on which it no longer acts when loading: the advice must not name an entry whose
    # adapter tying's own from_pretrained then refuses ("make the adapter again with
    # modules_to_save=['lm_head']": the same config, a loop)
    with pytest.raises(tying.TieError) as err:
        get_peft_model(M.gpt2(tie_word_embeddings=True), _config(["wte"], targets=["c_attn"]))
    advice = "pass modules_to_save=['lm_head'] with ensure_weight_tying=True"
    if advice not in str(err.value):
        return
    pm = get_peft_model(M.gpt2(tie_word_embeddings=True), _config(["lm_head"], targets=["c_attn"]))
    pm.save_pretrained(tmp_path)
    from_pretrained(M.gpt2(tie_word_embeddings=True), str(tmp_path))  # refused today
