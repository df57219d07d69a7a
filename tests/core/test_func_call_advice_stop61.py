"""functional_call's refusal of a value for a tied slot: advice that works (stop 61).

Before stop 61 it said "pass the value under a.weight only" under every relation (a Scaled
slot then read 2 * v for the v passed: 1.0 off per entry, no error) and "untie a copy
first (tying.untie(model))", a call that unties the model itself.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

import tying


def _tied(relation):
    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    tying.Plan([tying.share("b.weight", like="a.weight", relation=relation)]).apply(m)
    return m


def test_same_the_value_under_the_source_is_the_slots():
    m = _tied(tying.Same())
    v = torch.ones(4, 4)
    with pytest.raises(tying.TieError, match=r"pass the value under a\.weight only"):
        functional_call(m, {"b.weight": v}, ())
    x = torch.randn(2, 4)
    got = functional_call(_Call(m), {"m.a.weight": v}, (x,))  # the advice, as written
    torch.testing.assert_close(got, x @ v.t() + m["b"].bias)


class _Call(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m["b"](x)


@pytest.mark.parametrize("relation", [tying.Scaled(2.0), tying.Transposed()], ids=repr)
def test_under_a_relation_the_advice_asks_for_the_sources_value(relation):
    m = _tied(relation)
    with pytest.raises(
        tying.TieError,
        match=r"pass the source's value \(the slot computes its own from it through "
        r".*so not the slot's value\) under m\.a\.weight only",
    ):
        functional_call(_Call(m), {"m.b.weight": torch.ones(4, 4)}, (torch.randn(2, 4),))


def test_the_untie_advice_unties_a_copy_not_the_model():
    m = _tied(tying.Same())
    with pytest.raises(
        tying.TieError,
        match=r"untie a copy first: c = copy\.deepcopy\(model\); tying\.untie\(c\); then call c",
    ):
        functional_call(m, {"b.weight": torch.ones(4, 4)}, ())
    model = m
    c = copy.deepcopy(model)
    tying.untie(c)  # the advice, as written
    x = torch.randn(2, 4)
    v = torch.ones(4, 4)
    torch.testing.assert_close(
        functional_call(c["b"], {"weight": v}, (x,)), x @ v.t() + c["b"].bias
    )
    assert model["b"].weight is model["a"].weight  # the model itself stays tied
    assert tying.verify(model) == 1
