"""Plan.declared of a part of a tied model lists the part's ties (stop 58).

A plan applied to the whole model records its declarations on the model. Asked for a
part (``Plan.declared(model.dec)``), ``Plan.declared`` read only declarations made on the
part and below it, so it returned ``Plan([])`` for a decoder whose two ties
``tying.ties(model.dec)`` listed and ``tying.verify(model.dec)`` checked: applied to a
fresh decoder, that plan tied nothing, with no error. Now the part's ties come back
relative to the part, and a tie reading a module outside the part is refused by name (as
``count``, ``verify`` and ``untie`` of such a part are).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
from tests.core.helpers import sgd_step


def _coder():
    return nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))


def _model(rules):
    torch.manual_seed(0)
    m = nn.ModuleDict({"enc": _coder(), "dec": _coder()})
    tying.Plan(rules).apply(m)
    return m


@pytest.mark.parametrize(
    ("rules", "want"),
    [
        (
            [tying.share("dec.1", like="dec.0")],
            "Plan([share('1.weight', like='0.weight'), share('1.bias', like='0.bias')])",
        ),
        (
            [tying.share("dec.1.weight", like="dec.0.weight", relation=tying.Transposed())],
            "Plan([share('1.weight', like='0.weight', relation=Transposed(dims=(0, 1)))])",
        ),
    ],
)
def test_declared_of_a_part_lists_its_ties_and_recreates_them(rules, want):
    m = _model(rules)
    plan = tying.Plan.declared(m.dec)
    assert repr(plan) == want  # Plan([]) before
    assert len(plan.rules) == len(tying.ties(m.dec)) == tying.verify(m.dec)
    fresh = _coder()
    plan.apply(fresh)
    assert tying.verify(fresh) == len(plan.rules)
    sgd_step(fresh, fresh(torch.randn(2, 6)).pow(2).sum())
    assert tying.verify(fresh) == len(plan.rules)


def test_declared_of_a_part_reading_outside_it_is_refused_by_name():
    m = _model([tying.share("dec.0", like="enc.1")])
    with pytest.raises(
        tying.TieError,
        match=r"^Plan\.declared: 0\.weight is tied to enc\.1\.weight \(via Same\(\)\), which "
        r"lies outside the module given to tying\.Plan\.declared: .* pass that model",
    ):
        tying.Plan.declared(m.dec)
    assert tying.Plan.declared(m.enc).rules == []  # the sources' side declares nothing
    assert len(tying.Plan.declared(m).rules) == 2  # the advice: the whole model works


def test_whole_model_and_parts_a_plan_was_applied_to_are_as_before():
    torch.manual_seed(0)
    m = nn.ModuleDict({"enc": _coder(), "dec": _coder()})
    tying.Plan([tying.share("1.weight", like="0.weight", relation=tying.Scaled())]).apply(m.dec)
    tying.Plan([tying.share("enc.1.bias", like="enc.0.bias")]).apply(m)
    assert repr(tying.Plan.declared(m)) == (
        "Plan([share('enc.1.bias', like='enc.0.bias'), "
        "share('dec.1.weight', like='dec.0.weight', relation=Scaled(init=1.0))])"
    )
    assert repr(tying.Plan.declared(m.dec)) == (
        "Plan([share('1.weight', like='0.weight', relation=Scaled(init=1.0))])"
    )
    assert not tying.retie(m).changed and not tying.retie(m.enc).changed
