"""Stop 38: loading a folder saved tied with ``tie_word_embeddings`` turned off.

A folder whose ``config.json`` ties the head to the embedding (HF's own tie, or a Plan
tie ``tying.hf`` hands to HF's flag) has no ``lm_head.weight``. Loaded with
``tie_word_embeddings=False`` (or a ``config=`` saying so), plain HF initialises the head
at random with a LOAD REPORT; tying refused it too, but told the caller to pass
``plan=``, which cannot bring the head back. The refusal now names the flag and gives
the fix that keeps the trained values.
"""

from __future__ import annotations

import pytest
import torch

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers
X = torch.arange(12)[None]


def _folder(tmp_path, how: str):
    if how == "hf_tie_hf_save":
        model = M.gpt2(tie_word_embeddings=True)
        model.save_pretrained(tmp_path)
    elif how == "hf_tie_tying_save":
        model = M.gpt2(tie_word_embeddings=True)
        hf.save_pretrained(model, tmp_path)
    else:  # a Plan tie, written as HF's flag by tying.hf
        model = M.gpt2()
        M.GPT2_PLAN.apply(model)
        hf.save_pretrained(model, tmp_path)
    return model


@pytest.mark.parametrize("how", ["hf_tie_hf_save", "hf_tie_tying_save"])
@pytest.mark.parametrize("via", ["kwarg", "config"])
def test_untying_on_load_a_head_the_file_omits_is_refused_naming_the_flag_and_the_fix(
    how, via, tmp_path
):
    model = _folder(tmp_path, how)
    config = T.GPT2Config.from_pretrained(tmp_path, tie_word_embeddings=False)
    kw = {"tie_word_embeddings": False} if via == "kwarg" else {"config": config}
    # plain HF: the head comes at random, no error (the defect tying must not repeat)
    plain = T.GPT2LMHeadModel.from_pretrained(tmp_path, **kw).eval()
    assert (plain(X).logits - model(X).logits).abs().max() > 0.05
    with pytest.raises(
        tying.TieError,
        match=r"lm_head\.weight is not in the file: the folder's config\.json has "
        r"tie_word_embeddings=true.*this load sets tie_word_embeddings=False.*"
        r"tying\.Plan\(\[tying\.free\('lm_head\.weight'\)\]\)\.apply\(model\); "
        r"model\.config\.tie_word_embeddings = False",
    ):
        hf.from_pretrained(T.GPT2LMHeadModel, tmp_path, **kw)  # was: "pass plan="
    # the fix the message gives keeps the trained head and unties it
    again = hf.from_pretrained(T.GPT2LMHeadModel, tmp_path).eval()
    tying.Plan([tying.free("lm_head.weight")]).apply(again)
    again.config.tie_word_embeddings = False
    assert again.lm_head.weight is not again.transformer.wte.weight
    assert torch.equal(again(X).logits, model(X).logits)
    out = hf.save_pretrained(again, tmp_path / "untied")
    reloaded = T.GPT2LMHeadModel.from_pretrained(out).eval()
    assert torch.equal(reloaded(X).logits, model(X).logits)


def test_a_plan_tied_head_saved_as_hfs_flag_loads_tied_also_with_the_flag_off(tmp_path):
    """The recorded plan re-makes the tie, so turning HF's flag off loses nothing."""
    model = _folder(tmp_path, "plan")
    again = hf.from_pretrained(T.GPT2LMHeadModel, tmp_path, tie_word_embeddings=False).eval()
    assert again.lm_head.weight is again.transformer.wte.weight
    assert torch.equal(again(X).logits, model(X).logits)


def test_a_folder_that_keeps_its_head_loads_with_the_flag_off_as_plain_hf(tmp_path):
    model = M.gpt2()  # untied: the head is in the file
    hf.save_pretrained(model, tmp_path)
    again = hf.from_pretrained(T.GPT2LMHeadModel, tmp_path, tie_word_embeddings=False).eval()
    plain = T.GPT2LMHeadModel.from_pretrained(tmp_path, tie_word_embeddings=False).eval()
    assert torch.equal(again(X).logits, plain(X).logits)
    assert torch.equal(again(X).logits, model(X).logits)
