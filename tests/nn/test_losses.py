"""Soft IoU / Dice: values, the J = D/(2-D) relation, gradients, reductions, errors."""

from __future__ import annotations

import pytest
import torch

from tying.nn import SoftDiceLoss, SoftIoULoss, soft_dice, soft_iou


def test_hard_masks_give_iou_and_dice():
    t = torch.zeros(1, 10)
    t[0, :4] = 1
    p = torch.zeros(1, 10)
    p[0, 2:6] = 1  # overlap 2, union 6
    assert soft_iou(p, t, eps=0).item() == pytest.approx(2 / 6)
    assert soft_dice(p, t, eps=0).item() == pytest.approx(4 / 8)


def test_iou_is_a_function_of_dice_and_gradients_are_parallel():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(3, 1, 8, 8, dtype=torch.float64) > 0.7).to(torch.float64)
    j = soft_iou(logits, t, from_logits=True, eps=0, reduction="none")
    d = soft_dice(logits, t, from_logits=True, eps=0, reduction="none")
    torch.testing.assert_close(j, d / (2 - d))
    gj = torch.autograd.grad(j[0], logits)[0][0]
    gd = torch.autograd.grad(d[0], logits)[0][0]
    torch.testing.assert_close(gj, 2 / (2 - d[0].detach()) ** 2 * gd)


def test_losses_reductions_and_logits():
    t = torch.ones(2, 1, 3, 3)
    assert SoftIoULoss(from_logits=True)(torch.full_like(t, 30.0), t).item() == pytest.approx(0)
    none = SoftDiceLoss(reduction="none")(torch.stack([t[0], 0 * t[0]]), t)
    torch.testing.assert_close(none, torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)
    assert SoftDiceLoss(reduction="sum")(torch.zeros_like(t), t).item() == pytest.approx(2.0)
    # an empty prediction of an empty mask is perfect, not 0/0
    assert soft_iou(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 1.0


def test_errors():
    with pytest.raises(ValueError, match=r"one shape, got \(2, 4\) and \(2, 5\)"):
        soft_iou(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="reduction must be one of"):
        SoftIoULoss(reduction="avg")
    with pytest.raises(ValueError, match="batch dim"):
        soft_dice(torch.zeros(4), torch.zeros(4))


@pytest.mark.parametrize("fn", [soft_iou, soft_dice], ids=["iou", "dice"])
def test_logits_passed_as_probabilities_are_refused_not_scored(fn):
    # a score above 1 (a loss below 0) came back with no error when from_logits was forgotten
    t = torch.zeros(2, 1, 4, 4)
    t[..., :2, :2] = 1
    logits = torch.full((2, 1, 4, 4), -3.0)
    logits[..., :2, :2] = 4.0
    with pytest.raises(
        ValueError,
        match=r"the prediction must hold values in \[0, 1\], got min -3, max 4; pass probabilities, or logits with from_logits=True",
    ):
        fn(logits, t)
    assert 0 <= float(fn(logits, t, from_logits=True)) <= 1
    with pytest.raises(
        ValueError, match=r"the target must hold values in \[0, 1\], got min 0, max 2"
    ):
        fn(torch.sigmoid(logits), 2 * t)
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got inf"):
        fn(torch.sigmoid(logits), t, eps=float("inf"))


def test_the_range_check_stays_out_of_torch_func_transforms():
    # under vmap(grad) a value cannot be read back to Python: the check is skipped there,
    # and the per-example gradients equal a loop
    from torch.func import grad, vmap

    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 1, 4, 4, generator=g)
    t = (torch.rand(3, 1, 4, 4, generator=g) > 0.5).float()

    def one(zb, tb):
        return 1 - soft_dice(zb[None], tb[None], from_logits=True)

    got = vmap(grad(one))(z, t)
    want = torch.stack([torch.func.grad(one)(z[i], t[i]) for i in range(3)])
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64])
def test_a_hard_mask_prediction_is_scored_as_its_floats(dtype):
    # a bool prediction made p * t a logical and and p + t a logical or: soft_dice of a
    # perfect bool mask read 2.0 (and soft_iou raised torch's bool-subtraction error)
    t = torch.zeros(2, 1, 4, 4)
    t[0, :, :2, :2] = 1
    t[1, :, 1:, 1:] = 1
    p = torch.zeros(2, 1, 4, 4)
    p[0, :, :2, :3] = 1
    p[1] = t[1]
    for fn in (soft_dice, soft_iou):
        want = fn(p, t, reduction="none")
        got = fn(p.to(dtype), t, reduction="none")
        assert torch.equal(got, want)
    assert soft_dice(t.bool(), t.bool(), reduction="none").tolist() == [1.0, 1.0]


@pytest.mark.parametrize("fn", [soft_iou, soft_dice], ids=["iou", "dice"])
def test_float16_sums_do_not_overflow(fn):
    # a 256x256 float16 mask of ones sums to 65,536 > 65,504: inf, so the score read
    # inf/inf = NaN (and 0 where only the union overflowed), with no error
    t = torch.ones(2, 1, 256, 256)
    p = torch.full_like(t, 0.9)
    p[1] = 0.2
    want = fn(p.double(), t.double(), reduction="none")
    got = fn(p.half(), t.half(), reduction="none")
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.double(), want, atol=1e-3, rtol=0)
    got = fn(torch.logit(p.double()).half(), t.half(), from_logits=True, reduction="none")
    torch.testing.assert_close(got.double(), want, atol=2e-3, rtol=0)


def test_a_bool_eps_is_refused():
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got True"):
        soft_dice(torch.zeros(1, 4), torch.zeros(1, 4), eps=True)
