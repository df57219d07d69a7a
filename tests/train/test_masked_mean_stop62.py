"""Stop 62: a mean over the entries a mask kept, under Opacus' hooks.

``F.mse_loss(out[mask], y[mask])`` over a padded sequence regression (and ``l1``,
``huber``, ``binary_cross_entropy_with_logits``, ``loss[mask].mean()``) divides by the
entries kept in the whole batch, so Opacus' hooks gave each example ``B n_b / N`` times
its own masked mean: 0.67x, 1.0x and 1.33x the per-example loop's gradient norms for
examples keeping 2, 3 and 4 of 4 steps, no error. Refused at the backward, before any
per-sample gradient is written; even masks, unmasked means, the advice and a per-example
loop equal the loop.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module
from tying.train._masked_mean import kept_entries, masked_mean_nodes

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

B, T, D = 3, 4, 2
G = torch.Generator().manual_seed(0)
X, Y = torch.randn(B, T, 5, generator=G), torch.randn(B, T, D, generator=G)
UNEVEN = torch.ones(B, T, dtype=torch.bool)
UNEVEN[0, 2:] = False  # keeps 2, 3 and 4 of 4
UNEVEN[1, 3:] = False
EVEN = torch.ones(B, T, dtype=torch.bool)
EVEN[:, 3:] = False


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, D))


def _advice(o, y, m, reduce):
    per = F.mse_loss(o, y, reduction="none")
    m = m[..., None].expand_as(per)
    own = (per * m).reshape(len(o), -1).sum(1) / m.reshape(len(o), -1).sum(1).clamp(min=1)
    return getattr(own, reduce)()


REFUSED = {
    "mse": lambda o, y, m: F.mse_loss(o[m], y[m]),
    "l1": lambda o, y, m: F.l1_loss(o[m], y[m]),
    "huber": lambda o, y, m: F.huber_loss(o[m], y[m]),
    "bce": lambda o, y, m: F.binary_cross_entropy_with_logits(o[m], (y[m] > 0).float()),
    "masked_select": lambda o, y, m: F.mse_loss(
        o.masked_select(m[..., None]), y.masked_select(m[..., None])
    ),
    "hand mean": lambda o, y, m: ((o - y) ** 2).sum(-1)[m].mean(),
    "scaled": lambda o, y, m: F.smooth_l1_loss(o[m], y[m]) / 4,
}
TAKEN = {
    "mse even": (lambda o, y, m: F.mse_loss(o[m], y[m]), EVEN, "mean"),
    "mse unmasked": (lambda o, y, m: F.mse_loss(o, y), UNEVEN, "mean"),
    "same positions": (lambda o, y, m: F.mse_loss(o[:, [0, 2]], y[:, [0, 2]]), UNEVEN, "mean"),
    "advice mean": (lambda o, y, m: _advice(o, y, m, "mean"), UNEVEN, "mean"),
    "advice sum": (lambda o, y, m: _advice(o, y, m, "sum"), UNEVEN, "sum"),
    "per-example loop": (
        lambda o, y, m: sum(F.mse_loss(o[b][m[b]], y[b][m[b]]) for b in range(len(o))),
        UNEVEN,
        "sum",
    ),
}


def _loop(loss, mask) -> torch.Tensor:
    net, want = _net(), []
    for b in range(B):
        net.zero_grad()
        loss(net(X[b : b + 1]), Y[b : b + 1], mask[b : b + 1]).backward()
        want.append(net[0].weight.grad.clone())
    return torch.stack(want)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", list(REFUSED))
def test_an_uneven_masked_mean_is_refused_and_nothing_written(name, reduction):
    net = _net()
    gsm = grad_sample_module(net, loss_reduction=reduction)
    try:
        with pytest.raises(ValueError, match=r"mean over the entries a mask .* keep from 2 to 4"):
            REFUSED[name](gsm(X), Y, UNEVEN).backward()
        assert all(getattr(p, "grad_sample", None) is None for p in net.parameters())
    finally:
        gsm._close()


@pytest.mark.parametrize("name", list(TAKEN))
def test_even_masks_unmasked_means_and_the_advice_equal_the_loop(name):
    loss, mask, reduction = TAKEN[name]
    net = _net()
    gsm = grad_sample_module(net, loss_reduction=reduction)
    try:
        loss(gsm(X), Y, mask).backward()
        got = net[0].weight.grad_sample.clone()
    finally:
        gsm._close()
    # the loop's examples are batches of one: under "mean" their mean is their own
    torch.testing.assert_close(got, _loop(loss, mask), rtol=1e-5, atol=1e-6)


def test_the_helpers():
    out = torch.randn(2, 3, requires_grad=True) * 1
    keep = torch.tensor([[True, False, False], [True, True, True]])
    assert [
        type(n).__name__ for n in masked_mean_nodes([F.mse_loss(out[keep], torch.zeros(4))])
    ] == ["MseLossBackward0"]
    assert masked_mean_nodes([F.mse_loss(out, torch.zeros(2, 3))]) == []
    assert masked_mean_nodes([out.sum(), out.sum()]) == []
    g = torch.zeros(2, 3, 4)
    g[0, 0, 1] = 1.0
    g[1, :, 0] = 1.0
    assert kept_entries(g, 2).tolist() == [1, 3]
    assert kept_entries(torch.ones(3), 2) is None
