"""Stop 60: ``functional_call`` on a part of a tied model, given a value for a tied slot,
named the source by its path from the plan's root, so the advice failed when followed:
``pass the value under embed.weight`` on ``model.head`` raised torch's ``AttributeError``
(``TiedLinear has no attribute `embed```), and ``body.0.weight`` on ``model.body`` (whose key
is ``0.weight``) did the same. The refusal now names the keys of the module called, and a
source outside the part gets the untied copy that works.
"""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

import tying


def _model():
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "embed": nn.Embedding(10, 4),
            "body": nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)),
            "head": nn.Linear(4, 10, bias=False),
        }
    )
    tying.Plan(
        [
            tying.share("body.1.weight", like="body.0.weight"),
            tying.share("head.weight", like="embed.weight"),
        ]
    ).apply(model)
    return model


def test_a_part_holding_the_source_names_the_parts_own_key_and_the_advice_works():
    model = _model()
    w, x = torch.randn(4, 4), torch.randn(2, 4)
    with pytest.raises(
        tying.TieError,
        match=r"given a value for '1\.weight' \(body\.1\.weight\).*under 0\.weight only",
    ):
        functional_call(model.body, {"1.weight": w}, (x,))
    assert model.body[1].weight is model.body[0].weight  # as it was
    out = functional_call(model.body, {"0.weight": w}, (x,))  # the advice, followed
    b0, b1 = model.body[0].bias, model.body[1].bias
    torch.testing.assert_close(out, (x @ w.T + b0) @ w.T + b1)


def test_a_part_without_the_source_names_it_outside_and_the_untied_copy_works():
    model = _model()
    w, x = torch.randn(10, 4), torch.randn(2, 4)
    before = model.embed.weight.detach().clone()
    with pytest.raises(
        tying.TieError,
        match=r"'weight' \(head\.weight\).*its source embed\.weight lies outside the module "
        r"called \(TiedLinear\).*c = copy\.deepcopy\(model\); tying\.untie\(c\)",
    ):
        functional_call(model.head, {"weight": w}, (x,))
    with pytest.raises(AttributeError):  # the advice given before stop 60
        functional_call(model.head, {"embed.weight": w}, (x,))
    c = copy.deepcopy(model)  # the advice, followed
    tying.untie(c)
    torch.testing.assert_close(functional_call(c.head, {"weight": w}, (x,)), x @ w.T)
    assert model.head.weight is model.embed.weight and torch.equal(model.embed.weight, before)
    assert tying.verify(model) == 2


def test_a_call_on_the_root_keeps_its_message():
    model = _model()
    w = torch.randn(10, 4)
    with pytest.raises(
        tying.TieError, match=r"value for head\.weight, a tied.*under embed\.weight"
    ):
        functional_call(model, {"head.weight": w}, (torch.tensor([1]),))


def test_a_self_relation_on_a_part_names_the_storage_key():
    model = nn.ModuleDict({"a": nn.Linear(4, 4)})
    tying.Plan([tying.share("a.weight", relation=tying.Mirrored())]).apply(model)
    with pytest.raises(tying.TieError, match=r"'weight' \(a\.weight\).*under weight_physical only"):
        functional_call(model.a, {"weight": torch.zeros(4, 4)}, (torch.ones(1, 4),))
    out = functional_call(model.a, {"weight_physical": torch.zeros(4, 2)}, (torch.ones(1, 4),))
    torch.testing.assert_close(out, model.a.bias.expand(1, 4))


def test_tie_weights_false_on_a_part_names_the_parts_key_and_its_advice_works():
    model = _model()
    w, x = torch.randn(4, 4), torch.randn(2, 4)
    with pytest.raises(
        tying.TieError, match=r"tie_weights=False\) replaced '0\.weight' \(body\.0\.weight\)"
    ):
        functional_call(model.body, {"0.weight": w}, (x,), tie_weights=False)
    out = functional_call(model.body, {"0.weight": w}, (x,), tie_weights=True)  # the advice
    b0, b1 = model.body[0].bias, model.body[1].bias
    torch.testing.assert_close(out, (x @ w.T + b0) @ w.T + b1)
