"""peft's ``ensure_weight_tying=True`` with ``modules_to_save`` on a tied embedding/head.

peft 0.21 keeps HF's ``tie_word_embeddings`` through ``modules_to_save`` when asked
(one trained copy for embedding and head, through training, save/load and merging):
``get_peft_model`` accepts it there and refuses every other tie, saying why.
"""

from __future__ import annotations

import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tying
from tests.interop import models as M

peft = pytest.importorskip("peft", reason="the interop extra (peft) is not installed")
from tying.interop.lora import (  # noqa: E402
    from_pretrained,
    get_peft_model,
    merge_and_unload,
    unload,
)

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")
# measured Δ = 0 at lr 0.5 (the room is for float summation order on other builds); a
# private head copy that trains apart from the embedding (plain peft without
# ensure_weight_tying) is 5.7 off in the logits
TOL = {"atol": 1e-4, "rtol": 1e-4}


def _hf_tied(seed: int = 0):
    """A Llama with HF's own tie, declared to tying as tying.hf.from_pretrained does."""
    model = M.llama(tie_word_embeddings=True, seed=seed)
    tying.hf.hf_ties_plan(model).apply(model)
    return model


def _config(entry: str, **kw):
    return peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj"], modules_to_save=[entry], **kw
    )


def _copies(pm):
    base = pm.base_model.model
    emb = base.model.embed_tokens.modules_to_save["default"].weight
    head = base.lm_head.modules_to_save["default"].weight
    return emb, head


def _train(model, x, steps: int, lr: float) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        opt.step()


def _factors(pm) -> list:
    """Each layer's LoRA ``(A, B, scaling)`` on q_proj, copied (before training)."""
    out = []
    for layer in pm.base_model.model.model.layers:
        q = layer.self_attn.q_proj
        out.append(
            (
                q.lora_A["default"].weight.detach().clone(),
                q.lora_B["default"].weight.detach().clone(),
                q.scaling["default"],
            )
        )
    return out


def _plain_torch_reference(factors, seed: int, x, steps: int, lr: float):
    """The same fine-tune in plain PyTorch: HF's tied model (one embedding tensor for
    input and head) trained whole, q_proj plus ``scaling * B(A(x))`` by a hook, the LoRA
    factors starting from the adapter model's initial ones."""
    ref = M.llama(tie_word_embeddings=True, seed=seed)
    ref.requires_grad_(False)
    emb = ref.model.embed_tokens.weight
    assert ref.lm_head.weight is emb
    emb.requires_grad_(True)
    params = [emb]
    for layer, (a0, b0, scale) in zip(ref.model.layers, factors, strict=True):
        a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        params += [a, b]

        def hook(_mod, args, out, a=a, b=b, scale=scale):
            return out + scale * (args[0] @ a.T @ b.T)

        layer.self_attn.q_proj.register_forward_hook(hook)
    opt = torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        ref(input_ids=x, labels=x).loss.backward()
        opt.step()
    return ref


@pytest.mark.parametrize("entry", ["embed_tokens", "lm_head"])
def test_ensure_weight_tying_keeps_the_hf_tie_through_train_save_load_merge(entry):
    # was refused ("peft would train a private copy"); peft keeps this tie: one copy
    x = M.ids(70)
    pm = get_peft_model(_hf_tied(), _config(entry, ensure_weight_tying=True))
    emb, head = _copies(pm)
    assert emb is head
    start, factors = emb.detach().clone(), _factors(pm)
    _train(pm, x, steps=3, lr=0.5)
    assert (emb.detach() - start).abs().max() > 1e-2  # the copy trained
    assert _copies(pm)[0] is _copies(pm)[1]
    assert tying.verify(pm) > 0
    with torch.no_grad():
        got = pm(input_ids=x).logits
    # the anchors: plain PyTorch on HF's tied model, and peft's own get_peft_model
    ref = _plain_torch_reference(factors, 0, x, steps=3, lr=0.5)
    torch.testing.assert_close(emb.detach(), ref.model.embed_tokens.weight.detach(), **TOL)
    with torch.no_grad():
        torch.testing.assert_close(got, ref(input_ids=x).logits, **TOL)
    theirs = peft.get_peft_model(
        M.llama(tie_word_embeddings=True), _config(entry, ensure_weight_tying=True)
    )
    _train(theirs, x, steps=3, lr=0.5)
    with torch.no_grad():
        torch.testing.assert_close(got, theirs(input_ids=x).logits)
    # save, load onto a fresh base: one copy again, the same logits
    with tempfile.TemporaryDirectory() as folder:
        pm.save_pretrained(folder)
        loaded = from_pretrained(_hf_tied(), folder)
    assert _copies(loaded)[0] is _copies(loaded)[1]
    assert torch.equal(_copies(loaded)[0], emb.detach())
    tying.verify(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, got)
    # merged: the trained copy is the one tied tensor of the plain model
    merged = merge_and_unload(pm)
    assert merged.lm_head.weight is merged.model.embed_tokens.weight
    assert torch.equal(merged.model.embed_tokens.weight, emb.detach())
    tying.verify(merged)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x).logits, got)


@pytest.mark.parametrize("how", [merge_and_unload, unload])
def test_unloading_puts_the_declarations_back(how):
    # the ties were declared through original_module while wrapped; unloaded, the
    # modules are back at their paths and so are the declarations
    model = _hf_tied()
    before = dict(model.__dict__["_tying_declared"])
    pm = get_peft_model(model, _config("lm_head", ensure_weight_tying=True))
    wrapped = pm.base_model.model.__dict__["_tying_declared"]
    assert set(wrapped) == {"lm_head.original_module.weight"}
    assert wrapped["lm_head.original_module.weight"]["like"] == (
        "model.embed_tokens.original_module.weight"
    )
    base = how(pm)
    assert base.__dict__["_tying_declared"] == before
    assert base.lm_head.weight is base.model.embed_tokens.weight
    assert tying.verify(base) == tying.verify(_hf_tied())


def test_ensure_weight_tying_does_not_keep_a_plan_tie_and_says_so():
    # a tying plan's head (TiedLinear reading the embedding) is no HF tie: peft copies it
    model = M.llama(tie_word_embeddings=False)
    M.LLAMA_PLAN.apply(model)
    with pytest.raises(
        tying.TieError,
        match=r"modules_to_save 'lm_head' .*lm_head\.weight <- model\.embed_tokens\.weight.*"
        r"ensure_weight_tying=True does not keep it: peft ties the copies only for HF's own "
        r"tie_word_embeddings",
    ):
        get_peft_model(model, _config("lm_head", ensure_weight_tying=True))
    tying.verify(model)


def test_ensure_weight_tying_on_bart_is_refused_naming_the_embeddings_peft_would_replace():
    # BART ties encoder and decoder embed_tokens and lm_head to model.shared: peft's
    # ensure_weight_tying seats a Linear in place of each tied embedding (plain peft: the
    # forward fails with a shape error), so none is accepted
    model, _ = M.more("bart", "hf")
    with pytest.raises(
        tying.TieError,
        match=r"modules_to_save 'lm_head' .*lm_head\.weight <- model\.shared\.weight.*seat a "
        r"Linear in place of the tied embedding\(s\) 'model\.decoder\.embed_tokens', "
        r"'model\.encoder\.embed_tokens'",
    ):
        get_peft_model(model, _config("lm_head", ensure_weight_tying=True))
    assert not any(type(m).__name__ == "ModulesToSaveWrapper" for m in model.modules())
    tying.verify(model)


def test_without_ensure_weight_tying_the_hf_tie_is_refused_naming_the_option():
    model = _hf_tied()
    with pytest.raises(
        tying.TieError,
        match=r"modules_to_save 'lm_head' .*hand-made tie lm_head\.weight <- "
        r"model\.embed_tokens\.weight.*pass ensure_weight_tying=True to the LoraConfig",
    ):
        get_peft_model(model, _config("lm_head"))
    assert type(model.lm_head) is torch.nn.Linear
    assert model.lm_head.weight is model.model.embed_tokens.weight


@settings(
    derandomize=True,
    deadline=None,
    max_examples=4,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    entry=st.sampled_from(["embed_tokens", "lm_head"]),
    seed=st.integers(0, 3),
    steps=st.integers(1, 3),
    lr=st.sampled_from([0.05, 0.2, 0.5]),
)
def test_property_an_accepted_copy_trains_as_the_one_tied_tensor(entry, seed, steps, lr):
    # whatever is accepted, embedding and head stay one tensor and train as plain
    # PyTorch trains HF's tied model (a private copy would diverge from it)
    x = M.ids(70, seed=seed + 1)
    pm = get_peft_model(_hf_tied(seed), _config(entry, ensure_weight_tying=True))
    factors = _factors(pm)
    _train(pm, x, steps=steps, lr=lr)
    emb, head = _copies(pm)
    assert emb is head
    ref = _plain_torch_reference(factors, seed, x, steps=steps, lr=lr)
    torch.testing.assert_close(emb.detach(), ref.model.embed_tokens.weight.detach(), **TOL)
    with torch.no_grad():
        torch.testing.assert_close(pm(input_ids=x).logits, ref(input_ids=x).logits, **TOL)
    tying.verify(pm)
