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
    r = mod.bn_vs_gn("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["GN output change when the batch partner changes"] == 0.0
    assert r.measured["BN output change when the batch partner changes"] > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("fn", [mod.tied_unet, mod.soft_iou_dice, mod.bn_vs_gn])
def test_report_size(fn):
    assert fn("report", 0).passed
