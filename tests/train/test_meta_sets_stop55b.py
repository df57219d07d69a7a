"""FastSlow on empty sets, non-finite meta-losses and BatchNorm (stop 55, second pass).

An empty support set gave a mean loss of NaN whose gradient is 0, so ``adapt`` returned
the shared init as the adapted weights; no task, or empty query sets, gave a NaN
meta-loss; a NaN in a task's data went into Adam, which wrote NaN into every weight.
Each with no error.
"""

import pytest
import torch
from torch import nn

from tying.train import FastSlow


def mse(out, y):
    return ((out - y) ** 2).mean()


def _fs(**kw):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1))
    return net, FastSlow(net, fast=["2"], inner_lr=0.3, inner_steps=1, **kw)


def _tasks(t=3, s=4, q=6):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(t, s, 2, generator=g),
        torch.randn(t, s, 1, generator=g),
        torch.randn(t, q, 2, generator=g),
        torch.randn(t, q, 1, generator=g),
    )


def test_empty_support_set_is_refused_not_the_init_returned():
    _, fs = _fs()
    with pytest.raises(ValueError, match=r"adapt: the support set has no rows .*steps=0"):
        fs.adapt(mse, torch.randn(0, 2), torch.randn(0, 1))
    xs, ys, xq, yq = _tasks(s=0)
    with pytest.raises(ValueError, match="support set has no rows"):
        fs.meta_loss(mse, xs, ys, xq, yq)
    # steps=0 adapts nothing by request: allowed, the init comes back
    fast = fs.adapt(mse, torch.randn(0, 2), torch.randn(0, 1), steps=0)
    assert fast["2.bias"] is fs.fast_init()["2.bias"]


def test_no_task_or_empty_query_sets_refused():
    _, fs = _fs()
    with pytest.raises(ValueError, match=r"meta_loss: the batch holds no task"):
        fs.meta_loss(mse, *_tasks(t=0))
    with pytest.raises(ValueError, match=r"meta_loss: each query set has no rows"):
        fs.meta_loss(mse, *_tasks(q=0))
    xs, ys, xq, yq = _tasks()
    with pytest.raises(ValueError, match=r"same size, got \{'xs': 3, 'ys': 2"):
        fs.meta_loss(mse, xs, ys[:2], xq, yq)
    with pytest.raises(ValueError, match="support set has 4 inputs but 3 targets"):
        fs.meta_loss(mse, xs, ys[:, :3], xq, yq)


def test_meta_loss_still_equals_the_loop_by_hand():
    net, fs = _fs()
    xs, ys, xq, yq = _tasks()
    params = dict(net.named_parameters())
    total = 0.0
    for t in range(3):
        fast = {n: params[n] for n in fs.fast_names}
        g = torch.autograd.grad(
            mse(torch.func.functional_call(net, fast, (xs[t],)), ys[t]), list(fast.values())
        )
        fast = {n: fast[n] - 0.3 * gi for n, gi in zip(fast, g)}
        total = total + mse(torch.func.functional_call(net, fast, (xq[t],)), yq[t])
    torch.testing.assert_close(fs.meta_loss(mse, xs, ys, xq, yq), total / 3)


@pytest.mark.parametrize("learn_inner_lr", [False, True])
def test_non_finite_meta_loss_refused_before_adam_writes_nan(learn_inner_lr):
    net, fs = _fs(learn_inner_lr=learn_inner_lr)
    calls = []

    def sample(gen):
        calls.append(1)
        xs, ys, xq, yq = _tasks()
        if len(calls) == 2:
            ys[1, 0, 0] = float("nan")  # one bad target in one task
        return xs, ys, xq, yq

    fs.meta_fit(sample, mse, meta_steps=1, lr=0.01)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    rates = {n: p.detach().clone() for n, p in fs.inner_lrs.items()}
    with pytest.raises(FloatingPointError, match=r"meta_fit: at step 0 the meta-loss was nan"):
        fs.meta_fit(sample, mse, meta_steps=2, lr=0.01)
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]), n
    for n, p in fs.inner_lrs.items():
        assert torch.equal(p, rates[n]), n


def test_a_batchnorm_in_training_mode_is_named_with_the_fix():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 5), nn.BatchNorm1d(5), nn.Linear(5, 1))
    fs = FastSlow(net, fast=["2"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    xs, ys, xq, yq = _tasks()
    with pytest.raises(ValueError, match=r"meta_loss: 1 is a BatchNorm1d in training mode.*eval"):
        fs.meta_loss(mse, xs, ys, xq, yq)
    with pytest.raises(ValueError, match=r"adapt: 1 is a BatchNorm1d in training mode"):
        fs.adapt(mse, xs[0], ys[0])
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    net.eval()  # running statistics as they are: runs, and equals the loop by hand
    params = dict(net.named_parameters())
    fast = {n: params[n] for n in fs.fast_names}
    g = torch.autograd.grad(
        mse(torch.func.functional_call(net, fast, (xs[0],)), ys[0]), list(fast.values())
    )
    want = {n: fast[n] - 0.1 * gi for n, gi in zip(fast, g)}
    got = fs.adapt(mse, xs[0], ys[0])
    for n in want:
        torch.testing.assert_close(got[n], want[n])


def test_one_target_row_broadcast_over_the_inputs_still_adapts():
    """Found in review: the row-count check refused one target row shared by every input
    (a constant target), which a broadcasting loss reads as before."""
    torch.manual_seed(0)
    fs = FastSlow(nn.Linear(4, 1), fast=["**"])
    x = torch.randn(5, 4)
    fast = fs.adapt(lambda o, y: ((o - y) ** 2).mean(), x, torch.full((1, 1), 3.0), steps=1)
    assert set(fast) == {"weight", "bias"}
    moved = fs.adapt(lambda o, y: ((o - y) ** 2).mean(), x, torch.full((5, 1), 3.0), steps=1)
    assert all(torch.equal(fast[k], moved[k]) for k in fast)  # same as the target written out
