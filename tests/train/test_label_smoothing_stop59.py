"""Stop 59: torch's label-smoothed cross-entropy hid its reduction from grad_sample_module.

``F.cross_entropy(..., label_smoothing=e)`` is built as ``(1 - e) * nll + smooth * e / C``,
so the loss's root node is a sum of two terms and stop 57's check (a loss reduced
otherwise than ``loss_reduction``) saw nothing: ``reduction="sum"`` under Opacus' default
``"mean"`` gave every example 4.0x its gradient at B = 4 (and ``"mean"`` under ``"sum"``
0.25x), no error. Now refused like the plain loss; the matching pairs equal the loop.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

B, V = 4, 5
X = torch.randn(B, 3, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 4])


def _net():
    torch.manual_seed(0)
    return nn.Linear(3, V)


def _smoothed(reduction):
    return lambda o: F.cross_entropy(o, Y, label_smoothing=0.1, reduction=reduction)


@pytest.mark.parametrize(("declared", "reduction"), [("mean", "sum"), ("sum", "mean")])
def test_a_smoothed_loss_reduced_otherwise_is_refused_and_nothing_written(declared, reduction):
    net = _net()
    gsm = grad_sample_module(net, loss_reduction=declared)
    with pytest.raises(
        ValueError,
        match=rf"the loss is a {reduction} over the batch \(NllLossBackward0 \(cross_entropy with label_smoothing\)",
    ):
        _smoothed(reduction)(gsm(X)).backward()
    assert net.weight.grad is None and getattr(net.weight, "grad_sample", None) is None


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_smoothed_loss_reduced_as_declared_equals_the_loop(reduction):
    net = _net()
    grad_sample_module(net, loss_reduction=reduction)
    _smoothed(reduction)(net(X)).backward()
    want = []
    alone = _net()
    for b in range(B):
        alone.zero_grad()
        F.cross_entropy(alone(X[b : b + 1]), Y[b : b + 1], label_smoothing=0.1).backward()
        want.append(alone.weight.grad.clone())
    torch.testing.assert_close(net.weight.grad_sample, torch.stack(want), rtol=1e-5, atol=1e-6)
