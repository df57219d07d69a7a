"""Review of stop 58 (commit 2204a18, tying.core): what its fixes missed.

- ``Plan.declared(copy.deepcopy(model.dec))`` returned ``Plan([])`` while
  ``tying.ties`` / ``tying.verify`` of the copy listed its two ties: the silent empty
  plan stop 58 fixed for ``Plan.declared(model.dec)`` (a deep copy of a part rebases the
  slots onto the copy, the declarations stay on the model).
- A part below two plans (one applied to ``model.dec``, one to ``model``) had each tie
  the inner plan declared listed twice (5 rules for 3 ties).
- The module-vs-parameter advice offered rules that fail when followed: shapes that do
  not fit (``share("h", like="l.0.weight")`` with ``h`` a Linear(4, 2) advised
  ``share('h.weight', like='l.0.weight')`` and ``share('h', like='l.0')``, both refused
  on shape), a module tied to itself (``share("l.*", like="l.0.weight")`` advised
  ``share('l.0', like='l.0')``: "ties nothing"), and dropped the rule's relation
  (``relation=Transposed()`` advised a plain ``Same`` tie).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tying


def _step(model: nn.Module, loss: torch.Tensor) -> None:
    # one plain SGD step by hand: torch.optim's first step() in a process costs ~2.5 s
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)


def _block():
    return nn.ModuleDict({n: nn.Linear(6, 6) for n in "abc"})


def _coder():
    return nn.ModuleDict({"x": _block(), "y": _block()})


def _tied_model():
    torch.manual_seed(0)
    m = nn.ModuleDict({"enc": _coder(), "dec": _coder()})
    tying.Plan([tying.share("dec.x.b", like="dec.x.a")]).apply(m)
    return m


def _forward(block: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    return sum(lin(x) for lin in block.values())


def test_declared_of_a_deep_copied_part_recreates_its_ties():
    m = _tied_model()
    part = copy.deepcopy(m.dec)
    assert len(tying.ties(part)) == tying.verify(part) == 2
    plan = tying.Plan.declared(part)
    assert repr(plan) == (
        "Plan([share('x.b.weight', like='x.a.weight'), share('x.b.bias', like='x.a.bias')])"
    )  # Plan([]) before
    fresh = _coder()
    plan.apply(fresh)
    assert fresh.x.b.weight is fresh.x.a.weight and tying.verify(fresh) == 2
    _step(fresh, _forward(fresh.x, torch.randn(2, 6)).pow(2).sum())
    assert fresh.x.b.weight is fresh.x.a.weight and tying.verify(fresh) == 2


def test_declared_of_a_part_below_two_plans_lists_each_tie_once():
    torch.manual_seed(0)
    m = nn.ModuleDict({"enc": _coder(), "dec": _coder()})
    tying.Plan([tying.share("x.b", like="x.a")]).apply(m.dec)
    tying.Plan([tying.share("dec.x.c.weight", like="dec.x.a.weight")]).apply(m)
    plan = tying.Plan.declared(m.dec.x)
    assert repr(plan) == (
        "Plan([share('b.weight', like='a.weight'), share('b.bias', like='a.bias'), "
        "share('c.weight', like='a.weight')])"
    )  # b.weight and b.bias twice before
    assert len(plan.rules) == len(tying.ties(m.dec.x)) == tying.verify(m.dec.x) == 3
    fresh = _block()
    plan.apply(fresh)
    _step(fresh, _forward(fresh, torch.randn(2, 6)).pow(2).sum())
    assert tying.verify(fresh) == 3


def _model():
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "l": nn.ModuleList(nn.Linear(4, 4) for _ in range(3)),
            "bn": nn.ModuleList(nn.BatchNorm1d(4) for _ in range(2)),
            "h": nn.Linear(4, 2),
        }
    )


@pytest.mark.parametrize(
    ("rule", "message", "fixes"),
    [
        (  # h is Linear(4, 2): neither h.weight nor h fits l.0's (4, 4)
            tying.share("h", like="l.0.weight"),
            r"'l\.0\.weight' is a parameter; name a module in like=$",
            [],
        ),
        (
            tying.share("h.weight", like="l.0"),
            r"'l\.0' is a module; name a parameter in like=$",
            [],
        ),
        (  # a Linear's weight (4, 4) has no counterpart in a BatchNorm's (4,)
            tying.share("l.1", like="bn.0.running_mean"),
            r"is a buffer \(ties are for parameters\); name a module in like=$",
            [],
        ),
        (  # the first module the pattern matches holds the source: l.0 to itself is no fix
            tying.share("l.*", like="l.0.weight"),
            r"'l\.0\.weight' is a parameter; like='l\.0' ties each module it matches to "
            r"'l\.0'$",
            [tying.share("l.*", like="l.0")],
        ),
        (  # the relation is kept; a whole Linear cannot be Transposed (its bias is 1-D)
            tying.share("l.1", like="l.0.weight", relation=tying.Transposed()),
            r"'l\.0\.weight' is a parameter; share\('l\.1\.weight', like='l\.0\.weight', "
            r"relation=Transposed\(dims=\(0, 1\)\)\) ties that parameter$",
            [tying.share("l.1.weight", like="l.0.weight", relation=tying.Transposed())],
        ),
    ],
)
def test_module_vs_parameter_advice_offers_only_rules_that_apply(rule, message, fixes):
    m = _model()
    with pytest.raises(tying.TieError, match=message) as err:
        tying.Plan([rule]).apply(m)
    text = str(err.value)
    assert text.count(" ties ") == len(fixes)  # one "... ties ..." per fix offered
    for fix in fixes:
        fixed = _model()
        tying.Plan([fix]).apply(fixed)
        n = tying.verify(fixed)
        assert n >= 1
        _step(fixed, sum(lin(torch.randn(2, 4)).sum() for lin in fixed.l))
        assert tying.verify(fixed) == n
