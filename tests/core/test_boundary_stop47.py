"""Stop 47: ``torch.func.functional_call`` and ``torch.nn.utils.prune`` over every relation.

1. ``functional_call(model, {source: w}, x, tie_weights=False)``: plain PyTorch, for a model
   tied by hand (``b.weight = a.weight``), replaces ``a.weight`` alone and ``b`` keeps the
   model's own tensor. A tied slot read the given ``w`` silently (other outputs, and the
   gradient of ``w`` got ``b``'s use too). Now refused at the slot's read, naming the slot,
   and the model is as it was; ``tie_weights=True`` (the default) reads ``w`` as torch does.
2. ``prune.global_unstructured`` over a ``Transposed`` slot failed with torch's own "view
   size is not compatible" (it flattens every tensor before it asks for any mask); now
   tying's refusal names the slot, nothing pruned.

Every exported relation is swept (the stop-42 sweep's ``CASES`` and guard).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call
from torch.nn.utils import prune

import tying
from tying.core.slots import slots_of

from .helpers import state_bytes
from .test_relation_sweep_stop42 import CASES, F64, Net, _by_hand, _exported_relations, _tied, _x


def test_the_sweep_covers_every_exported_relation():
    assert _exported_relations() == set(CASES)


def _given(net: Net, name: str, seed: int = 3) -> dict[str, torch.Tensor]:
    _, src, _, _ = CASES[name]
    g = torch.Generator().manual_seed(seed)
    return {
        f"a.{src}": torch.randn(getattr(net.a, src).shape, generator=g, dtype=F64),
        "b.weight": torch.randn(net.b.weight.shape, generator=g, dtype=F64),
    }


def _plain(name: str, net: Net, source, bias, scale=None) -> torch.Tensor:
    """What b computes in plain torch from ``source`` (the anchor, by hand)."""
    return _x() @ _by_hand(name, net, source, scale=scale).T + bias


@pytest.mark.parametrize("name", sorted(CASES))
def test_tie_weights_true_reads_the_given_source_like_a_hand_tie(name):
    net = _tied(name)
    _, src, _, _ = CASES[name]
    w = _given(net, name)[f"a.{src}"].requires_grad_()
    got = functional_call(net, {f"a.{src}": w}, (_x(),), tie_weights=True)
    torch.testing.assert_close(got, _plain(name, net, w, net.b.bias), rtol=0, atol=1e-12)
    if name == "Same":  # the anchor itself: a model tied by hand, same call
        hand = Net(name)
        hand.b.weight = hand.a.weight
        want = functional_call(hand, {"a.weight": w}, (_x(),), tie_weights=True)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        (g_got,) = torch.autograd.grad(got.sum(), w)
        (g_want,) = torch.autograd.grad(want.sum(), w)
        torch.testing.assert_close(g_got, g_want, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_tie_weights_false_with_another_source_is_refused_and_the_model_is_unchanged(name):
    net = _tied(name)
    _, src, _, rel = CASES[name]
    before, own, out = state_bytes(net), getattr(net.a, src), net(_x()).detach()
    w = _given(net, name)[f"a.{src}"]
    rel_name = type(rel).__name__
    with pytest.raises(
        tying.TieError,
        match=rf"functional_call\(\.\.\., tie_weights=False\) replaced a\.{src}, the source "
        rf"the tied slot b\.weight reads via {rel_name}\(.*Call functional_call with "
        rf"tie_weights=True .*or untie a copy first.*the model is unchanged",
    ):
        functional_call(net, {f"a.{src}": w}, (_x(),), tie_weights=False)
    assert getattr(net.a, src) is own and type(own) is nn.Parameter
    assert state_bytes(net) == before and torch.equal(net(_x()), out)
    assert tying.verify(net) == 1


def test_tie_weights_false_on_a_hand_tie_keeps_the_partner_which_a_slot_cannot():
    # the anchor for the refusal: plain torch's answer differs from the tied read
    net = _tied("Same")
    hand = Net("Same")
    hand.b.weight = hand.a.weight
    w = _given(net, "Same")["a.weight"]
    want = functional_call(hand, {"a.weight": w}, (_x(),), tie_weights=False)
    torch.testing.assert_close(want, _plain("Same", net, net.a.weight, net.b.bias))
    assert not torch.allclose(want, _plain("Same", net, w, net.b.bias))


@pytest.mark.parametrize("name", sorted(CASES))
def test_tie_weights_false_with_the_models_own_tensors_or_no_source_runs(name):
    net = _tied(name)
    want = net(_x()).detach()
    own = dict(net.named_parameters())  # both readings agree: the source is the model's own
    torch.testing.assert_close(functional_call(net, own, (_x(),), tie_weights=False), want)
    bias = torch.full_like(net.b.bias, 0.25)  # the source not given: nothing to untie
    got = functional_call(net, {"b.bias": bias}, (_x(),), tie_weights=False)
    _, src, _, _ = CASES[name]
    torch.testing.assert_close(
        got, _plain(name, net, getattr(net.a, src), bias), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize(
    "relation", [tying.Transposed(), tying.Mirrored(), tying.Scaled(2.0), tying.Hashed(5, seed=1)]
)
def test_tie_weights_false_on_a_slots_own_storage_reads_it_there_is_no_partner(relation):
    # a self re-parametrisation: the physical tensor has one use, so torch's untied reading
    # and the tie agree, and the call runs with the given value
    m = nn.Sequential(nn.Linear(4, 4, dtype=F64))
    tying.Plan([tying.share("0.weight", relation=relation)]).apply(m)
    x = _x()[:, :4]
    m(x)  # read once outside the call
    given = {n: torch.full_like(p, 0.1) for n, p in m.named_parameters() if n != "0.bias"}
    got = functional_call(m, given, (x,), tie_weights=False)
    extras = {r: given[f"0.{n}"] for r, n in slots_of(m[0])["weight"].storage.items()}
    w = relation(extras.pop("source"), shape=(4, 4), **extras)
    torch.testing.assert_close(got, x @ w.T + m[0].bias, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_fresh_copy_read_first_inside_an_untied_call_is_refused_too(name):
    # a deep copy has not read its source yet: a plain tensor is not the model's own
    net = copy.deepcopy(_tied(name))
    _, src, _, _ = CASES[name]
    with pytest.raises(tying.TieError, match=r"tie_weights=False\) replaced"):
        functional_call(net, {f"a.{src}": _given(net, name)[f"a.{src}"]}, (_x(),),
                        tie_weights=False)  # fmt: skip
    assert tying.verify(net) == 1


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("both", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_value_for_the_slot_is_refused_under_either_flag(name, both, tie_weights):
    net = _tied(name)
    _, src, _, _ = CASES[name]
    before = state_bytes(net)
    given = _given(net, name)
    if not both:
        del given[f"a.{src}"]
    with pytest.raises(
        tying.TieError, match=rf"given a value for b\.weight, a tied slot .*a\.{src} only"
    ):
        functional_call(net, given, (_x(),), tie_weights=tie_weights)
    assert state_bytes(net) == before and tying.verify(net) == 1


def _prune(how: str, net: Net) -> None:
    if how == "l1":
        prune.l1_unstructured(net.b, "weight", amount=0.5)
    elif how == "random":
        prune.random_unstructured(net.b, "weight", amount=0.5)
    elif how == "ln":
        prune.ln_structured(net.b, "weight", amount=0.5, n=2, dim=0)
    elif how == "identity":
        prune.identity(net.b, "weight")
    else:
        pairs = [(net.a, "weight"), (net.b, "weight")]
        prune.global_unstructured(pairs, prune.L1Unstructured, amount=0.3)


@pytest.mark.parametrize("how", ["l1", "random", "ln", "identity", "global"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_prune_of_every_relations_slot_is_tyings_refusal_with_nothing_pruned(name, how):
    net = _tied(name)
    before = state_bytes(net)
    where = r"global_unstructured: 'b\.weight' is a tied slot" if how == "global" else (
        r"prune on the tied slot 'b\.weight'"
    )  # fmt: skip
    with pytest.raises(tying.TieError, match=where + r" \(reads a\.\w+ via "):
        _prune(how, net)
    assert state_bytes(net) == before and tying.verify(net) == 1
    assert not prune.is_pruned(net.a) and not prune.is_pruned(net.b)
    with pytest.raises(ValueError, match=r"Parameter 'weight' of module .* has to be pruned"):
        prune.remove(net.b, "weight")  # nothing to remove: torch's own refusal, no change
    assert state_bytes(net) == before


def test_global_unstructured_over_a_transposed_slot_names_it_not_a_view_error():
    net = _tied("Transposed")
    with pytest.raises(tying.TieError, match=r"nothing was pruned\. List the physical tensor"):
        prune.global_unstructured([(net.b, "weight")], prune.RandomUnstructured, amount=0.5)


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    name=st.sampled_from(sorted(CASES)),
    tie_weights=st.booleans(),
    keys=st.sets(st.sampled_from(["source", "a.bias", "b.bias", "own source"]), max_size=3),
)
def test_functional_call_is_torchs_answer_or_a_refusal(name, tie_weights, keys):
    """Whatever the flag and dict: plain torch's answer for the same call (``b`` reads the
    given source under ``tie_weights=True``, the model's own otherwise), or a TieError
    with the model unchanged; never another number."""
    net = _tied(name)
    _, src, _, _ = CASES[name]
    before = state_bytes(net)
    own = {k: v.detach().clone() for k, v in net.named_parameters()}
    w = _given(net, name)[f"a.{src}"]
    given = {}
    for key in sorted(keys):
        if key == "source":
            given[f"a.{src}"] = w
        elif key == "own source":
            given.setdefault(f"a.{src}", getattr(net.a, src))
        else:
            given[key] = torch.full_like(own[key], 0.5)
    # plain torch unties here: b keeps the model's own source, which a tie cannot
    untied = not tie_weights and given.get(f"a.{src}", getattr(net.a, src)) is not getattr(
        net.a, src
    )
    try:
        got = functional_call(net, given, (_x(),), tie_weights=tie_weights)
    except tying.TieError:
        assert untied and state_bytes(net) == before
        return
    assert not untied
    source = given.get(f"a.{src}", own[f"a.{src}"]) if tie_weights else own[f"a.{src}"]
    bias = given.get("b.bias", own["b.bias"])
    want = _plain(name, net, source, bias, scale=own.get("b.weight_scale"))
    torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-12)
    assert state_bytes(net) == before
