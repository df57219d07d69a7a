"""Stop 49: a tied model driven through chains of user operations, checked after each one.

A ``RuleBasedStateMachine`` builds a small model (``a`` computes, ``b`` reads ``a``'s tensor
through one relation, ``c`` reads ``a.weight`` unchanged), ties it with a ``Plan`` using one
of every exported relation, then chains what a user does: optimizer steps, ``state_dict``
round trips (strict or not, ``assign`` or not, into the model itself or into a fresh tied
copy), ``tying.save``/``tying.load`` over an existing file, failed plans and failed saves,
``deepcopy``, dtype moves, ``functional_call`` with ``tie_weights`` True and False,
``requires_grad_``, ``zero_grad``, ``untie`` and re-applying the plan. After every rule the
tied slots must equal the relation applied by hand to the source's current value, the
model's output must equal plain torch computing with those values, and ``count``/``verify``
must agree; a refused call must leave every tensor and every tie as it was.
"""

from __future__ import annotations

import copy
import inspect
import pathlib
import pickle
import tempfile

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from torch import nn

import tying

F64 = torch.float64

# relation -> (source Linear (in, out), source tensor, target Linear (in, out), relation)
CASES = {
    "Same": ((6, 4), "weight", (6, 4), lambda: tying.Same()),
    "Transposed": ((4, 6), "weight", (6, 4), lambda: tying.Transposed()),
    "Rotated": ((4, 6), "weight", (6, 4), lambda: tying.Rotated()),
    "Flipped": ((6, 4), "weight", (6, 4), lambda: tying.Flipped(dims=(0, 1))),
    "Mirrored": ((3, 4), "weight", (6, 4), lambda: tying.Mirrored()),
    "Scaled": ((6, 4), "weight", (6, 4), lambda: tying.Scaled(init=-1.5)),
    "Hashed": ((1, 8), "bias", (6, 4), lambda: tying.Hashed(buckets=8, seed=3)),
}


def test_every_exported_relation_is_in_the_machine():
    exported = {
        n
        for n in tying.__all__
        if inspect.isclass(getattr(tying, n))
        and issubclass(getattr(tying, n), tying.Relation)
        and getattr(tying, n) is not tying.Relation
    }
    assert exported == set(CASES)


class Net(nn.Module):
    def __init__(self, name: str, seed: int = 0):
        super().__init__()
        (ai, ao), _, (bi, bo), _ = CASES[name]
        self.a, self.b = nn.Linear(ai, ao, dtype=F64), nn.Linear(bi, bo, dtype=F64)
        self.c = nn.Linear(ai, ao, bias=False, dtype=F64)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64))

    def forward(self, x):  # (B, 6) -> (B, 4); a and c run on the first in-features of x
        ai = self.a.in_features
        return self.b(x) + self.a(x[:, :ai]).sum() + self.c(x[:, :ai]).sum()


def plan(name: str) -> tying.Plan:
    _, src, _, rel = CASES[name]
    return tying.Plan(
        [
            tying.share("b.weight", like=f"a.{src}", relation=rel()),
            tying.share("c.weight", like="a.weight"),
        ]
    )


def tied(name: str, seed: int = 0) -> Net:
    net = Net(name, seed)
    plan(name).apply(net)
    return net


def by_hand(name: str, net: Net, src=None, scale=None) -> torch.Tensor:
    """``b.weight`` computed by plain torch from the source tensor."""
    _, s, (bi, bo), _ = CASES[name]
    rel = CASES[name][3]()
    src = getattr(net.a, s) if src is None else src
    if name == "Scaled":
        return rel(src, shape=(bo, bi), scale=net.b.weight_scale if scale is None else scale)
    return rel(src, shape=(bo, bi))


def plain_forward(net: Net, x, leaves: dict, b_weight, c_weight) -> torch.Tensor:
    ai = net.a.in_features
    xa = x[:, :ai]
    a_out = xa @ leaves["a.weight"].T + leaves["a.bias"]
    return x @ b_weight.T + leaves["b.bias"] + a_out.sum() + (xa @ c_weight.T).sum()


def snapshot(net: Net) -> dict:
    """Every tensor (by value and object), every tie and the output."""
    x = torch.ones(2, 6, dtype=net.a.weight.dtype)
    with torch.no_grad():
        return {
            "params": [(n, p, p.detach().clone()) for n, p in net.named_parameters()],
            "ties": [(t.target, t.source, repr(t.relation)) for t in tying.ties(net)],
            "out": net(x).clone(),
        }


def assert_unchanged(net: Net, before: dict) -> None:
    now = list(net.named_parameters())
    assert [n for n, _ in now] == [n for n, _, _ in before["params"]]
    for (n, p), (_, p0, v0) in zip(now, before["params"]):
        assert p is p0, n
        assert torch.equal(p.detach(), v0), n
    assert [(t.target, t.source, repr(t.relation)) for t in tying.ties(net)] == before["ties"]
    x = torch.ones(2, 6, dtype=net.a.weight.dtype)
    with torch.no_grad():
        assert torch.equal(net(x), before["out"])


class TiedModelMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix="tying_stateful_"))
        self.file = self.folder / "m.safetensors"
        self.saved = None  # the physical values last saved to self.file

    @initialize(name=st.sampled_from(sorted(CASES)))
    def build(self, name):
        self.name = name
        self.net = tied(name)
        self.is_tied = True
        self.dtype = F64

    # ---- the checks after every rule --------------------------------------------------
    def x(self):
        return torch.linspace(-1, 1, 12, dtype=F64).reshape(2, 6).to(self.dtype)

    @invariant()
    def slots_equal_their_relation_and_outputs_equal_plain_torch(self):
        net = self.net
        if not hasattr(self, "net"):
            return
        leaves = dict(net.named_parameters())
        if self.is_tied:
            assert torch.equal(net.b.weight, by_hand(self.name, net))
            assert net.c.weight is net.a.weight
            assert tying.verify(net) == 2
            assert set(leaves) == {"a.weight", "a.bias", "b.bias"} | (
                {"b.weight_scale"} if self.name == "Scaled" else set()
            )
            b_w = by_hand(self.name, net, leaves["a." + CASES[self.name][1]])
            c_w = leaves["a.weight"]
        else:
            assert tying.ties(net) == []
            assert "b.weight" in leaves and "c.weight" in leaves
            b_w, c_w = leaves["b.weight"], leaves["c.weight"]
        counted = tying.count(net)
        assert counted.physical == sum(p.numel() for p in net.parameters())
        assert counted.bytes_physical == sum(p.numel() * p.element_size() for p in net.parameters())
        logical = {"a.weight", "a.bias", "b.weight", "b.bias", "c.weight"}
        assert counted.logical == sum(
            net.get_parameter(n).numel() for n in logical if self.is_tied is False
        ) + (
            sum(getattr(net.get_submodule(n[0]), n[2:]).numel() for n in logical)
            if self.is_tied
            else 0
        )
        x = self.x()
        with torch.no_grad():
            torch.testing.assert_close(
                net(x), plain_forward(net, x, leaves, b_w, c_w), rtol=1e-5, atol=1e-5
            )

    # ---- rules --------------------------------------------------------------------------
    @precondition(lambda self: self.net.a.weight.requires_grad)
    @rule(lr=st.sampled_from([0.1, 1.0]))
    def sgd_step(self, lr):
        net = self.net
        x = self.x()
        leaves = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
        if self.is_tied:
            b_w = by_hand(
                self.name, net, leaves["a." + CASES[self.name][1]], leaves.get("b.weight_scale")
            )
            c_w = leaves["a.weight"]
        else:
            b_w, c_w = leaves["b.weight"], leaves["c.weight"]
        plain_forward(net, x, leaves, b_w, c_w).square().sum().backward()
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        opt.zero_grad()
        net(x).square().sum().backward()
        for n, p in net.named_parameters():  # every use's gradient reaches the one tensor
            torch.testing.assert_close(p.grad, leaves[n].grad, rtol=1e-5, atol=1e-6)
        opt.step()

    @rule()
    def zero_grad(self):
        self.net.zero_grad()
        assert all(p.grad is None for p in self.net.parameters())

    @rule(flag=st.booleans())
    def requires_grad(self, flag):
        self.net.requires_grad_(flag)
        assert all(p.requires_grad is flag for p in self.net.parameters())
        if self.is_tied and self.name == "Same":
            assert self.net.b.weight.requires_grad is flag

    @rule(
        strict=st.booleans(),
        assign=st.booleans(),
        shift=st.sampled_from([0.5, -2.0]),
        then_call=st.booleans(),
    )
    def load_state_dict_into_itself(self, strict, assign, shift, then_call):
        sd = {k: v + shift for k, v in self.net.state_dict().items()}
        self.net.load_state_dict(sd, strict=strict, assign=assign)
        for k, v in sd.items():
            assert torch.equal(self.net.get_parameter(k), v.to(self.dtype)), k
        if then_call:  # before any read: the model's own tensors run untied as tied
            own = dict(self.net.named_parameters())
            got = torch.func.functional_call(self.net, own, (self.x(),), tie_weights=False)
            with torch.no_grad():
                assert torch.equal(got, self.net(self.x()))

    @precondition(lambda self: self.is_tied)
    @rule(strict=st.booleans(), seed=st.integers(1, 3))
    def load_state_dict_into_a_fresh_tied_model(self, strict, seed):
        fresh = tied(self.name, seed).to(self.dtype)
        sd = self.net.state_dict()
        fresh.load_state_dict(sd, strict=strict)
        assert set(fresh.state_dict()) == set(sd)
        self.net = fresh

    @rule(into_tied=st.booleans())
    def save_over_an_existing_file_then_load(self, into_tied):
        tying.save(self.net, self.file)
        self.saved = {k: v.clone() for k, v in self.net.state_dict().items()}
        fresh = tied(self.name, seed=5) if into_tied and self.is_tied else Net(self.name, 5)
        fresh = fresh.to(self.dtype)
        loaded = tying.load(fresh, self.file)
        assert isinstance(loaded, tying.Plan)
        if self.is_tied:
            assert tying.verify(fresh) == 2
        for k, v in self.saved.items():
            assert torch.equal(fresh.get_parameter(k), v), k
        self.net = fresh

    @precondition(lambda self: self.saved is not None)
    @rule()
    def failed_save_leaves_the_old_file(self):
        old = self.file.read_bytes()
        before = snapshot(self.net)
        with pytest.raises((TypeError, ValueError, tying.TieError, OSError)):
            tying.save(self.net, self.file / "inside_a_file.safetensors")
        assert self.file.read_bytes() == old
        assert_unchanged(self.net, before)

    @rule(which=st.sampled_from(["shape", "missing", "self"]))
    def failed_plan_changes_nothing(self, which):
        before = snapshot(self.net)
        bad = {
            "shape": tying.share("a.weight", like="b.bias"),
            "missing": tying.share("b.weight", like="nowhere.weight"),
            "self": tying.share("a.bias", like="a.bias", relation=tying.Transposed()),
        }[which]
        with pytest.raises((TypeError, ValueError, tying.TieError)):
            tying.Plan([bad]).apply(self.net)
        assert_unchanged(self.net, before)

    @precondition(lambda self: self.is_tied)
    @rule()
    def reapplying_the_plan_is_a_no_op(self):
        before = snapshot(self.net)
        plan(self.name).apply(self.net)
        assert_unchanged(self.net, before)

    @rule(call_first=st.booleans())
    def deepcopy_is_independent(self, call_first):
        net = self.net
        copied = copy.deepcopy(net)
        if call_first and self.is_tied:
            # the copy's first read is a functional_call that replaces the source: the copy
            # knows its own source tensor, so a foreign Parameter is not taken for it
            src = "a." + CASES[self.name][1]
            foreign = nn.Parameter(torch.zeros_like(copied.get_parameter(src)))
            with pytest.raises(tying.TieError, match="tie_weights=False"):
                torch.func.functional_call(copied, {src: foreign}, (self.x(),), tie_weights=False)
        before = snapshot(net)
        with torch.no_grad():
            for p in copied.parameters():
                p.add_(1.0)
        assert_unchanged(net, before)
        self.net = copied

    @rule(call_first=st.booleans())
    def pickle_round_trip(self, call_first):
        copied = pickle.loads(pickle.dumps(self.net))
        if call_first and self.is_tied:
            src = "a." + CASES[self.name][1]
            foreign = nn.Parameter(torch.zeros_like(copied.get_parameter(src)))
            with pytest.raises(tying.TieError, match="tie_weights=False"):
                torch.func.functional_call(copied, {src: foreign}, (self.x(),), tie_weights=False)
        self.net = copied

    @rule(strict=st.booleans())
    def failed_load_state_dict_keeps_the_tie(self, strict):
        sd = self.net.state_dict()
        sd["b.bias"] = torch.zeros(7, dtype=self.dtype)  # (4,) expected
        with pytest.raises((RuntimeError, tying.TieError), match="b.bias"):
            self.net.load_state_dict(sd, strict=strict)

    @precondition(lambda self: self.is_tied)
    @rule(which=st.sampled_from(["a", "b", "c"]))
    def replace_a_module_then_retie(self, which):
        net = self.net
        old = net.get_submodule(which)
        fresh = Net(self.name, seed=11).to(self.dtype).get_submodule(which)
        if which == "a":  # the source module: every read through the tie is refused
            setattr(net, which, fresh)
            with pytest.raises(tying.TieError, match="replaced"):
                net(self.x())
            # No repair re-ties to a replaced source yet (left open at stop 49: plan.apply,
            # retie and untie all refuse); each refusal must be loud and change nothing.
            params = [(n, p, p.detach().clone()) for n, p in net.named_parameters()]
            for call in (tying.retie, tying.untie, plan(self.name).apply):
                with pytest.raises(tying.TieError, match="a.weight"):
                    call(net)
                now = list(net.named_parameters())
                assert [(n, p) for n, p, _ in params] == now
                assert all(torch.equal(p, v) for _, p, v in params)
            setattr(net, which, old)  # putting the module back restores the tie
            return
        else:
            setattr(net, which, fresh)
            tying.retie(net)
        assert net.get_submodule(which) is fresh and old is not fresh

    @rule(dtype=st.sampled_from([torch.float32, F64]))
    def to_dtype(self, dtype):
        self.net.to(dtype)
        self.dtype = dtype
        assert all(p.dtype == dtype for p in self.net.parameters())

    @precondition(lambda self: self.is_tied)
    @rule(tie_weights=st.booleans(), as_parameter=st.booleans())
    def functional_call_with_a_new_source(self, tie_weights, as_parameter):
        net, (_, src, _, _) = self.net, CASES[self.name]
        x = self.x()
        own = getattr(net.a, src)
        new = torch.linspace(-1, 1, own.numel(), dtype=self.dtype).reshape(own.shape)
        new = nn.Parameter(new) if as_parameter else new.requires_grad_()
        before = snapshot(net)
        if tie_weights:
            got = torch.func.functional_call(net, {f"a.{src}": new}, (x,))
            leaves = dict(net.named_parameters())
            leaves = {**leaves, f"a.{src}": new}
            want = plain_forward(net, x, leaves, by_hand(self.name, net, new), leaves["a.weight"])
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        else:
            with pytest.raises(tying.TieError, match="tie_weights=False"):
                torch.func.functional_call(net, {f"a.{src}": new}, (x,), tie_weights=False)
            own_call = torch.func.functional_call(
                net, dict(net.named_parameters()), (x,), tie_weights=False
            )
            with torch.no_grad():
                assert torch.equal(own_call, net(x))
        assert_unchanged(net, before)

    @precondition(lambda self: self.is_tied)
    @rule()
    def untie(self):
        b_w = by_hand(self.name, self.net).detach().clone()
        assert tying.untie(self.net) == 2
        self.is_tied = False
        assert torch.equal(self.net.b.weight, b_w)
        assert self.net.c.weight is not self.net.a.weight

    @precondition(lambda self: not self.is_tied)
    @rule()
    def tie_again(self):
        plan(self.name).apply(self.net)
        self.is_tied = True


TiedModelMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=10, deadline=None, derandomize=True
)
TestTiedModel = TiedModelMachine.TestCase
