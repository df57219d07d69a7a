"""DPSGD as a user chains it, against a brute-force float64 reference kept beside it (stop 49).

The machine drives one :class:`tying.train.DPSGD` on a small model (untied, a Plan tie, a
transposed tie, one Linear called twice) through steps of every batch size (0 and 1
included, with and without ``n_data``), changes of ``max_grad_norm`` and
``noise_multiplier`` between steps, train/eval switches, a resume from saved states, a
pickle round trip of the whole run, refused steps, and ``tying.untie`` after the optimizer
was built. Beside it a reference model takes each step by hand: one backward per example,
Opacus' clipping rule ``min(1, C / (‖g‖ + 1e-6))`` on the physical parameters, the noise
drawn from its own copy of the generator, SGD with momentum written out. After each rule
the parameters must equal the reference's (the tie holding: the same physical names), and
ε must equal Opacus' RDP accountant's on the history the machine kept itself. A refused
step must leave parameters, optimizer state, accountant and generator as they were.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from opacus.accountants import RDPAccountant
from torch import nn

import tying
from tests.train.models import Albert, TiedAE, ce, mlp, mse, twice
from tying.train import DPSGD

# stop 56: these steps vary the batch size without n_data on purpose (DPSGD warns once)
pytestmark = pytest.mark.filterwarnings("ignore:DPSGD.step without n_data:UserWarning")

Q, N_DATA, LR, MOMENTUM, DELTA = 0.5, 8, 0.1, 0.9, 1e-5


def _physical(model):
    return dict(model.named_parameters())


class Halves(nn.Module):
    """Linear-tanh-Linear that halves its hidden rows on batches of more than 3 (a forward
    whose per-example gradient exists only through the batch: mode="vmap" must refuse it
    there, ghost clipping differentiates the batched forward)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 3)
        self.double()

    def forward(self, x):  # (B, 6) -> (B, 3)
        h = torch.tanh(self.a(x))  # (B, 5)
        return self.b(h / 2 if x.shape[0] > 3 else h)


MODELS = {  # name: (build, loss, input width, classification)
    "mlp": (mlp, ce, 6, True),
    "albert": (Albert, ce, 6, True),
    "tied_ae": (TiedAE, mse, 6, False),
    "twice": (twice, mse, 5, False),
    "halves": (Halves, ce, 6, True),
}


def _reference_grads(model, loss_fn, x, y, C):
    """Σ_b clip_C(g_b), g_b by one backward per example through the batched forward
    (Opacus' clipping rule), float64."""
    params = _physical(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for b in range(len(y)):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y)[b].backward()
        g = {
            n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in params.items()
        }
        norm = torch.cat([v.flatten() for v in g.values()]).norm()
        factor = min(1.0, C / (float(norm) + 1e-6))
        for n in total:
            total[n] += factor * g[n]
    model.zero_grad(set_to_none=True)
    return total


class DPSGDMachine(RuleBasedStateMachine):
    @initialize(
        kind=st.sampled_from(sorted(MODELS)),
        mode=st.sampled_from(["vmap", "ghost"]),
        sigma=st.sampled_from([0.0, 0.8]),
    )
    def build(self, kind, mode, sigma):
        make, self.loss_fn, self.width, self.classify = MODELS[kind]
        self.model = make()
        self.ref = copy.deepcopy(self.model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.gen = torch.Generator().manual_seed(7)
        self.ref_gen = torch.Generator().manual_seed(7)
        self.dp = DPSGD(
            self.model,
            self.opt,
            noise_multiplier=sigma,
            max_grad_norm=0.5,
            sample_rate=Q,
            mode=mode,
            generator=self.gen,
        )
        self.bufs: dict[str, torch.Tensor] = {}  # the reference's momentum, by name
        self.history: list[list] = []  # [sample_rate, sigma, steps] as the machine ran them
        self.tol = dict(rtol=1e-7, atol=1e-10)
        self.stale_optimizer = False  # untie made new Parameters the optimizer lacks
        self.data = torch.Generator().manual_seed(3)
        self.x_dtype = torch.float64

    # -- helpers -------------------------------------------------------------------------
    def _batch(self, B):
        x = torch.randn(B, self.width, generator=self.data, dtype=torch.float64)
        x = x.to(self.x_dtype)
        y = torch.randint(0, 3, (B,), generator=self.data) if self.classify else x.clone()
        return x, y

    def _snapshot(self):
        return (
            {n: p.detach().clone() for n, p in self.model.named_parameters()},
            [p.grad for p in self.model.parameters()],
            copy.deepcopy(self.opt.state_dict()),
            (self.dp.steps, list(self.dp.history), self.dp._drawn),
            self.gen.get_state(),
        )

    def _assert_unchanged(self, before):
        params, grads, opt_state, acc, gen = before
        now = self._snapshot()
        assert list(now[0]) == list(params)
        for n in params:
            assert torch.equal(now[0][n], params[n]), n
        assert all(a is b for a, b in zip(now[1], grads))
        assert repr(now[2]) == repr(opt_state)
        assert now[3] == acc
        assert torch.equal(now[4], gen)

    def _reference_step(self, x, y, n_data):
        C, sigma, q = self.dp.max_grad_norm, self.dp.noise_multiplier, self.dp.sample_rate
        summed = _reference_grads(self.ref, self.loss_fn, x, y, C)
        d = q * n_data if n_data is not None else max(len(y), 1)
        with torch.no_grad():
            for n, p in _physical(self.ref).items():
                if not p.requires_grad:  # frozen: no .grad, so SGD skips it (momentum too)
                    continue
                g = summed[n]
                if sigma > 0:
                    g = g + torch.normal(
                        0.0, sigma * C, size=g.shape, generator=self.ref_gen, dtype=g.dtype
                    )
                g = g / d
                buf = self.bufs.get(n)
                self.bufs[n] = g.clone() if buf is None else buf.mul_(MOMENTUM).add_(g)
                p.sub_(LR * self.bufs[n])
        if self.history and self.history[-1][:2] == [q, sigma]:
            self.history[-1][2] += 1
        else:
            self.history.append([q, sigma, 1])

    # -- rules ---------------------------------------------------------------------------
    # steps are the point of the machine: three rules, so that they are drawn often
    @rule(B=st.integers(0, 6), with_n_data=st.booleans())
    def step(self, B, with_n_data):
        self._step(B, with_n_data)

    @rule(B=st.integers(1, 6))
    def step_with_n_data(self, B):
        self._step(B, True)

    @rule(B=st.integers(1, 6))
    def step_actual_size(self, B):
        self._step(B, False)

    def _step(self, B, with_n_data):
        x, y = self._batch(B)
        n_data = N_DATA if with_n_data else None
        before = self._snapshot()
        if self.stale_optimizer:
            try:
                self.dp.step(self.loss_fn, x, y, n_data=n_data)
            except ValueError as err:
                assert "the optimizer does not hold" in str(err) or "empty batch" in str(err)
                self._assert_unchanged(before)
                return
            raise AssertionError("a step with an optimizer that lacks a parameter ran")
        if B == 0 and n_data is None and self.dp.noise_multiplier > 0:
            try:
                self.dp.step(self.loss_fn, x, y)
            except ValueError as err:
                assert "an empty batch" in str(err)
                self._assert_unchanged(before)
                return
            raise AssertionError("an empty batch with noise and no n_data ran")
        try:
            self.dp.step(self.loss_fn, x, y, n_data=n_data)
        except ValueError as err:
            if isinstance(self.model, Halves) and B > 3 and self.dp.mode == "vmap":
                assert "the forward depends on the batch it runs in" in str(err), err
            else:  # the batch-rate check, on a long run of small batches
                assert "Poisson sampling at sample_rate" in str(err), err
            self._assert_unchanged(before)
            return
        # vmap differentiates each example alone: past B = 3 it is another model
        assert not (isinstance(self.model, Halves) and B > 3 and self.dp.mode == "vmap")
        self._reference_step(x, y, n_data)

    @rule(C=st.sampled_from([0.05, 0.5, 5.0]))
    def set_max_grad_norm(self, C):
        self.dp.max_grad_norm = C

    @rule(sigma=st.sampled_from([0.0, 0.8, 1.5]))
    def set_noise(self, sigma):
        self.dp.noise_multiplier = sigma

    @rule(train=st.booleans())
    def train_or_eval(self, train):
        self.model.train(train)
        self.ref.train(train)

    @rule(bad=st.sampled_from(["nan_input", "rows", "clip0", "lr_nan"]))
    def refused_step(self, bad):
        x, y = self._batch(3)
        before = self._snapshot()
        saved_c, saved_lr = self.dp.max_grad_norm, self.opt.param_groups[0]["lr"]
        if bad == "nan_input":
            x[1, 0] = float("nan")
        elif bad == "rows":
            y = y[:2]
        elif bad == "clip0":
            self.dp.max_grad_norm = 0.0
        else:
            self.opt.param_groups[0]["lr"] = float("nan")
        try:
            self.dp.step(self.loss_fn, x, y, n_data=N_DATA)
        except ValueError:
            pass
        else:
            raise AssertionError(f"a step with {bad} ran")
        finally:
            self.dp.max_grad_norm, self.opt.param_groups[0]["lr"] = saved_c, saved_lr
        self._assert_unchanged(before)

    @rule()
    def resume_from_saved_states(self):
        """A new DPSGD on the model and optimizer, states through torch.save/torch.load."""
        f = io.BytesIO()
        torch.save(
            {
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "dp": self.dp.state_dict(),
            },
            f,
        )
        f.seek(0)
        saved = torch.load(f, weights_only=True)
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["opt"])
        self.gen = torch.Generator()
        self.dp = DPSGD(
            self.model,
            self.opt,
            noise_multiplier=self.dp.noise_multiplier,
            max_grad_norm=self.dp.max_grad_norm,
            sample_rate=self.dp.sample_rate,
            mode=self.dp.mode,
            generator=self.gen,
        )
        self.dp.load_state_dict(saved["dp"])

    @rule()
    def pickle_round_trip(self):
        """The whole run (model, optimizer, DPSGD) through one torch.save, as one object."""
        f = io.BytesIO()
        torch.save((self.model, self.opt, self.dp), f)
        f.seek(0)
        self.model, self.opt, self.dp = torch.load(f, weights_only=False)
        self.gen = self.dp.generator
        assert self.dp.model is self.model and self.dp.optimizer is self.opt

    @precondition(lambda self: hasattr(self, "ref") and bool(tying.ties(self.model)))
    @rule()
    def untie_after_the_optimizer(self):
        # a module called twice has no slot to give a copy (untie returns 0): nothing changes
        untied = tying.untie(self.model)
        assert tying.untie(self.ref) == untied
        self.stale_optimizer = self.stale_optimizer or untied > 0

    @rule()
    def new_optimizer(self):
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.dp.optimizer = self.opt
        self.bufs = {}
        self.stale_optimizer = False

    @rule(q=st.sampled_from([0.5, 0.25]))
    def set_sample_rate(self, q):
        self.dp.sample_rate = q

    @rule(mode=st.sampled_from(["vmap", "ghost"]))
    def set_mode(self, mode):
        self.dp.mode = mode

    @rule(k=st.integers(0, 20))
    def freeze_or_thaw(self, k):
        names = list(_physical(self.model))
        name = names[k % len(names)]
        p, r = _physical(self.model)[name], _physical(self.ref)[name]
        p.requires_grad_(not p.requires_grad)
        r.requires_grad_(p.requires_grad)
        if not any(q.requires_grad for q in self.model.parameters()):
            p.requires_grad_(True)  # a model with nothing to train is refused, not a case here
            r.requires_grad_(True)

    @rule()
    def to_float32(self):
        self.model.float()
        self.ref.float()
        self.tol = dict(rtol=2e-4, atol=2e-5)
        self.x_dtype = torch.float32

    @rule()
    def deepcopy_run(self):
        self.model, self.opt, self.dp = copy.deepcopy((self.model, self.opt, self.dp))
        self.gen = self.dp.generator

    @rule()
    def epsilon_is_opacus(self):
        assert self.dp.steps == sum(n for _, _, n in self.history)
        if any(s == 0 for _, s, _ in self.history):  # a step without noise: no finite epsilon
            with pytest.raises(ValueError, match="noise_multiplier must be a finite number > 0"):
                self.dp.epsilon(DELTA)
            return
        got = self.dp.epsilon(DELTA)
        if not self.history:
            assert got == 0.0
            return
        acc = RDPAccountant()
        acc.history = [(s, q, n) for q, s, n in self.history]
        want, best = acc.get_privacy_spent(delta=DELTA)
        # Opacus' figure where its orders suffice; tighter (and still valid) beyond them
        assert got <= want * (1 + 1e-9)
        if best < max(acc.DEFAULT_ALPHAS):
            assert math.isclose(got, want, rel_tol=1e-9)

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def parameters_equal_the_reference(self):
        if not hasattr(self, "ref"):
            return
        got, want = _physical(self.model), _physical(self.ref)
        assert list(got) == list(want)  # the tie holds: the same physical tensors
        for n in want:
            torch.testing.assert_close(got[n], want[n], **self.tol)
            assert got[n].requires_grad == want[n].requires_grad
        assert self.dp.steps == sum(n for _, _, n in self.history)
        assert all(p.grad is None for p in self.model.parameters())


DPSGDMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=10, deadline=None, derandomize=True
)
TestDPSGD = DPSGDMachine.TestCase


def test_a_refused_step_at_b3_does_not_vet_the_forward_for_b4():
    """The machine's sequence on the old code: build(halves, vmap), refused_step(nan_input)
    (B = 3, probed there and refused for its NaN), step(B = 4): the forward halves at B = 4,
    each example alone does not, and the step ran with vmap's gradient of another model."""
    model = Halves()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    dp = DPSGD(model, opt, noise_multiplier=0.0, max_grad_norm=0.5, sample_rate=Q)
    data = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, generator=data, dtype=torch.float64)
    x[1, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        dp.step(ce, x, torch.randint(0, 3, (3,), generator=data), n_data=N_DATA)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(4, 6, generator=data, dtype=torch.float64), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match="depends on the batch it runs in.*batch of 4"):
        dp.step(ce, x, y)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert dp.steps == 0 and dp.history == []
