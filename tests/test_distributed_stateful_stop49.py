"""Stop 49: a state machine over a tied model under ``td.ddp`` / ``td.fully_shard``.

Defects that survive one-property sweeps are order- and state-dependent: a call right
alone but wrong after another (a failed save, a load into a wrapped model, an unwrap and
a re-wrap, a step after a load). The machine chains the public operations a user chains
on a one-process gloo group and checks, after every rule, that the tie is one physical
tensor, that every parameter equals a plain-torch reference kept beside the model (the
ties written out by hand: ``head = emb``, ``layers.1.weight = layers.0.weight.T``), and
that a refused call left the model and the file as they were.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from torch import nn

import tying
import tying.distributed as td
from tests.test_distributed_stop37 import Stack

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")

RULES = [
    tying.share("head.weight", like="emb.weight"),
    tying.share("layers.1.weight", like="layers.0.weight", relation=tying.Transposed()),
]
PHYSICAL = ("emb.weight", "layers.0.weight", "layers.0.bias", "layers.1.bias")
PHYSICAL += ("layers.2.weight", "layers.2.bias")


def tied(seed: int) -> Stack:
    torch.manual_seed(seed)
    model = Stack()
    tying.Plan(RULES).apply(model)
    return model


def reference_forward(ref: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The tied stack in plain torch, each tie written out by hand."""
    h = F.embedding(x, ref["emb.weight"])  # (B, T, d)
    h = torch.tanh(F.linear(h, ref["layers.0.weight"], ref["layers.0.bias"]))
    h = torch.tanh(F.linear(h, ref["layers.0.weight"].T, ref["layers.1.bias"]))
    h = torch.tanh(F.linear(h, ref["layers.2.weight"], ref["layers.2.bias"]))
    return F.linear(h, ref["emb.weight"])  # (B, T, vocab)


def reference_step(ref: dict[str, torch.Tensor], x: torch.Tensor, lr: float) -> dict:
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in ref.items()}
    reference_forward(leaves, x).pow(2).mean().backward()
    return {k: (v - lr * v.grad).detach() for k, v in leaves.items()}


def physical(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's physical tensors, full (gathered) where FSDP2 sharded them."""
    out = {}
    for name in PHYSICAL:
        t = model.get_parameter(name).detach()
        out[name] = (t.full_tensor() if hasattr(t, "full_tensor") else t).clone()
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _cpu_mesh():
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (1,))


class DistributedTiedModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        if not dist.is_initialized():
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        self.folder = tempfile.mkdtemp(prefix="tying_stop49_")
        self.path = os.path.join(self.folder, "ckpt.safetensors")
        self.model = tied(0)
        self.front: nn.Module = self.model  # what the user calls: the model or its wrapper
        self.helper: str | None = None
        self.ref = physical(self.model)
        self.saved: dict | None = None
        self.x = torch.arange(12).reshape(2, 6) % 12

    def teardown(self):
        for name in os.listdir(self.folder):
            os.remove(os.path.join(self.folder, name))
        os.rmdir(self.folder)
        if dist.is_initialized():
            dist.destroy_process_group()

    def _state(self) -> dict[str, torch.Tensor]:
        return physical(self.model)

    @precondition(lambda self: self.helper is None)
    @rule()
    def wrap_ddp(self):
        self.front = td.ddp(self.model)
        self.helper = "ddp"

    @precondition(lambda self: self.helper is None)
    @rule()
    def wrap_fully_shard(self):
        td.fully_shard(self.model, mesh=_cpu_mesh())
        self.front = self.model
        self.helper = "fully_shard"

    @precondition(lambda self: self.helper == "ddp")
    @rule()
    def unwrap(self):
        self.front = self.front.module
        assert self.front is self.model
        self.helper = None

    @rule(lr=st.sampled_from([0.05, 0.5]), shift=st.integers(0, 11))
    def step(self, lr, shift):
        x = (self.x + shift) % 12
        opt = torch.optim.SGD(self.front.parameters(), lr=lr)
        opt.zero_grad()
        self.front(x).pow(2).mean().backward()
        opt.step()
        self.ref = reference_step(self.ref, x, lr)

    @rule()
    def save(self):
        td.save(self.front, self.path)  # over the file of an earlier save, if any
        self.saved = {k: v.clone() for k, v in self.ref.items()}

    @precondition(lambda self: self.saved is not None)
    @rule(bad=st.sampled_from(["metadata", "rank_local", "folder"]))
    def failed_save(self, bad):
        before = _read(self.path)
        state = self._state()
        kwargs = {"metadata": {"step": 1}} if bad == "metadata" else {}
        if bad == "rank_local":
            kwargs = {"rank_local": ["emb.weigth"]}
        path = self.folder if bad == "folder" else self.path
        with pytest.raises((TypeError, tying.TieError, IsADirectoryError), match=r"save"):
            td.save(self.front, path, **kwargs)
        assert _read(self.path) == before
        after = self._state()
        assert all(torch.equal(state[k], after[k]) for k in state)

    @precondition(lambda self: self.saved is not None)
    @rule(seed=st.integers(1, 3))
    def load_fresh_and_continue(self, seed):
        fresh = tied(seed)
        td.load(fresh, self.path)
        tying.verify(fresh)
        assert fresh.head.weight is fresh.emb.weight
        torch.testing.assert_close(fresh(self.x), reference_forward(self.saved, self.x))
        self.model = self.front = fresh
        self.helper = None
        self.ref = {k: v.clone() for k, v in self.saved.items()}

    @precondition(lambda self: self.saved is not None)
    @rule(seed=st.integers(1, 3))
    def load_untied(self, seed):
        torch.manual_seed(seed)
        plain = Stack()
        td.load(plain, self.path)
        tying.verify(plain)
        assert plain.head.weight is plain.emb.weight
        torch.testing.assert_close(plain(self.x), reference_forward(self.saved, self.x))

    @precondition(lambda self: self.saved is not None)
    @rule()
    def load_into_current(self):
        td.load(self.front, self.path)
        self.ref = {k: v.clone() for k, v in self.saved.items()}

    @invariant()
    def tie_holds_and_matches_the_reference(self):
        tying.verify(self.model)
        if self.helper != "fully_shard":
            assert self.model.head.weight is self.model.emb.weight
        assert len({id(p) for p in self.front.parameters()}) == len(PHYSICAL)
        state = self._state()
        for name in PHYSICAL:
            torch.testing.assert_close(state[name], self.ref[name], rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            torch.testing.assert_close(
                self.front(self.x), reference_forward(self.ref, self.x), rtol=1e-5, atol=1e-5
            )


DistributedTiedModel.TestCase.settings = settings(
    max_examples=20, stateful_step_count=10, deadline=None, derandomize=True
)
TestDistributedTiedModel = DistributedTiedModel.TestCase
