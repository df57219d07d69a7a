"""Stop 59: a class-weighted mean under mode="vmap" (each example's loss computed alone).

``nn.CrossEntropyLoss(weight=w)`` with its default ``reduction="mean"`` over one example's
single target is ``w[y] * loss / w[y]``: the weight vanished and every example got its
unweighted gradient (norms [1.68, 1.58, 3.99, 2.15] where the weighted loss gives
[1.68, 3.15, 11.97, 10.74]), no error, while mode="ghost" refused the 0-d loss. Now
refused with advice that, followed, gives ghost clipping's norms.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import DPSGD, per_example_grads, per_example_norms

B, V = 4, 5
W = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
X = torch.randint(0, V, (B, 2), generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 4])


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(V, 3), nn.Flatten(), nn.Linear(6, V))


def _dp(net, mode):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return DPSGD(net, opt, noise_multiplier=0.0, max_grad_norm=1e6, sample_rate=0.5, mode=mode)


@pytest.mark.parametrize(
    "loss_fn",
    [nn.CrossEntropyLoss(weight=W), lambda o, y: F.nll_loss(o.log_softmax(-1), y, weight=W)],
    ids=["module", "nll_loss"],
)
def test_a_weighted_mean_over_one_target_is_refused_and_the_model_unchanged(loss_fn):
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    dp = _dp(net, "vmap")
    with pytest.raises(
        ValueError, match=r"class weight and reduction='mean'.* the weight divides out"
    ):
        dp.step(loss_fn, X, Y, n_data=8)
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
    assert dp.steps == 0


def test_the_advice_gives_ghost_clippings_weighted_norms():
    advised = nn.CrossEntropyLoss(weight=W, reduction="none")
    got = _dp(_net(), "vmap").step(advised, X, Y, n_data=8).norms
    ghost = _dp(_net(), "ghost").step(advised, X, Y, n_data=8).norms
    torch.testing.assert_close(got, ghost, rtol=1e-5, atol=1e-6)
    # the weighted norms, not the unweighted ones the old way gave
    unweighted = _norms(_net(), nn.CrossEntropyLoss(reduction="none"), X, Y)
    assert float((got - unweighted).abs().max()) > 1.0


def _norms(net, loss_fn, x, y):
    return per_example_norms(per_example_grads(net, loss_fn, x, y))


@pytest.mark.parametrize(
    ("loss_fn", "want"),
    [  # each against the per-example loss it equals
        (nn.CrossEntropyLoss(weight=torch.full((V,), 2.0)), nn.CrossEntropyLoss(reduction="none")),
        (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="none")),
        (
            lambda o, y: F.cross_entropy(o, y, weight=W, reduction="sum"),
            nn.CrossEntropyLoss(weight=W, reduction="none"),
        ),
    ],
    ids=["uniform", "unweighted", "weighted sum"],
)
def test_a_loss_whose_weight_does_not_vanish_passes(loss_fn, want):
    torch.testing.assert_close(_norms(_net(), loss_fn, X, Y), _norms(_net(), want, X, Y))


def test_a_weighted_mean_over_an_examples_own_tokens_passes():
    # several targets per example: the mean is that example's own weighted mean
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(V, 3), nn.Linear(3, V))
    tok = torch.randint(0, V, (B, 3), generator=torch.Generator().manual_seed(2))
    ce = lambda o, y: F.cross_entropy(o.flatten(0, 1), y.flatten(), weight=W)  # noqa: E731
    got = _norms(net, ce, tok, tok)
    want = []
    for b in range(B):
        net.zero_grad()
        ce(net(tok[b : b + 1]), tok[b : b + 1]).backward()
        want.append(torch.cat([p.grad.flatten() for p in net.parameters()]).norm())
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-6)


def test_an_example_with_every_target_ignored_is_told_the_cause_and_the_advice_runs():
    y = torch.tensor([0, 1, 2, -100])
    net = _net()
    with pytest.raises(ValueError, match=r"examples \[3\] are not finite .*all ignore_index"):
        _dp(net, "vmap").step(nn.CrossEntropyLoss(), X, y, n_data=8)
    res = _dp(net, "vmap").step(nn.CrossEntropyLoss(reduction="none"), X, y, n_data=8)
    assert float(res.norms[3]) == 0.0 and float(res.losses[3]) == 0.0
