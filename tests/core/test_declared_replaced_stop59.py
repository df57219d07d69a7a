"""A part whose tied modules were all replaced still lists the ties a plan above declared (stop 59).

``Plan.declared(part)`` (stop 58) lists the ties an outer plan declared inside the part,
found through the part's tied slots. Once every tied slot of the part was replaced
(``model[1][2] = nn.Linear(4, 4)``: re-materialised, swapped by a tool), no slot led to the
plan above, so ``Plan.declared(model[1])`` was ``Plan([])``, ``tying.retie(model[1])`` tied
0 slots with no error, and ``tying.verify(model[1])`` returned 0 (nothing to check) while
``tying.verify(model)`` named the broken tie. The declarations are now found through the
modules above the part.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
from tests.core.helpers import sgd_step


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(
        *(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)) for _ in "ab")
    )
    tying.Plan([tying.share("*.2.weight", like="*.0.weight")]).apply(model)
    model[1][2] = nn.Linear(4, 4)  # the part's only tied module, replaced
    return model


def test_declared_retie_and_verify_of_the_part_see_the_outer_plan():
    model = _model()
    part = model[1]
    assert tying.Plan.declared(part).rules == tying.Plan.declared(model[0]).rules
    with pytest.raises(tying.TieError, match=r"1 declared tie\(s\) broken: 2\.weight: is an "):
        tying.verify(part)  # it returned 0
    report = tying.retie(part)  # it tied 0 slots
    assert report.tied == {"2.weight": "0.weight"}
    assert part[2].weight is part[0].weight
    assert tying.verify(part) == 1 and tying.verify(model) == 2
    x = torch.randn(3, 4)
    sgd_step(model, model(x).pow(2).sum())
    assert part[2].weight is part[0].weight and tying.verify(model) == 2


def test_a_part_tied_again_by_its_own_plan_lists_each_tie_once():
    model = _model()
    tying.Plan([tying.share("2.weight", like="0.weight")]).apply(model[1])
    model[1][2] = nn.Linear(4, 4)
    with pytest.raises(
        tying.TieError, match=r"^1 declared tie\(s\) broken: 2\.weight: is an [^;]*$"
    ):
        tying.verify(model[1])
    assert len(tying.Plan.declared(model[1]).rules) == 1


def test_a_replaced_tie_to_a_source_outside_the_part_is_refused_by_name():
    # a tied slot there was refused by name; once replaced, its declaration was skipped:
    # Plan.declared(dec) was Plan([]), retie(dec) tied 0 slots, verify(dec) returned 0
    model = nn.ModuleDict({"enc": nn.Linear(4, 4), "dec": nn.Sequential(nn.Linear(4, 4))})
    tying.Plan([tying.share("dec.0.weight", like="enc.weight")]).apply(model)
    model.dec[0] = nn.Linear(4, 4)
    for call, name in [(tying.verify, "verify"), (tying.retie, "Plan.declared")]:
        with pytest.raises(
            tying.TieError,
            match=rf"^0\.weight is declared tied to enc\.weight \(via Same\(\)\) by the plan "
            rf"applied to the ModuleDict above it; enc\.weight lies outside the module given "
            rf"to tying\.{name}: .* pass that model \(or a parent of it\) instead$",
        ):
            call(model.dec)
    tying.retie(model)  # the advice, followed
    assert model.dec[0].weight is model.enc.weight and tying.verify(model) == 1


def test_a_hand_tie_across_parts_is_no_refusal_of_the_part():
    model = nn.ModuleDict({"enc": nn.Linear(4, 4), "dec": nn.Linear(4, 4), "c": nn.Linear(4, 4)})
    model.dec.weight = model.enc.weight  # a hand tie across the parts: one Parameter
    tying.Plan([tying.share("c.weight", like="enc.weight")]).apply(model)
    assert tying.verify(model.dec) == 0 and tying.Plan.declared(model.dec).rules == []
    assert tying.verify(model) == 2
