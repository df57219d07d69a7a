"""zero_grad on a tied module clears the gradient its slots read, as on a hand tie (stop 56).

A tied slot is no Parameter of its module, so ``nn.Module.zero_grad`` (which clears
``module.parameters()``) left the source's gradient in place: ``head.zero_grad()`` after a
backward kept the embedding's gradient, and the next step applied it again, no error. The
anchor is the same model tied by hand, where the slot's gradient is its source's.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying

RELATIONS = {
    "Same": None,
    "Transposed": tying.Transposed,
    "Rotated": lambda: tying.Rotated(1),
    "Scaled": tying.Scaled,
}


def _model(relation):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    kw = {} if relation is None else {"relation": relation()}
    tying.Plan([tying.share("2.weight", like="0.weight", **kw)]).apply(m)
    return m


def _hand():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    m[2].weight = m[0].weight
    return m


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("rel", sorted(RELATIONS))
def test_zero_grad_of_the_tied_module_clears_its_source_as_a_hand_tie_does(rel, set_to_none):
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    hand, ours = _hand(), _model(RELATIONS[rel])
    for m in (hand, ours):
        m(x).pow(2).sum().backward()
        m[2].zero_grad(set_to_none=set_to_none)
    for m in (hand, ours):
        g = m[0].weight.grad
        assert (g is None) if set_to_none else torch.count_nonzero(g) == 0
        assert m[2].bias.grad is None if set_to_none else torch.count_nonzero(m[2].bias.grad) == 0
        assert m[0].bias.grad is not None and torch.count_nonzero(m[0].bias.grad) > 0  # not read
    # the step after a second backward applies that backward's gradient once
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    before = ours[0].weight.detach().clone()
    ours(x).pow(2).sum().backward()
    g_once = ours[0].weight.grad.clone()
    opt.step()
    torch.testing.assert_close(ours[0].weight.detach(), before - 0.1 * g_once)
    assert tying.verify(ours) == 1


class _Head(nn.Linear):
    def __init__(self):
        super().__init__(4, 4)
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return super().forward(self.inner(x))


def test_zero_grad_of_a_tied_module_reaches_the_sources_of_its_tied_children():
    torch.manual_seed(0)
    m = nn.ModuleDict({"e1": nn.Linear(4, 4), "e2": nn.Linear(4, 4), "head": _Head()})
    tying.Plan(
        [
            tying.share("head.weight", like="e1.weight"),
            tying.share("head.inner.weight", like="e2.weight", relation=tying.Transposed()),
        ]
    ).apply(m)
    m["head"](m["e2"](m["e1"](torch.randn(2, 4)))).sum().backward()
    m["head"].zero_grad()
    assert m["e1"].weight.grad is None and m["e2"].weight.grad is None
    assert m["e1"].bias.grad is not None and m["e2"].bias.grad is not None  # not read: kept


def test_zero_grad_of_the_tied_module_clears_a_pruned_sources_orig_as_a_hand_tie_does():
    import torch.nn.utils.prune as prune

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    hand, ours = _hand(), _model(None)
    for m in (hand, ours):
        prune.l1_unstructured(m[0], "weight", amount=0.5)
        m(x).pow(2).sum().backward()
        assert m[0].weight_orig.grad is not None
        m[2].zero_grad()
        assert m[0].weight_orig.grad is None
        assert m[0].bias.grad is not None
