"""Stop 39: a hand tie (HF's ``tie_word_embeddings``) that peft's ``modules_to_save`` copied.

peft's own ``get_peft_model(model, LoraConfig(modules_to_save=["lm_head"]))`` keeps the tied
head as ``lm_head.original_module`` and runs a trained deep copy of it instead. The
embedding and the unused original still hold one Parameter, so ``tying.verify`` counted the
tie as holding while the logits read a separate tensor that trains apart from the
embedding. It is now reported broken; peft's ``ensure_weight_tying=True`` (which ties the
copies) and a disabled adapter (the original runs) still verify.

The other way round: peft's ``trainable_token_indices`` on a tied embedding gives the head
a token layer that shares the embedding's delta Parameters, and the logits read exactly
the embedding's rows, but ``tying.verify`` refused it as two adapters whose delta "does not
reach the other use". It now verifies; a head layer with deltas of its own is refused.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying

os.environ.setdefault("HF_HUB_OFFLINE", "1")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16, bos_token_id=0,
        eos_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg)


def _peft(model: nn.Module, **extra) -> nn.Module:
    cfg = peft.LoraConfig(r=2, target_modules=["c_attn"], modules_to_save=["lm_head"], **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on tied weights and fan_in_fan_out
        return peft.get_peft_model(model, cfg)


def test_modules_to_save_copy_of_a_tied_head_is_reported_broken():
    pm = _peft(_gpt2()).eval()  # no dropout
    inner = pm.base_model.model
    # the anchor: peft's forward reads the copy, not the embedding the tie names
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        # as training would (not a constant: ln_f's output sums to 0 over features)
        inner.lm_head.modules_to_save["default"].weight.add_(torch.randn(50, 16))
        hidden = inner.transformer(ids).last_hidden_state
        logits = pm(input_ids=ids).logits
    copy_w = inner.lm_head.modules_to_save["default"].weight
    assert torch.allclose(logits, hidden @ copy_w.T, atol=1e-5)
    assert (logits - hidden @ inner.transformer.wte.weight.T).abs().max() > 1.0
    with pytest.raises(
        tying.TieError,
        match=r"1 declared tie\(s\) broken: base_model\.model\.lm_head\.original_module\.weight: "
        r"holds the same nn\.Parameter as base_model\.model\.transformer\.wte\.weight .*"
        r"modules_to_save wrapper at 'base_model\.model\.lm_head' runs its trained copy "
        r"\(base_model\.model\.lm_head\.modules_to_save\.default\.weight\).*ensure_weight_tying=True",
    ):
        tying.verify(pm)


def test_broken_copy_message_does_not_offer_retie():
    pm = _peft(_gpt2())
    with pytest.raises(tying.TieError) as err:
        tying.verify(pm)
    assert "retie" not in str(err.value)  # retie would re-tie the unused original only


def test_ensure_weight_tying_and_disabled_adapter_still_verify():
    pm = _peft(_gpt2(), ensure_weight_tying=True)
    inner = pm.base_model.model
    assert inner.lm_head.weight is inner.transformer.wte.weight  # peft tied the copies
    assert tying.verify(pm) == 2
    plain = _peft(_gpt2())
    with plain.disable_adapter():  # the original module runs: the tie holds
        assert tying.verify(plain) == 1
    with pytest.raises(tying.TieError, match="modules_to_save wrapper"):
        tying.verify(plain)  # and is broken again once the adapter is back


def test_verify_without_peft_still_counts_hf_tie():
    model = _gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert tying.verify(model) == 1


def _tokens(model: nn.Module) -> nn.Module:
    cfg = peft.LoraConfig(r=2, target_modules=["c_attn"], trainable_token_indices=[1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, cfg).eval()
    with torch.no_grad():  # as training would
        delta = pm.base_model.model.transformer.wte.token_adapter.trainable_tokens_delta
        delta["default"].add_(torch.randn(2, 16))
    return pm


def _head_gap(pm: nn.Module) -> float:
    """max |logits - hidden @ (the embedding table the model reads)^T|."""
    inner = pm.base_model.model
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        table = inner.transformer.wte(torch.arange(50))  # (V, C), token deltas included
        hidden = inner.transformer(ids).last_hidden_state  # (1, T, C)
        return (pm(input_ids=ids).logits - hidden @ table.T).abs().max().item()


def test_trainable_tokens_on_a_tied_embedding_verify():
    torch.manual_seed(1)
    pm = _tokens(_gpt2())
    assert _head_gap(pm) < 1e-5  # the anchor: the head reads the embedding's rows
    assert tying.verify(pm) == 2  # the base weight and the shared delta
    merged = pm.merge_and_unload()
    assert merged.lm_head.weight is merged.transformer.wte.weight
    assert tying.verify(merged) == 1


def test_a_head_token_layer_with_deltas_of_its_own_is_refused():
    torch.manual_seed(1)
    pm = _tokens(_gpt2())
    head = pm.base_model.model.lm_head.token_adapter
    own = nn.ParameterDict({"default": nn.Parameter(torch.randn(2, 16))})
    head.trainable_tokens_delta = own  # the head's rows now differ from the embedding's
    assert _head_gap(pm) > 0.1
    with pytest.raises(tying.TieError, match=r"wrapped by different peft adapters"):
        tying.verify(pm)


class _Seats(nn.Module):
    """Four Linear seats run in order, then a head for LoRA to target."""

    def __init__(self, classes: list[int]) -> None:
        super().__init__()
        self.seats = nn.ModuleDict({f"s{i}": nn.Linear(4, 4) for i in range(len(classes))})
        for i, c in enumerate(classes):  # hand ties: seat i holds seat c's Parameter
            if c != i:
                self.seats[f"s{i}"].weight = self.seats[f"s{c}"].weight
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        for lin in self.seats.values():
            x = torch.tanh(lin(x))
        return self.head(x)


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    classes=st.lists(st.integers(0, 3), min_size=2, max_size=4).map(
        lambda cs: [min(c, i) for i, c in enumerate(cs)]  # a seat ties to itself or one before
    ),
    saved=st.sets(st.integers(0, 3), max_size=3),
)
def test_verify_raises_iff_the_forward_reads_a_tie_apart(classes, saved):
    torch.manual_seed(0)
    model = _Seats(classes)
    names = [f"s{i}" for i in sorted(saved) if i < len(classes)]
    cfg = peft.LoraConfig(r=2, target_modules=["head"], modules_to_save=names or None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, cfg)
    # brute force: the weight object each seat's forward really multiplies by
    read: dict[int, int] = {}
    hooks = []
    for i in range(len(classes)):
        seat = pm.base_model.model.seats[f"s{i}"]
        for m in seat.modules():
            if type(m) is nn.Linear:
                hooks.append(
                    m.register_forward_hook(
                        lambda mod, a, o, i=i: read.__setitem__(i, id(mod.weight))
                    )
                )
    pm(torch.randn(1, 4))
    for h in hooks:
        h.remove()
    apart = any(
        len({read[i] for i in range(len(classes)) if classes[i] == c}) > 1 for c in set(classes)
    )
    if apart:
        with pytest.raises(tying.TieError, match="modules_to_save wrapper"):
            tying.verify(pm)
    else:
        assert tying.verify(pm) == sum(c != i for i, c in enumerate(classes))
