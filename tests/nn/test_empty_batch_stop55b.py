"""Losses over an empty batch (stop 55, second pass).

``soft_iou``/``soft_dice`` (and their loss modules) with ``reduction="mean"`` and
``contrastive_loss`` returned NaN for a batch of 0 samples, with no error: a training
step on it turned every weight NaN. They now refuse by name; ``"sum"`` (0, the sum of
no score) and ``"none"`` (an empty tensor) keep working, checked against plain torch.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import tying.nn as tnn

FUNCTIONS = {
    "soft_iou": lambda p, t, r: tnn.soft_iou(p, t, reduction=r),
    "soft_dice": lambda p, t, r: tnn.soft_dice(p, t, reduction=r),
    "SoftIoULoss": lambda p, t, r: tnn.SoftIoULoss(reduction=r)(p, t),
    "SoftDiceLoss": lambda p, t, r: tnn.SoftDiceLoss(reduction=r)(p, t),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_mean_over_an_empty_batch_is_refused_by_name(name):
    p, t = torch.rand(0, 2, 3, requires_grad=True), torch.rand(0, 2, 3)
    with pytest.raises(ValueError, match=rf"{name}: the batch is empty .*reduction='sum'"):
        FUNCTIONS[name](p, t, "mean")
    # the sum of no score is 0 and its gradient is empty, as torch's own sum over nothing
    total = FUNCTIONS[name](p, t, "sum")
    assert total.item() == torch.zeros(0).sum().item() == 0.0
    total.backward()
    assert p.grad.shape == p.shape
    assert FUNCTIONS[name](p, t, "none").shape == (0,)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_a_sample_with_no_pixels_still_scores(name):
    # (B, 0) is a batch of samples with empty masks: each scores 1 (loss 0), as eps says
    p, t = torch.rand(3, 0), torch.rand(3, 0)
    got = FUNCTIONS[name](p, t, "mean")
    assert got.item() == (0.0 if "Loss" in name else 1.0)


def test_contrastive_loss_on_no_pair_is_refused_by_name():
    za = torch.zeros(0, 4)
    with pytest.raises(ValueError, match=r"contrastive_loss: the batch is empty \(0 pairs\)"):
        tnn.contrastive_loss(za, za.clone(), torch.zeros(0))
    # one pair still gives the hand value: same=0, d = 0.5 < margin 1 -> (1 - 0.5)^2
    got = tnn.contrastive_loss(torch.zeros(1, 2), torch.tensor([[0.3, 0.4]]), torch.zeros(1))
    assert got.item() == pytest.approx(0.25)


@pytest.mark.parametrize("method", ["penalty", "mismatch"])
def test_shared_boundary_over_no_points_is_refused_by_name(method):
    # penalty's mean over no point was NaN (no error), mismatch's max a bare torch error
    torch.manual_seed(0)
    u, bc = tnn.mlp([2, 8, 1]), tnn.SharedBoundary(2, 1.0, derivatives=1)
    with pytest.raises(ValueError, match=rf"SharedBoundary\.{method}: t holds no points"):
        getattr(bc, method)(u, torch.zeros(0, 1))
    # one point: the penalty is the hand sum of both ends' squared gaps to g(t)
    t = torch.tensor([[0.3]])
    g = bc.boundary(t)
    ends = []
    for x0 in (0.0, 1.0):
        c = torch.tensor([[x0, 0.3]], requires_grad=True)
        v = u(c)
        (dv,) = torch.autograd.grad(v.sum(), c, create_graph=True)
        ends.append(torch.cat([v, dv[:, :1]], dim=-1))
    want = ((ends[0] - g) ** 2 + (ends[1] - g) ** 2).sum()
    torch.testing.assert_close(bc.penalty(u, t), want)


def test_a_traced_contrastive_loss_refuses_no_pair_in_the_graph():
    # traced on 3 pairs, the size check was a constant of the graph: 0 pairs gave NaN
    za, zb, same = torch.randn(3, 2), torch.randn(3, 2), torch.tensor([1.0, 0.0, 1.0])
    with warnings.catch_warnings():  # torch's TracerWarning / "trace is deprecated"
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(tnn.contrastive_loss, (za, zb, same), check_trace=False)
    a, b, s = torch.randn(5, 2), torch.randn(5, 2), torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(traced(a, b, s), tnn.contrastive_loss(a, b, s))
    with pytest.raises(RuntimeError, match=r"contrastive_loss: the batch is empty"):
        traced(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0))
