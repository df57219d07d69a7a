"""Every peft option that trains HF's tied embedding/head: kept tied, or refused unchanged.

peft 0.21 has three ways to train a tied input embedding or output head:
``modules_to_save`` (kept tied with ``ensure_weight_tying=True``, stop 41),
``trainable_token_indices`` (peft gives the head the embedding's very token delta) and
``target_modules`` (with ``ensure_weight_tying=True`` peft shares the LoRA factors, but
its ``merge_and_unload`` writes the delta into the one shared weight twice). Each is
either accepted, and then trains, saves, loads and merges as the one tied tensor, or
refused with the model left as it was. peft's own ``pm.merge_and_unload()`` on an
accepted model gives the tied model back (it used to leave declarations that
``tying.verify`` reported as broken).
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tying
from tests.interop import models as M

peft = pytest.importorskip("peft", reason="the interop extra (peft) is not installed")
from tying.interop.lora import from_pretrained, get_peft_model, merge_and_unload  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated",
    "ignore:You have requested `ensure_weight_tying`",
)
# measured Δ <= 1.2e-7 (float summation order); a head that trains apart from the
# embedding, or a delta merged twice, is 2.0 off
TOL = {"atol": 1e-4, "rtol": 1e-4}
X = M.ids(70)
ROWS = [3, 5, 7]


def _hf_tied(seed: int = 0):
    model = M.llama(tie_word_embeddings=True, seed=seed)
    tying.hf.hf_ties_plan(model).apply(model)
    return model


def _logits(model):
    with torch.no_grad():
        return model(input_ids=X).logits


def _train(model, steps: int = 3, lr: float = 0.5) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=X, labels=X).loss.backward()
        opt.step()


def _lora(**kw):
    return peft.LoraConfig(r=2, lora_alpha=4, **kw)


#: every way a LoraConfig trains HF's tied embedding or head, and whether tying accepts it
OPTIONS = {
    "modules_to_save=embed, ensured": (
        lambda: _lora(
            target_modules=["q_proj"], modules_to_save=["embed_tokens"], ensure_weight_tying=True
        ),
        True,
    ),  # fmt: skip
    "modules_to_save=head, ensured": (
        lambda: _lora(
            target_modules=["q_proj"], modules_to_save=["lm_head"], ensure_weight_tying=True
        ),
        True,
    ),  # fmt: skip
    "modules_to_save=head": (
        lambda: _lora(target_modules=["q_proj"], modules_to_save=["lm_head"]),
        False,
    ),
    "trainable_token_indices=list": (
        lambda: _lora(target_modules=["q_proj"], trainable_token_indices=ROWS),
        True,
    ),
    "trainable_token_indices=list, ensured": (
        lambda: _lora(
            target_modules=["q_proj"], trainable_token_indices=ROWS, ensure_weight_tying=True
        ),
        True,
    ),  # fmt: skip
    "trainable_token_indices=embed": (
        lambda: _lora(target_modules=["q_proj"], trainable_token_indices={"embed_tokens": ROWS}),
        True,
    ),
    "trainable_token_indices=both, same rows": (
        lambda: _lora(
            target_modules=["q_proj"],
            trainable_token_indices={"embed_tokens": ROWS, "lm_head": ROWS},
        ),
        True,
    ),  # fmt: skip
    "trainable_token_indices=both, other rows": (
        lambda: _lora(
            target_modules=["q_proj"],
            trainable_token_indices={"embed_tokens": ROWS, "lm_head": [3, 9]},
        ),
        False,
    ),  # fmt: skip
    "trainable_token_indices=head": (
        lambda: _lora(target_modules=["q_proj"], trainable_token_indices={"lm_head": ROWS}),
        False,
    ),
    "target_modules=embed, ensured": (
        lambda: _lora(target_modules=["q_proj", "embed_tokens"], ensure_weight_tying=True),
        False,
    ),
    "target_modules=head, ensured": (
        lambda: _lora(target_modules=["q_proj", "lm_head"], ensure_weight_tying=True),
        False,
    ),
    "target_modules=head": (lambda: _lora(target_modules=["q_proj", "lm_head"]), False),
}
# LoraConfig fields that only exclude, or name tokens for aLoRA's invocation (no module)
NOT_TRAINING_MODULES = {"exclude_modules", "alora_invocation_tokens"}


def test_every_lora_option_that_names_modules_is_swept():
    """A peft release that adds a field naming modules to train must be added to OPTIONS."""
    fields = {
        f.name
        for f in dataclasses.fields(peft.LoraConfig)
        if "module" in f.name or "token" in f.name
    }
    swept = {name.split("=")[0] for name in OPTIONS}
    assert fields - NOT_TRAINING_MODULES <= swept, sorted(fields - NOT_TRAINING_MODULES - swept)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_option_keeps_the_tie_through_training_and_merging_or_is_refused(name):
    make, accepted = OPTIONS[name]
    model = _hf_tied()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if not accepted:
        with pytest.raises(tying.TieError, match="lm_head.weight <- model.embed_tokens.weight"):
            get_peft_model(model, make())
        assert type(model.lm_head) is torch.nn.Linear  # peft's wrappers undone
        assert model.lm_head.weight is model.model.embed_tokens.weight
        after = model.state_dict()
        assert after.keys() == before.keys()
        assert all(torch.equal(after[k], before[k]) for k in before)
        return
    pm = get_peft_model(model, make())
    _train(pm)
    tying.verify(pm)
    got = _logits(pm)
    merged = merge_and_unload(pm)
    assert merged.lm_head.weight is merged.model.embed_tokens.weight
    tying.verify(merged)
    torch.testing.assert_close(_logits(merged), got, **TOL)


def _masked_reference(pm, seed: int, steps: int, lr: float, rows):
    """Plain PyTorch: HF's tied Llama (one tensor for embedding and head) with only the
    rows ``rows`` of that tensor trained, and q_proj plus ``scaling * B(A(x))`` by a hook
    from the adapter model's initial LoRA factors: what trainable_token_indices means."""
    ref = M.llama(tie_word_embeddings=True, seed=seed)
    ref.requires_grad_(False)
    emb = ref.model.embed_tokens.weight
    assert ref.lm_head.weight is emb
    emb.requires_grad_(True)
    params = [emb]
    for layer, theirs in zip(ref.model.layers, pm.base_model.model.model.layers, strict=True):
        q = theirs.self_attn.q_proj
        a = q.lora_A["default"].weight.detach().clone().requires_grad_(True)
        b = q.lora_B["default"].weight.detach().clone().requires_grad_(True)
        params += [a, b]

        def hook(_mod, args, out, a=a, b=b, scale=q.scaling["default"]):
            return out + scale * (args[0] @ a.T @ b.T)

        layer.self_attn.q_proj.register_forward_hook(hook)
    keep = torch.zeros(emb.shape[0], 1)
    keep[list(rows)] = 1.0
    opt = torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        ref(input_ids=X, labels=X).loss.backward()
        emb.grad.mul_(keep)  # the other rows are frozen
        opt.step()
    return ref


@pytest.mark.parametrize(
    "tokens", [ROWS, {"embed_tokens": ROWS}, {"embed_tokens": ROWS, "lm_head": ROWS}]
)
def test_trainable_tokens_on_the_tied_embedding_train_save_load_and_merge_as_one_tensor(tokens):
    # was refused ("peft would train a private copy"); peft gives the head the embedding's
    # very token delta, so the tie holds
    pm = get_peft_model(
        _hf_tied(), _lora(target_modules=["q_proj"], trainable_token_indices=tokens)
    )
    base = pm.base_model.model
    assert base.lm_head.token_adapter.tied_adapter is base.model.embed_tokens.token_adapter
    ref = _masked_reference(pm, 0, steps=3, lr=0.5, rows=ROWS)
    _train(pm, steps=3, lr=0.5)
    tying.verify(pm)
    got = _logits(pm)
    # the anchors: plain PyTorch (rows 3, 5, 7 of the one tied tensor trained), and peft
    torch.testing.assert_close(got, _logits(ref), **TOL)
    torch.manual_seed(0)
    theirs = peft.get_peft_model(
        M.llama(tie_word_embeddings=True),
        _lora(target_modules=["q_proj"], trainable_token_indices=tokens),
    )
    for layer, mine in zip(theirs.base_model.model.model.layers, base.model.layers, strict=True):
        for part in ("lora_A", "lora_B"):
            getattr(layer.self_attn.q_proj, part)["default"].weight.data.copy_(
                getattr(mine.self_attn.q_proj, part)["default"].weight.data
            )
    _train(theirs, steps=3, lr=0.5)
    torch.testing.assert_close(got, _logits(theirs), **TOL)
    with tempfile.TemporaryDirectory() as folder:
        pm.save_pretrained(folder)
        loaded = from_pretrained(_hf_tied(), folder)
    tying.verify(loaded)
    assert torch.equal(_logits(loaded), got)
    merged = merge_and_unload(pm)
    assert merged.lm_head.weight is merged.model.embed_tokens.weight
    tying.verify(merged)
    torch.testing.assert_close(_logits(merged), got, **TOL)
    torch.testing.assert_close(
        merged.model.embed_tokens.weight, ref.model.embed_tokens.weight, **TOL
    )


def test_lora_on_the_tied_head_is_refused_saying_peft_merges_it_twice():
    model = _hf_tied()
    with pytest.raises(tying.TieError, match=r"writes that delta into the one shared weight twice"):
        get_peft_model(model, _lora(target_modules=["q_proj", "lm_head"], ensure_weight_tying=True))
    assert type(model.lm_head) is torch.nn.Linear
    # the anchor of the refusal: plain peft's merged model is off the adapter model
    theirs = peft.get_peft_model(
        M.llama(tie_word_embeddings=True),
        _lora(target_modules=["q_proj", "lm_head"], ensure_weight_tying=True),
    )
    _train(theirs, lr=0.5)
    before = _logits(theirs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns that a tied layer is in the adapter
        merged = theirs.merge_and_unload()
    assert (_logits(merged) - before).abs().max() > 100 * TOL["atol"]  # the delta counted twice


def _shared_sequential():
    m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    tying.Plan([tying.share("2", like="0")]).apply(m)
    return m


@pytest.mark.parametrize("on", ["peft_model", "tuner"])
@pytest.mark.parametrize("how", ["merge_and_unload", "unload"])
@pytest.mark.parametrize("case", ["modules_to_save", "tokens", "shared"])
def test_peft_own_merge_and_unload_gives_the_tied_model_back(case, how, on):
    # plain pm.merge_and_unload() left declarations inside peft's wrappers (verify: "no such
    # parameter any more") or a shared wrapper at one of its paths ("adapter sits on the tie")
    if case == "shared":
        torch.manual_seed(0)
        base, x = _shared_sequential(), torch.randn(3, 8)
        with torch.no_grad():
            plain = base(x)  # the base model's outputs, before any adapter
        pm = get_peft_model(
            base, peft.LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False)
        )
        with torch.no_grad():
            adapted = pm(x)
        out = getattr(pm if on == "peft_model" else pm.base_model, how)()
        assert out[2].weight is out[0].weight and type(out[0]) is torch.nn.Linear
        assert "base_layer" not in out[2]._modules  # no wrapper left at the tied path
        with torch.no_grad():
            if how == "merge_and_unload":
                torch.testing.assert_close(out(x), adapted, **TOL)
            else:  # the tuner's plain unload left the delta at '2': outputs off
                assert torch.equal(out(x), plain)
    else:
        option = (
            {"modules_to_save": ["lm_head"], "ensure_weight_tying": True}
            if case == "modules_to_save"
            else {"trainable_token_indices": ROWS}
        )
        pm = get_peft_model(_hf_tied(), _lora(target_modules=["q_proj"], **option))
        _train(pm)
        want = _logits(pm)
        out = getattr(pm if on == "peft_model" else pm.base_model, how)()
        assert out.lm_head.weight is out.model.embed_tokens.weight
        if how == "merge_and_unload":
            torch.testing.assert_close(_logits(out), want, **TOL)
    assert tying.verify(out) > 0


@settings(
    derandomize=True,
    deadline=None,
    max_examples=5,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(sorted(OPTIONS)),
    seed=st.integers(0, 3),
    lr=st.sampled_from([0.05, 0.5]),
)
def test_property_an_accepted_option_trains_as_the_one_tied_tensor(name, seed, lr):
    """Whatever option, model and step size: accepted means the merged model (one tied
    tensor) computes the adapter model's logits; else refused with the tie in place."""
    make, _ = OPTIONS[name]
    model = _hf_tied(seed)
    try:
        pm = get_peft_model(model, make())
    except tying.TieError:
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert type(model.lm_head) is torch.nn.Linear
        return
    _train(pm, steps=2, lr=lr)
    got = _logits(pm)
    merged = pm.merge_and_unload()  # peft's own call
    assert merged.lm_head.weight is merged.model.embed_tokens.weight
    tying.verify(merged)
    torch.testing.assert_close(_logits(merged), got, **TOL)
