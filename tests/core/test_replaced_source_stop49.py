"""A tie whose source module was replaced after the plan: every call that refuses it
gives advice that works (re-applying the plan and untying were advised, and both refused
with the same advice)."""

import pytest
import torch
from torch import nn

import tying


def _tied(relation):
    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Linear(4, 3, bias=False), "b": nn.Linear(3, 4, bias=False)})
    plan = tying.Plan([tying.share("b.weight", like="a.weight", relation=relation)])
    plan.apply(m)
    return m, plan


CALLS = {
    "untie": lambda m, plan, tmp: tying.untie(m),
    "retie": lambda m, plan, tmp: tying.retie(m),
    "apply": lambda m, plan, tmp: plan.apply(m),
    "verify": lambda m, plan, tmp: tying.verify(m),
    "save": lambda m, plan, tmp: tying.save(m, tmp / "m.safetensors"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_refusal_names_the_way_out(call, tmp_path):
    m, plan = _tied(tying.Transposed())
    old = m.a
    m.a = nn.Linear(4, 3, bias=False)
    before = {k: v.clone() for k, v in m.state_dict().items() if k != "b.weight"}
    with pytest.raises(tying.TieError, match="put the module it replaced back at its path"):
        CALLS[call](m, plan, tmp_path)
    assert not (tmp_path / "m.safetensors").exists()
    after = {k: v for k, v in m.state_dict().items() if k != "b.weight"}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert m.b.__dict__["_parameters"].get("weight") is None  # still a tie, not untied
    m.a = old  # the advice, followed: back, untie, new module in, a plan for it
    assert tying.untie(m) == 1
    new = nn.Linear(4, 3, bias=False)
    m.a = new
    plan.apply(m)
    assert torch.equal(m.b.weight, new.weight.T)
    assert tying.verify(m) == 1
