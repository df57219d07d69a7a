"""Stop 60: the training loop a user writes around ``DPSGD``, against a per-example loop.

Param groups with their own lr and weight decay, momentum, a scheduler, ``zero_grad``
with ``set_to_none`` either way between steps, and Opacus' habit of an
``optimizer.step()`` after the step, each equal (float64, σ = 0) to one backward per
example clipped by hand. And two refusals whose advice did not work or was missing: a
one-element tensor as ``max_grad_norm``/``noise_multiplier`` (no fix named), and a
BatchNorm without running statistics in training mode (``.eval()`` advised, which then
refuses it again as mixing examples).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import DPSGD

B, C = 6, 0.5


def ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _loop_grads(model, x, y, denom):
    """Each example's gradient alone, clipped to C by hand, summed, over ``denom``."""
    ps = list(model.parameters())
    total = [torch.zeros_like(p) for p in ps]
    for b in range(len(y)):
        g = torch.autograd.grad(ce(model(x[b : b + 1]), y[b : b + 1]).sum(), ps)
        norm = torch.sqrt(sum(gi.square().sum() for gi in g))
        factor = torch.clamp(C / (norm + 1e-6), max=1.0)
        for t, gi in zip(total, g):
            t += factor * gi
    return [t / denom for t in total]


def _groups(model):
    return [
        {"params": model[0].parameters(), "lr": 0.3, "weight_decay": 0.1},
        {"params": model[2].parameters(), "lr": 0.7},
    ]


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_param_groups_momentum_scheduler_and_zero_grad_equal_the_loop(mode):
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(B, 4, generator=g, dtype=torch.float64),
        torch.randint(0, 3, (B,), generator=g),
    )
    net, ref = _mlp(), _mlp()
    opt = torch.optim.SGD(_groups(net), lr=1.0, momentum=0.9)
    ref_opt = torch.optim.SGD(_groups(ref), lr=1.0, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, 1, gamma=0.5)
    dp = DPSGD(net, opt, noise_multiplier=0.0, max_grad_norm=C, sample_rate=0.1, mode=mode)
    for it in range(3):
        opt.zero_grad(set_to_none=it % 2 == 0)  # zeros or None: both taken
        dp.step(ce, x, y, n_data=60)
        opt.step()  # Opacus' habit: the step's .grad is gone, so this moves nothing
        sched.step()
        for p, gi in zip(ref.parameters(), _loop_grads(ref, x, y, 6.0)):
            p.grad = gi
        ref_opt.step()
        ref_sched.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("name", ["max_grad_norm", "noise_multiplier"])
def test_a_one_element_tensor_setting_names_float_and_the_advice_works(name):
    net = _mlp()
    kw = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, name: torch.tensor(0.5)}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(
        TypeError, match=rf"{name} must be a real number, got Tensor .*{name}=float"
    ):
        DPSGD(net, opt, sample_rate=0.1, **kw)
    kw[name] = float(kw[name])  # followed
    DPSGD(net, opt, sample_rate=0.1, **kw)


def test_batchnorm_without_running_statistics_is_not_advised_eval():
    net = nn.Sequential(
        nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 3)
    )
    x, y = torch.randn(B, 4), torch.randint(0, 3, (B,))
    dp = DPSGD(net, torch.optim.SGD(net.parameters(), lr=0.1), noise_multiplier=1.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    with pytest.raises(
        ValueError, match=r"1 is a BatchNorm1d in training mode.*track_running_stats=False"
    ) as info:
        dp.step(ce, x, y, n_data=60)
    assert ".eval() on it" not in str(info.value)
    net.eval()  # what the message says does not help: refused as mixing examples
    with pytest.raises(ValueError, match=r"forward mixes examples.*module 1 \(BatchNorm1d\)"):
        dp.step(ce, x, y, n_data=60)
    tracked = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    dp = DPSGD(tracked, torch.optim.SGD(tracked.parameters(), lr=0.1), noise_multiplier=1.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    with pytest.raises(ValueError, match=r"or call \.eval\(\) on it"):
        dp.step(ce, x, y, n_data=60)
    tracked.eval()  # followed: runs
    dp.step(ce, x, y, n_data=60)
