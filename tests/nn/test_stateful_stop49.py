"""Stop 49: a state machine chains the operations a user applies to a tied layer of
``tying.nn`` (forward, SGD steps, state-dict round trips, deepcopy, dtype moves,
train/eval, in-place edits under ``no_grad``, ``reset_parameters``, loads with and without
``assign=True``, channels-last, a group conv's ``algorithm`` switch, ``requires_grad_``,
``torch.save``, a refused load) and checks after each one that the tie holds and the
numbers are right. A layer may start in eval mode, where group convs keep their bank:
with that bank's invalidation removed by hand the machine fails within its 40 examples.

The references, kept beside the layer and never sharing its code path:

- forward: an untied copy (``tying.untie`` of a deepcopy: every tied use materialised
  as its own tensor, so no gather, kept bank or cache of the layer is read), called on
  the same input;
- gradients: central differences in float64 of the layer's own loss at a few entries of
  every physical parameter (brute force: the sum over tied copies comes out of it);
- a refused call: the state dict is the snapshot taken before it.

The layers are those of the stop-42 sweep (``test_layer_transforms_stop42.CASES``), so a
new public layer added there is chained here too.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

import tying
import tying.nn as tn
from tests.nn.test_layer_transforms_stop42 import CASES, _float_args
from tests.nn.test_layer_transforms_stop42 import _case as _sweep_case

# slow to call many times (an ODE solve, a UNet) or float32-only (Winograd's bound is
# ten times the direct one): swept by the stop-42 tests, left out of the chains here
SKIP = {"NeuralODE", "TiedUNet", "TiedUNet(untied)", "EncoderDecoder"}


class _Both(torch.nn.Module):
    """A Siamese's two outputs as one tensor, so both towers are compared."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, a, b):
        return torch.cat(self.layer(a, b))


def _siamese():
    # BatchNorm: its running statistics are shared state of the two towers (stop 31)
    tower = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh())
    net = tn.Siamese(tower)
    g = torch.Generator().manual_seed(5)
    return net, _Both(net), (torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)), {}


def _albert():
    stack = tn.Stack(tn.TransformerBlock(8, 2, d_ff=12) for _ in range(3))
    tn.share_layers(stack, free="norm*")
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(6))
    return stack, stack, (x,), {}


# layers the sweep does not hold: the ties a user makes with a Siamese or share_layers
EXTRA = {"Siamese(BatchNorm)": _siamese, "Stack(share_layers)": _albert}
NAMES = sorted([n for n in CASES if n not in SKIP] + list(EXTRA))


def _case(name, seed=0):
    if name in EXTRA:
        torch.manual_seed(seed)
        return EXTRA[name]()
    return _sweep_case(name, seed)


def _out(y):
    return y[0] if isinstance(y, tuple) else y


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


class TiedLayerMachine(RuleBasedStateMachine):
    """One tied layer and the operations a user chains on it."""

    @initialize(name=st.sampled_from(NAMES), seed=st.integers(0, 3), train=st.booleans())
    def build(self, name, seed, train):
        self.name = name
        self.layer, self.module, args, self.kwargs = _case(name, seed=seed)
        self.module.train(train)  # eval from the start: a kept bank is in play at once
        self.args = args
        self.dtype = torch.float32
        self.ties = tying.verify(self.layer)

    # -- the checks ----------------------------------------------------------------------
    def _inputs(self):
        return _float_args(self.args, self.dtype)

    def _reference(self):
        layer = self.layer
        if isinstance(layer, tn.HashedEmbedding):  # untie is refused: the plain lookup
            weight = layer.weight.detach().clone()  # (V, D): the logical table
            if isinstance(layer, tn.HashedEmbeddingBag):
                return lambda ids: F.embedding_bag(ids, weight, mode=layer.pooling)
            return lambda ids: F.embedding(ids, weight)
        if isinstance(layer, tn.Siamese):  # one tower called twice: one set of statistics
            tower = copy.deepcopy(layer.left)
            return lambda a, b: torch.cat([tower(a), tower(b)])
        twin = copy.deepcopy(self.module)
        tying.untie(getattr(twin, "layer", twin))
        return twin

    def _check_forward(self):
        tol = {"rtol": 1e-5, "atol": 1e-6} if self.dtype == torch.float32 else {}
        args = self._inputs()
        ref = self._reference()
        with torch.no_grad():
            want = _out(ref(*args, **self.kwargs))
            got = _out(self.module(*args, **self.kwargs))
        torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{self.name}: {m}")
        got_grad = _out(self.module(*args, **self.kwargs))  # the autograd path too
        torch.testing.assert_close(got_grad.detach(), want, **tol)
        assert tying.verify(self.layer) == self.ties

    # -- the rules -------------------------------------------------------------------------
    @rule()
    def forward(self):
        self._check_forward()

    @rule(train=st.booleans())
    def mode(self, train):
        self.module.train(train)
        self._check_forward()

    @rule(lr=st.sampled_from([0.01, 0.1]))
    def sgd_step(self, lr):
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            return
        opt = torch.optim.SGD(params, lr=lr)
        _out(self.module(*self._inputs(), **self.kwargs)).float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        self._check_forward()

    @rule(delta=st.sampled_from([0.25, -1.0]), which=st.integers(0, 7))
    def edit_in_place(self, delta, which):
        # under no_grad, as a user edits a weight by hand: any kept bank must notice
        params = list(self.module.parameters())
        if not params:
            return
        with torch.no_grad():
            params[which % len(params)].add_(delta)
        self._check_forward()

    @rule(seed=st.integers(10, 12))
    def state_dict_round_trip(self, seed):
        state = self.layer.state_dict()
        fresh, module, _, _ = _case(self.name, seed=seed)
        module.to(self.dtype)
        module(*self._inputs(), **self.kwargs)  # called first: nothing of its own may stay
        fresh.load_state_dict(state, strict=True)
        if hasattr(fresh, "algorithm"):  # not state (docs/nn.md): chosen per layer
            fresh.algorithm = self.layer.algorithm
        with torch.no_grad():
            want = _out(self.module(*self._inputs(), **self.kwargs))
            got = _out(module(*self._inputs(), **self.kwargs))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        module.train(self.module.training)
        self.layer, self.module = fresh, module
        self._check_forward()

    @rule()
    def reset_parameters(self):
        if not hasattr(self.layer, "reset_parameters"):
            return
        self.layer.reset_parameters()  # re-draws the stored values: every tied use follows
        self._check_forward()

    @rule()
    def load_with_assign(self):
        # assign=True swaps the parameter objects: nothing may still read the old ones
        state = {k: v * 0.5 if v.is_floating_point() else v for k, v in _state(self.layer).items()}
        self.layer.load_state_dict(state, assign=True)
        self._check_forward()

    @rule()
    def channels_last(self):
        self.module.to(memory_format=torch.channels_last)  # 4-D parameters only
        self._check_forward()

    @rule()
    def load_into_the_layer(self):
        # the layer's own values changed by a load (a kept bank must be dropped)
        state = {k: v + 0.5 if v.is_floating_point() else v for k, v in _state(self.layer).items()}
        self.layer.load_state_dict(state)
        self._check_forward()

    @rule()
    def refused_load(self):
        before = _state(self.layer)
        state = _state(self.layer)
        key = next((k for k, v in state.items() if v.is_floating_point() and v.ndim), None)
        if key is None:
            return
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
        with pytest.raises((RuntimeError, ValueError)):
            self.layer.load_state_dict(state)
        assert _same_state(_state(self.layer), before)
        self._check_forward()

    @rule()
    def deepcopy(self):
        twin = copy.deepcopy(self.module)
        before = _state(self.layer)
        params = list(twin.parameters())
        if params:
            with torch.no_grad():
                params[0].add_(1.0)  # the copy's edit must not reach the original
        assert _same_state(_state(self.layer), before)
        self._check_forward()
        self.module, self.layer = twin, getattr(twin, "layer", twin)
        self._check_forward()

    @rule()
    def to_float64_and_back(self):
        self.module.double()
        self.dtype = torch.float64
        self._check_forward()
        self.module.float()
        self.dtype = torch.float32
        self._check_forward()

    @rule()
    def switch_algorithm(self):
        # a group conv's algorithm is assignable: the next call must take the new one,
        # and the untied reference (F.conv2d on its own blocks) still gives the numbers
        layer = self.layer
        if not isinstance(layer, tn.LiftingConv2d | tn.GroupConv2d) or layer.kernel_size != 3:
            return
        layer.algorithm = "winograd" if layer.algorithm == "direct" else "direct"
        self._check_forward()

    @rule(flag=st.booleans())
    def requires_grad(self, flag):
        self.module.requires_grad_(flag)
        self._check_forward()

    @rule()
    def save_and_load_module(self):
        buf = io.BytesIO()
        torch.save(self.module, buf)
        buf.seek(0)
        self.module = torch.load(buf, weights_only=False)
        self.layer = getattr(self.module, "layer", self.module)
        self._check_forward()

    @precondition(lambda self: self.dtype == torch.float32)
    @rule()
    def gradients_equal_finite_differences(self):
        twin = copy.deepcopy(self.module).double().train(False)
        params = [(n, p) for n, p in twin.named_parameters() if p.requires_grad]
        if not params:
            return
        args = _float_args(self.args, torch.float64)

        def loss():
            return _out(twin(*args, **self.kwargs)).square().sum()

        value = loss()
        grads = torch.autograd.grad(value, [p for _, p in params], allow_unused=True)
        eps = 1e-5
        # central differences: O(eps²) truncation, round-off about 1e-16·|loss|/eps
        slack = 1e-9 * abs(value.item())
        for (n, p), g in zip(params, grads, strict=True):
            g = torch.zeros_like(p) if g is None else g
            for i in torch.linspace(0, p.numel() - 1, 3).long().unique().tolist():
                at = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), p.shape))
                with torch.no_grad():  # indexed, not viewed: a channels-last block has no view
                    old = p[at].item()
                    p[at] = old + eps
                    up = loss().item()
                    p[at] = old - eps
                    down = loss().item()
                    p[at] = old
                want = (up - down) / (2 * eps)
                assert abs(g[at].item() - want) <= 1e-4 * (1 + abs(want)) + slack, (
                    f"{self.name}: d loss / d {n}{list(at)} = {g[at].item()}, "
                    f"finite differences {want}"
                )


# no bfloat16 round trip among the rules: after ``.to(torch.bfloat16).float()`` a deepcopy
# (or verify) of a layer with a computed slot is refused as a ".data write" whenever the
# allocator hands the rounded values the old address (core's lost-write check keys on
# data_ptr and version; reported to the lead, stop 49). No shrinking: a failure prints
# its (derandomized, reproducible) sequence at once instead of minutes later.
TiedLayerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=10,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
TestTiedLayerMachine = TiedLayerMachine.TestCase
