"""B13, D1, D2 at quick size."""

from __future__ import annotations

import pytest

from tying.experiments import spatial_segmentation as mod

from .helpers_spatial import check_result


def test_tied_unet():
    r = mod.tied_unet("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["physical params saved"] >= 0.3
    assert r.measured["soft IoU untied"] - r.measured["soft IoU tied"] <= 0.05


def test_soft_iou_dice():
    r = mod.soft_iou_dice("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["Dice/IoU relative weight on the smallest object"] > 2.0


def test_soft_iou_dice_verdict_follows_from_the_measured_numbers():
    # two of the four conditions compared numbers the page did not show
    r = mod.soft_iou_dice("quick", 1)
    m = r.measured
    verdict = (
        min(m["test IoU, trained on soft IoU"], m["test IoU, trained on soft Dice"]) >= 0.6
        and m["Dice/IoU relative weight on the smallest object"] > 2.0
        and m["max |IoU/Dice gradient ratio − 2/(2−D)²|"] < 1e-9
        and m["soft IoU relative weight on the smallest object"]
        > m["cross-entropy relative weight on the smallest object"]
    )
    assert verdict == r.passed


def test_bn_vs_gn():
    # stop 36: trained to convergence, BN in batches of 2 reaches GN's accuracy; the check's
    # first condition (GN ahead by >= 0.1) held only after one epoch, and now fails
    r = mod.bn_vs_gn("quick", 0)
    check_result(r)
    assert not r.passed
    m = r.measured
    assert m["GN − BN accuracy, evaluated in batches of 2"] < 0.1
    assert abs(m["BN eval − BN batch-of-2 accuracy (train/eval gap)"]) >= 0.05
    assert m["GN output change when the batch partner changes"] == 0.0
    assert m["BN output change when the batch partner changes"] > 1e-3
    assert "At convergence the first condition fails" in r.notes


def test_bn_vs_gn_trains_past_the_first_epoch():
    # one epoch (200 steps) left BN in batches of 2 still learning: the gap read 0.24-0.30
    # where the settled one is 0.01-0.03 (quick and report, seeds 0 and 1)
    for size in ("quick", "report"):
        cfg = mod.NORM[size]
        assert cfg.steps * 2 >= 10 * cfg.train  # 10 epochs at batch size 2


@pytest.mark.slow
@pytest.mark.parametrize("fn", [mod.tied_unet, mod.soft_iou_dice])
def test_report_size(fn):
    assert fn("report", 0).passed


@pytest.mark.slow
def test_bn_vs_gn_report_size_fails_at_convergence():
    m = mod.bn_vs_gn("report", 0)
    assert not m.passed
    assert m.measured["GN − BN accuracy, evaluated in batches of 2"] < 0.1
