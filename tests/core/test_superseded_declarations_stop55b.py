"""A plan that re-ties (or frees) a slot a submodule declared a tie for drops that
submodule's declaration (stop 55, second core pass).

``share("y", like="x")`` over a user module ``y`` that had applied a plan of its own
(``b.weight`` Transposed of ``a.weight``) kept ``y``'s declaration, which no longer
described the model: ``tying.verify`` refused a correct model ("y.b.weight: relation is
Same(), declared Transposed"), ``tying.retie`` would re-make the old tie, and
``Plan.declared`` listed both, the stale one last (so it won on a re-apply). The nn
helper fixed it for tying.nn layers only; ``Plan.apply`` now does it for every model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import tying
from tying.core import plan as plan_mod
from tying.core.plan import DECLARED_ATTR


class Inner(nn.Module):
    """A user block that ties its second layer to its first, Transposed, in __init__."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
        tying.Plan([tying.share("b.weight", like="a.weight", relation=tying.Transposed())]).apply(
            self
        )

    def forward(self, h):
        return self.b(torch.tanh(self.a(h)))


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.x, self.y = Inner(), Inner()

    def forward(self, z):
        return self.y(torch.tanh(self.x(z)))


def _step(model, z):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(z).pow(2).sum().backward()
    opt.step()


def test_a_whole_module_shared_drops_its_own_declarations_and_verifies():
    torch.manual_seed(0)
    model = Outer()
    tying.Plan([tying.share("y", like="x")]).apply(model)
    assert tying.verify(model) == 3
    assert tying.Plan.declared(model).rules == [
        tying.share("y.a.weight", like="x.a.weight"),
        tying.share("y.b.weight", like="x.b.weight"),
        tying.share("x.b.weight", like="x.a.weight", relation=tying.Transposed()),
    ]
    # the hand-tied anchor: one weight W; every layer reads W (a) or W.T (b)
    w = nn.Parameter(model.x.a.weight.detach().clone())
    w0 = w.detach().clone()

    def anchor(z):
        inner = lambda h: F.linear(torch.tanh(F.linear(h, w)), w.t())  # noqa: E731
        return inner(torch.tanh(inner(z)))

    z = torch.randn(5, 4)
    torch.testing.assert_close(model(z), anchor(z))
    _step(model, z)
    opt = torch.optim.SGD([w], lr=0.5)
    anchor(z).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(w.detach(), w0)  # the step moved it
    torch.testing.assert_close(model.x.a.weight, w.detach())
    torch.testing.assert_close(model.y.b.weight, w.detach().t())
    assert tying.verify(model) == 3
    assert tying.retie(model).tied == {}  # nothing stale to re-make
    torch.testing.assert_close(model.y.b.weight, w.detach().t())


class Plain(Inner):
    """The same block, its layers untied (the shared-from module of the next test)."""

    def __init__(self):
        nn.Module.__init__(self)
        self.a, self.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)


class Mixed(Outer):
    def __init__(self):
        nn.Module.__init__(self)
        self.x, self.y = Plain(), Inner()


def test_the_declared_plan_and_retie_rebuild_the_shared_model_not_the_old_tie():
    torch.manual_seed(0)
    model = Mixed()
    tying.Plan([tying.share("y", like="x")]).apply(model)  # y.b reads x.b now, not y.a.T
    assert tying.verify(model) == 2
    fresh = Mixed()
    tying.Plan.declared(model).apply(fresh)
    fresh.load_state_dict(model.state_dict())
    z = torch.randn(3, 4)
    torch.testing.assert_close(fresh(z), model(z))
    torch.testing.assert_close(fresh.y.b.weight, fresh.x.b.weight)
    assert tying.retie(model).tied == {}
    torch.testing.assert_close(model.y.b.weight, model.x.b.weight)


def test_a_freed_slot_drops_the_submodules_declaration():
    model = Outer()
    tying.Plan([tying.free("y.b.weight")]).apply(model)
    assert tying.verify(model) == 1  # x's own tie; y.b.weight is free, as the plan said
    assert model.y.__dict__[DECLARED_ATTR] == {}
    before = model.y.b.weight.detach().clone()
    assert tying.retie(model).tied == {}
    assert torch.equal(model.y.b.weight, before)  # not re-tied to y.a behind the user's back


def test_a_failed_commit_keeps_the_submodules_declarations(monkeypatch):
    model = Outer()
    kept = dict(model.y.__dict__[DECLARED_ATTR])

    def fail(_model):
        raise RuntimeError("injected")

    monkeypatch.setattr(plan_mod, "guard_loading", fail)
    with pytest.raises(RuntimeError, match="injected"):
        tying.Plan([tying.share("y", like="x")]).apply(model)
    assert model.y.__dict__[DECLARED_ATTR] == kept
    assert tying.verify(model) == 2


def test_the_load_route_free_then_load_verifies(tmp_path):
    """tying.load's advice for a file that ties y.b elsewhere (free it first, then load)
    ended in a model verify refused: the free kept y's own declaration."""
    torch.manual_seed(0)
    model = Mixed()
    tying.Plan([tying.share("y", like="x")]).apply(model)
    tying.save(model, tmp_path / "m.safetensors")
    fresh = Mixed()
    tying.Plan([tying.free("y.b.weight")]).apply(fresh)
    tying.load(fresh, tmp_path / "m.safetensors")
    assert tying.verify(fresh) == 2
    z = torch.randn(3, 4)
    torch.testing.assert_close(fresh(z), model(z))
    torch.testing.assert_close(fresh.y.b.weight, fresh.x.b.weight)
