"""Stop 58 review (semantic shifts): Plan.declared(part) now lists an outer plan's ties, so
tying.retie(part) re-applies them by path; its moved-module guard read only the part's own
declarations, and retie(part) after part.insert(2, layer) tied the new layer (its weights
dropped, no error) where retie(model) refuses."""

import pytest
import torch
from torch import nn

import tying


def _model():
    torch.manual_seed(0)
    return nn.ModuleDict(
        {"head": nn.Linear(3, 3), "stack": nn.Sequential(*(nn.Linear(3, 3) for _ in range(3)))}
    )


def test_retie_of_a_part_refuses_a_moved_module_of_an_outer_plan():
    m = _model()
    tying.Plan([tying.share("stack.2", like="stack.0")]).apply(m)
    new = nn.Linear(3, 3)
    before = new.weight.detach().clone()
    m["stack"].insert(2, new)
    with pytest.raises(tying.TieError, match=r"retie: 2\.weight: its tie now sits at 3\.weight"):
        tying.retie(m["stack"])
    assert torch.equal(m["stack"][2].weight, before)  # nothing was changed
    assert m["stack"][3].weight is m["stack"][0].weight


def test_retie_of_a_part_still_repairs_a_replaced_module_of_an_outer_plan():
    m = _model()
    tying.Plan([tying.share("stack.*", like="stack.0")]).apply(m)
    m["stack"][2] = nn.Linear(3, 3)
    report = tying.retie(m["stack"])
    assert len(report.tied) == 2
    assert m["stack"][2].weight is m["stack"][0].weight
    assert tying.verify(m) == 4


def test_retie_of_a_part_ignores_a_moved_module_outside_it():
    m = nn.ModuleDict({"a": _model(), "b": _model()})
    tying.Plan(
        [tying.share("a.stack.2", like="a.stack.0"), tying.share("b.stack.*", like="b.stack.0")]
    ).apply(m)
    m["a"]["stack"].insert(2, nn.Linear(3, 3))
    m["b"]["stack"][1] = nn.Linear(3, 3)
    tying.retie(m["b"])  # the move lies in a, not in b
    assert m["b"]["stack"][1].weight is m["b"]["stack"][0].weight
