"""A sum-reduced loss seeded with 1/B (loss.backward(torch.tensor(1 / B))) is a mean written
by hand, as loss.sum() / B is: accepted under loss_reduction="mean", per-sample grads = loop."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
B = 4


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def test_a_sum_loss_seeded_with_one_over_b_is_a_mean():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(B, 6, generator=g), torch.randint(0, 3, (B,), generator=g)
    net = _net()
    gsm = grad_sample_module(net, loss_reduction="mean")
    F.cross_entropy(gsm(x), y, reduction="sum").backward(torch.tensor(1.0 / B))
    ref, rows = _net(), []
    for b in range(B):
        ref.zero_grad()
        F.cross_entropy(ref(x[b : b + 1]), y[b : b + 1]).backward()
        rows.append(ref[0].weight.grad.clone())
    torch.testing.assert_close(net[0].weight.grad_sample, torch.stack(rows))


def test_a_sum_loss_seeded_with_one_is_still_refused():
    net = _net()
    gsm = grad_sample_module(net, loss_reduction="mean")
    x, y = torch.randn(B, 6), torch.zeros(B, dtype=torch.long)
    with pytest.raises(ValueError, match=r"the loss is a sum over the batch"):
        F.cross_entropy(gsm(x), y, reduction="sum").backward()
