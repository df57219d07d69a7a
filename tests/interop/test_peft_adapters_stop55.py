"""peft methods other than LoRA, and second adapters, on tied models (stop 55).

Two ways ``merge_and_unload`` merged right and then failed, leaving the model half
merged: LNTuning's merge swaps its tuned copy in for the tie's source module (the tied
path then read a module no longer in the model: "declared ties broken"), and a plan
re-applied while shared IA3 adapters were in place (``tying.hf.resize_token_embeddings``)
declared hand ties through ``ia3_l`` that the merge removes. The anchors are plain torch
with the adapter's values at every use, and the adapter model's own logits.

A second adapter (``add_adapter`` / ``load_adapter``) with a ``modules_to_save`` copy of
a head tied to the embedding by HF was accepted: peft's add leaves the first adapter active,
and after ``set_adapter`` the head and the embedding ran separate tensors and trained apart.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tying
import tying.hf

peft = pytest.importorskip("peft", reason="the interop extra: pip install 'tying[interop]'")

from tests.interop import models as M  # noqa: E402
from tying.interop.lora import get_peft_model, merge_and_unload  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _stack():
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Linear(8, 8),
        torch.nn.LayerNorm(8),
        torch.nn.Linear(8, 8),
        torch.nn.LayerNorm(8),  # 3: tied whole to 1
    )
    tying.Plan([tying.share("3", like="1")]).apply(m)
    return m


def _by_hand(m, weight, bias, x):
    """The tied stack in plain torch with the LayerNorm values ``weight``/``bias`` at both uses."""
    h = F.layer_norm(m[0](x), (8,), weight, bias)
    return F.layer_norm(m[2](h), (8,), weight, bias)


@pytest.mark.parametrize("merged_first", [False, True])
def test_ln_tuning_on_a_tied_layernorm_merges_into_the_one_tensor_both_uses_read(merged_first):
    m = _stack()
    x = torch.randn(5, 8)
    pm = get_peft_model(m, peft.LNTuningConfig(target_modules=["1", "3"]))
    trained = [p for p in pm.parameters() if p.requires_grad]
    assert len(trained) == 2  # one tuned LayerNorm for both uses
    with torch.no_grad():
        for p in trained:
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        want = pm(x)
        weight, bias = (t.clone() for t in trained)
        torch.testing.assert_close(want, _by_hand(m, weight, bias, x), rtol=0, atol=1e-6)
    if merged_first:  # LNTuning's merge_adapter swaps the tuned copy in as the base layer
        pm.merge_adapter()
    merged = merge_and_unload(pm)
    assert merged[3].weight is merged[1].weight and tying.verify(merged) == 2
    with torch.no_grad():
        torch.testing.assert_close(merged(x), want, rtol=0, atol=1e-6)
        torch.testing.assert_close(merged[1].weight, weight, rtol=0, atol=0)


def test_shared_ia3_adapters_merge_after_a_resize_reapplied_the_plan():
    model = M.gpt2()
    M.GPT2_PLAN.apply(model)
    n_ties = tying.verify(model)
    config = peft.IA3Config(
        target_modules=["c_attn"], feedforward_modules=[], fan_in_fan_out=True,
        init_ia3_weights=False,
    )  # fmt: skip
    pm = get_peft_model(model, config)
    tying.hf.resize_token_embeddings(pm.base_model.model, 120, mean_resizing=False)
    x = torch.randint(0, 120, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = pm(x).logits
    merged = merge_and_unload(pm)
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, want, rtol=0, atol=1e-5)
    assert tying.verify(merged) == n_ties
    assert merged.lm_head.weight is merged.transformer.wte.weight


def _head_copy(ensure):
    return peft.LoraConfig(
        r=2, target_modules=["q_proj"], modules_to_save=["lm_head"],
        ensure_weight_tying=ensure, init_lora_weights=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "first, second",
    [
        (_head_copy(True), _head_copy(True)),  # peft copies the head for "b", not the embedding
        (peft.LoraConfig(r=2, target_modules=["q_proj"]), _head_copy(False)),
    ],
    ids=["both-ensure_weight_tying", "second-without"],
)
def test_a_second_adapter_whose_head_copy_would_train_apart_is_refused_and_nothing_changes(
    first, second
):
    """peft's add_adapter leaves the first adapter active, so the check after it passed;
    after ``set_adapter("b")`` the head ran its own copy and the embedding the original,
    and they trained apart with no error (stop 55)."""
    pm = get_peft_model(M.llama(tie_word_embeddings=True), first)
    x = M.ids(70)
    with torch.no_grad():
        before = pm(x).logits
    wrappers = {p: type(m) for p, m in pm.named_modules()}
    with pytest.raises(tying.TieError, match=r"add_adapter\('b'\): with the new adapter active"):
        pm.add_adapter("b", second)
    assert list(pm.peft_config) == ["default"]
    assert {p: type(m) for p, m in pm.named_modules()} == wrappers
    with torch.no_grad():
        torch.testing.assert_close(pm(x).logits, before, rtol=0, atol=0)
    base = pm.base_model.model
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.1)
    pm(x).logits.logsumexp(-1).sum().backward()
    opt.step()
    assert tying.verify(pm) >= 1
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    torch.testing.assert_close(head(emb.weight[:3]), emb.weight[:3] @ emb.weight.T)


def test_a_second_adapter_whose_head_copy_peft_ties_is_accepted():
    pm = get_peft_model(
        M.llama(tie_word_embeddings=True), peft.LoraConfig(r=2, target_modules=["q_proj"])
    )
    pm.add_adapter("b", _head_copy(True))
    pm.set_adapter("b")
    base = pm.base_model.model
    assert (
        base.lm_head.modules_to_save["b"].weight
        is base.model.embed_tokens.modules_to_save["b"].weight
    )
    assert tying.verify(pm) >= 1


def test_load_adapter_of_a_head_copy_adapter_as_a_second_adapter_is_refused(tmp_path):
    """peft's load_adapter gave the embedding a copy for the new adapter and the head none:
    the embedding trained, the head kept the original (stop 55)."""
    from tying.interop.lora import from_pretrained

    get_peft_model(M.llama(tie_word_embeddings=True), _head_copy(True)).save_pretrained(tmp_path)
    pm = from_pretrained(M.llama(tie_word_embeddings=True), tmp_path)
    state = {k: v.clone() for k, v in pm.state_dict().items()}
    with pytest.raises(
        tying.TieError, match=r"add_adapter\('again'\): with the new adapter .*load"
    ):
        pm.load_adapter(tmp_path, adapter_name="again")
    assert list(pm.peft_config) == ["default"]
    assert pm.state_dict().keys() == state.keys()
    assert tying.verify(pm) >= 1
