"""Stop 56: a folder whose config flag disagrees with its file, accelerate's empty-weights
loading, ``to_empty``'s rotary buffer, and generation / gradient checkpointing on a
Plan-tied head, each against Hugging Face's own tie or plain HF on the same folder.

- A folder whose ``config.json`` says ``tie_word_embeddings: false`` while its file holds
  the embedding alone (written from a tied model) was refused telling the caller to pass
  ``plan=`` only; the refusal now names the flag that brings the head back.
- A folder that says ``true`` but holds two different tensors loads untied, both values
  kept, as plain HF loads it.
"""

from __future__ import annotations

import json

import pytest
import torch

import tying
from tests.interop import models as M

T = M.transformers
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
HEAD = tying.Plan([tying.share("lm_head.weight", like="model.embed_tokens.weight")])
X = M.ids(70, batch=2, seq=5)


def _set_flag(folder, value: bool) -> None:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["tie_word_embeddings"] = value
    path.write_text(json.dumps(cfg))


def test_a_flag_saying_untied_over_a_file_saved_tied_is_refused_naming_the_flag(tmp_path):
    saved = M.llama(tie_word_embeddings=True)
    saved.save_pretrained(tmp_path)
    _set_flag(tmp_path, False)  # the file holds model.embed_tokens.weight alone
    # before: "... no tie explains them: lm_head.weight; pass plan= (the plan the model was
    # saved with)", naming neither the flag nor HF's left-out head
    with pytest.raises(
        tying.TieError,
        match=r"lm_head\.weight; .*lm_head\.weight is the embedding .*config says "
        r"tie_word_embeddings=False.*load with tie_word_embeddings=True",
    ):
        tying.hf.from_pretrained(T.LlamaForCausalLM, tmp_path)
    # the fix it names gives the saved model (plain HF without it: a random head)
    ours = tying.hf.from_pretrained(T.LlamaForCausalLM, tmp_path, tie_word_embeddings=True)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert torch.equal(M.logits(ours, X), M.logits(saved, X))


def test_a_flag_saying_tied_over_two_different_tensors_loads_untied_as_plain_hf(tmp_path):
    saved = M.llama(tie_word_embeddings=False)
    saved.save_pretrained(tmp_path)
    _set_flag(tmp_path, True)
    ours = tying.hf.from_pretrained(T.LlamaForCausalLM, tmp_path)
    plain = T.LlamaForCausalLM.from_pretrained(tmp_path)
    assert plain.lm_head.weight is not plain.model.embed_tokens.weight  # HF keeps both
    assert ours.lm_head.weight is not ours.model.embed_tokens.weight
    assert torch.equal(ours.lm_head.weight, saved.lm_head.weight)
    assert torch.equal(M.logits(ours, X), M.logits(plain, X))


@pytest.mark.parametrize("order", ["before", "after"])
def test_accelerate_empty_weights_then_dispatch_keeps_a_plan_applied_before_or_after(
    tmp_path, order
):
    accelerate = pytest.importorskip("accelerate")
    src = M.llama()
    M.LLAMA_PLAN.apply(src)
    tying.hf.save_pretrained(src, tmp_path)
    with accelerate.init_empty_weights():
        model = T.LlamaForCausalLM(T.AutoConfig.from_pretrained(tmp_path))
    model.tie_weights()  # the folder's flag ties the head: accelerate asks for this first
    if order == "before":
        M.LLAMA_PLAN.apply(model)
    model = accelerate.load_checkpoint_and_dispatch(model, str(tmp_path), device_map={"": "cpu"})
    if order == "after":
        M.LLAMA_PLAN.apply(model)
    assert not any(p.is_meta for p in model.parameters())
    assert tying.verify(model) == tying.verify(src) == 7
    assert tying.count(model).physical == tying.count(src).physical
    assert torch.equal(M.logits(model, X), M.logits(src, X))


def test_to_empty_leaves_the_rotary_buffer_unset_tied_or_not_and_init_weights_restores_it():
    """HF's behaviour for every model, not a tie's: ``inv_freq`` is a non-persistent buffer,
    so neither ``to_empty`` nor a state dict gives it a value; ``init_weights`` recomputes
    it (docs/interop.md, "Meta-device init")."""
    fresh = M.llama()
    good = fresh.model.rotary_emb.inv_freq.clone()
    assert "model.rotary_emb.inv_freq" not in fresh.state_dict()
    for plan in (None, M.LLAMA_PLAN):
        with torch.device("meta"):
            model = T.LlamaForCausalLM(fresh.config)
        if plan is not None:
            plan.apply(model)
        model.to_empty(device="cpu")
        model.init_weights()
        assert torch.equal(model.model.rotary_emb.inv_freq, good)
        if plan is not None:
            assert tying.verify(model) == 7
            ref = M.llama()
            plan.apply(ref)
            model.load_state_dict(ref.state_dict())
            assert torch.equal(M.logits(model, X), M.logits(ref, X))


def _head_pair():
    hf = M.llama(tie_word_embeddings=True)
    ours = M.llama(tie_word_embeddings=False)
    ours.load_state_dict(hf.state_dict(), strict=False)
    HEAD.apply(ours)
    return hf, ours


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generate_on_a_plan_tied_head_gives_hf_tied_tokens(use_cache):
    hf, ours = _head_pair()
    mask = torch.ones_like(X)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, use_cache=use_cache)
    a = hf.generate(X, attention_mask=mask, **kw)
    b = ours.generate(X, attention_mask=mask, **kw)
    assert a.shape == (2, 11) and torch.equal(a, b)


def test_gradient_checkpointing_step_on_a_plan_tied_head_equals_hf_tie():
    hf, ours = _head_pair()
    for m in (hf, ours):
        m.train()
        m.config.use_cache = False
        m.gradient_checkpointing_enable()
        m(input_ids=X, labels=X).loss.backward()
        torch.optim.SGD(m.parameters(), lr=0.5).step()
    g_hf, g_ours = hf.model.embed_tokens.weight.grad, ours.model.embed_tokens.weight.grad
    assert g_hf.abs().sum() > 0 and torch.equal(g_hf, g_ours)
    assert torch.equal(hf.lm_head.weight, ours.lm_head.weight)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight and tying.verify(ours) == 1
