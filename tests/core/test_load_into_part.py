"""``load_state_dict`` on a part of a tied model (a backbone, a block, the tied module
itself) refuses a state dict that contradicts a tie, before anything is copied, as a load
through the model does (stop 30 review: such a load reported "All keys matched" and
dropped the differing tied values, and a refusal at the tied module came after the
modules before it had loaded)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.ModuleDict(
        {
            "backbone": nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)),
            "head": nn.Linear(4, 4),
            "dec": nn.Linear(4, 4),
        }
    )


PLAN = tying.Plan(
    [
        tying.share("backbone.2", like="backbone.0"),
        tying.share("head.weight", like="backbone.0.weight"),
        tying.share("dec.weight", like="backbone.0.weight", relation=tying.Transposed()),
    ]
)


def _tied(seed=0):
    m = _model(seed)
    PLAN.apply(m)
    return m


def _snapshot(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _unchanged(m, before):
    now = m.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


@pytest.mark.parametrize("kw", [{}, {"strict": False}, {"assign": True}])
@pytest.mark.parametrize(
    "part, make",
    [
        # an untied donor's backbone: its layer 2 differs from its layer 0
        ("backbone", lambda donor, m: donor["backbone"].state_dict()),
        # the tied module alone, with a weight that differs from its source, and a bias
        ("head", lambda donor, m: {"weight": torch.randn(4, 4), "bias": torch.randn(4)}),
        ("dec", lambda donor, m: {"weight": torch.randn(4, 4), "bias": torch.randn(4)}),
        # one tied layer of the stack
        ("backbone.2", lambda donor, m: donor["backbone"][2].state_dict()),
    ],
)
def test_a_contradicting_load_into_a_part_is_refused_and_loads_nothing(part, make, kw):
    m, donor = _tied(), _model(seed=7)
    before, n_ties = _snapshot(m), tying.verify(m)
    with pytest.raises(RuntimeError, match="nothing was loaded") as err:
        m.get_submodule(part).load_state_dict(make(donor, m), **kw)
    assert "is tied" in str(err.value)
    assert _unchanged(m, before)
    assert tying.verify(m) == n_ties == 4  # backbone.2's weight and bias, head, dec


def test_a_load_into_a_part_that_agrees_with_the_ties_is_taken():
    m, other = _tied(), _tied(seed=3)
    m["backbone"].load_state_dict(other["backbone"].state_dict())
    # the backbone's source moved, and every tie now reads the new value
    w = other["backbone"][0].weight
    assert torch.equal(m["backbone"][2].weight, w) and torch.equal(m["head"].weight, w)
    assert torch.equal(m["dec"].weight, w.t())
    # the tied module alone, with what the tie gives it, and a new bias
    bias = torch.randn(4)
    m["head"].load_state_dict({"weight": w.detach().clone(), "bias": bias})
    assert torch.equal(m["head"].bias, bias)
    m["dec"].load_state_dict({"weight": w.detach().t().clone(), "bias": bias})
    # an untied donor whose layer 2 equals its layer 0: nothing is lost, so it loads
    donor = _model(seed=7)
    donor["backbone"][2].load_state_dict(donor["backbone"][0].state_dict())
    m["backbone"].load_state_dict(donor["backbone"].state_dict())
    assert torch.equal(m["backbone"][2].weight, donor["backbone"][0].weight)
    assert tying.verify(m) == 4


def test_a_part_loaded_inside_a_larger_load_is_checked_once_by_that_load():
    """Through the model the check runs at the model (the parts' hooks see a prefix and
    leave it to the root): a contradicting whole-model state dict is refused once, with
    each contradiction named once."""
    m, donor = _tied(), _model(seed=7)
    before = _snapshot(m)
    with pytest.raises(RuntimeError, match="nothing was loaded") as err:
        m.load_state_dict(donor.state_dict())
    text = str(err.value)
    assert text.count("backbone.2.weight is tied") == 1 and text.count("head.weight is tied") == 1
    assert _unchanged(m, before)
