"""Fast/slow weights: the inner loop adapts only the fast weights; the outer loop trains the slow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tying
from tying.train import FastSlow


def mse(out, y):
    return ((out - y) ** 2).mean()


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))


def _tasks(g, n=8, k=5):
    a = 0.5 + torch.rand(n, 1, 1, generator=g)
    x = torch.rand(n, 2 * k, 1, generator=g) * 4 - 2
    y = a * torch.sin(x)
    return x[:, :k], y[:, :k], x[:, k:], y[:, k:]


def test_split_by_module_and_by_glob():
    fs = FastSlow(_net(), fast=["*.bias"])
    assert fs.fast_names == ["0.bias", "2.bias"] and fs.slow_names == ["0.weight", "2.weight"]
    with pytest.raises(ValueError, match=r"fast pattern 'head' matches no trainable parameter"):
        FastSlow(_net(), fast=["head"])


def test_adapt_changes_only_fast_weights_and_matches_a_hand_written_step():
    net = _net()
    fs = FastSlow(net, fast=["2"], inner_lr=0.3, inner_steps=1)
    x = torch.linspace(-1, 1, 6)[:, None]
    y = 2 * x
    fast = fs.adapt(mse, x, y)
    assert set(fast) == {"2.weight", "2.bias"}
    w, b = net[2].weight, net[2].bias
    gw, gb = torch.autograd.grad(mse(net(x), y), [w, b])
    torch.testing.assert_close(fast["2.weight"], w - 0.3 * gw)
    torch.testing.assert_close(fast["2.bias"], b - 0.3 * gb)


def test_outer_gradient_reaches_slow_weights_through_the_inner_loop():
    net = _net()
    fs = FastSlow(net, fast=["2"], inner_lr=0.3, inner_steps=2)
    xs, ys, xq, yq = _tasks(torch.Generator().manual_seed(0))
    fs.meta_loss(mse, xs, ys, xq, yq).backward()
    second = net[0].weight.grad.clone()
    net.zero_grad()
    FastSlow(net, fast=["2"], inner_lr=0.3, inner_steps=2, first_order=True).meta_loss(
        mse, xs, ys, xq, yq
    ).backward()
    assert second.abs().sum() > 0
    assert not torch.allclose(second, net[0].weight.grad)  # second-order terms matter


def test_meta_loss_batches_tasks_like_a_loop():
    net = _net()
    fs = FastSlow(net, fast=["2"], inner_lr=0.2, inner_steps=3)
    xs, ys, xq, yq = _tasks(torch.Generator().manual_seed(1))
    batched = fs.meta_loss(mse, xs, ys, xq, yq)
    looped = sum(mse(fs.predict(fs.adapt(mse, xs[i], ys[i]), xq[i]), yq[i]) for i in range(8)) / 8
    torch.testing.assert_close(batched, looped)


def test_meta_training_lowers_the_few_shot_loss():
    net = _net()
    fs = FastSlow(net, fast=["2"], inner_lr=0.3, inner_steps=1)
    history = fs.meta_fit(
        _tasks, mse, meta_steps=150, lr=1e-2, generator=torch.Generator().manual_seed(2)
    )
    assert all(math.isfinite(h) for h in history)
    assert sum(history[-20:]) / 20 < 0.5 * sum(history[:20]) / 20


def test_learned_inner_rates_are_trained_and_used():
    net = _net()
    fs = FastSlow(net, fast=["2"], inner_lr=0.1, learn_inner_lr=True)
    assert set(fs.inner_lrs) == {"2.weight", "2.bias"}
    assert torch.equal(fs.inner_lrs["2.bias"], torch.full((1,), 0.1))
    fs.meta_fit(_tasks, mse, meta_steps=20, lr=1e-2, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(fs.inner_lrs["2.weight"], torch.full((1, 16), 0.1))
    x, y = torch.linspace(-1, 1, 6)[:, None], torch.zeros(6, 1)
    w = net[2].weight
    gw = torch.autograd.grad(mse(net(x), y), w)[0]
    torch.testing.assert_close(fs.adapt(mse, x, y)["2.weight"], w - fs.inner_lrs["2.weight"] * gw)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(steps=-1), r"adapt: steps must be an int >= 0, got -1"),
        (dict(steps=2.5), r"adapt: steps must be an int >= 0, got 2.5"),
        (dict(lr=float("nan")), r"adapt: lr must be a finite number, got nan"),
    ],
)
def test_adapt_refuses_settings_that_would_silently_not_adapt(kw, match):
    # steps=-1 ran range(-1): no step, the init returned as the adapted weights
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    fs = FastSlow(net, fast=["2"], inner_lr=0.1)
    x = torch.linspace(-1, 1, 6)[:, None]
    with pytest.raises(ValueError, match=match):
        fs.adapt(lambda out, y: ((out - y) ** 2).mean(), x, x, **kw)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(inner_lr=float("nan")), r"inner_lr must be a finite number, got nan"),
        (dict(inner_steps=1.5), r"inner_steps must be an int >= 0, got 1.5"),
    ],
)
def test_fast_slow_refuses_bad_inner_settings(kw, match):
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=match):
        FastSlow(net, fast=["2"], **kw)


@pytest.mark.parametrize("how", ["hand", "plan"])
def test_fast_patterns_that_split_a_tied_tensor_are_refused(how):
    """named_parameters() names a tied tensor once: fast=["2"] made 2.bias fast and left
    2.weight (the same tensor as 0.weight) slow, with no error (stop 31)."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    if how == "hand":
        net[2].weight = net[0].weight
    else:
        tying.Plan([tying.share("2.weight", like="0.weight")]).apply(net)
    with pytest.raises(ValueError, match=r"2\.weight is tied to 0\.weight .*cannot be both fast"):
        FastSlow(net, fast=["2"])
    fs = FastSlow(net, fast=["0", "2"])  # both paths fast: one fast tensor
    assert sorted(fs.fast_names) == ["0.bias", "0.weight", "2.bias"]
    fs = FastSlow(net, fast=["2.bias"])  # the untied part alone is fine
    assert fs.fast_names == ["2.bias"]


# -- stop 32: rates that ascend, and fast weights predict would have ignored --


@pytest.mark.parametrize("bad", [-0.1, True])
def test_a_negative_or_bool_inner_rate_is_refused(bad):
    """A negative rate ascended the support loss and True was taken for 1.0, no error."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=rf"inner_lr must be a finite number, got {bad}; a rate"):
        FastSlow(net, fast=["2"], inner_lr=bad)
    fs = FastSlow(net, fast=["2"], inner_lr=0.1)
    x = torch.linspace(-1, 1, 6)[:, None]
    with pytest.raises(ValueError, match=rf"adapt: lr must be a finite number, got {bad}; a"):
        fs.adapt(lambda out, y: ((out - y) ** 2).mean(), x, x, lr=bad)


def test_predict_refuses_fast_weights_it_would_ignore():
    """functional_call ignores an unknown name and keeps the init for a missing one: a
    typo gave the un-adapted model's output, with no error."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    fs = FastSlow(net, fast=["2"], inner_lr=0.1)
    x = torch.linspace(-1, 1, 6)[:, None]
    fast = fs.adapt(lambda out, y: ((out - y) ** 2).mean(), x, 3 * x, steps=5)
    assert fs.predict(fast, x).shape == (6, 1)  # adapt's own dict: fine
    typo = {"2.weigth": fast["2.weight"], "2.bias": fast["2.bias"]}
    with pytest.raises(ValueError, match=r"missing \['2.weight'\], not fast \['2.weigth'\]"):
        fs.predict(typo, x)
    with pytest.raises(ValueError, match=r"missing \['2.bias'\], not fast \[\]"):
        fs.predict({"2.weight": fast["2.weight"]}, x)
    with pytest.raises(ValueError, match=r"not fast \['0.weight'\]"):
        fs.predict({**fast, "0.weight": net[0].weight}, x)  # a slow weight is not fast
