"""B1, B2, B3, A4 at quick size: each asserts its claim's check with real numbers."""

from __future__ import annotations

import math

import pytest

from tying.experiments import load_all
from tying.experiments import spatial as mod

from .helpers_spatial import check_result

SPATIAL_IDS = [
    "translation-equivariance",
    "c4-equivariance",
    "c4-sample-efficiency",
    "motif-scan",
    "symmetric-filter",
    "cnn-as-pgm",
    "siamese",
    "tied-unet",
    "soft-iou-dice",
    "bn-vs-gn",
    "hashednets",
]


def test_every_spatial_claim_is_registered():
    registry = load_all()
    missing = [i for i in SPATIAL_IDS if i not in registry]
    assert not missing


def test_translation_equivariance():
    r = mod.translation_equivariance("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["circular conv max rel. error"] < 1e-12
    assert r.measured["dense max rel. error"] > 0.1


def test_c4_equivariance_is_deterministic():
    r = mod.c4_equivariance("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["tied max rel. error"] < 1e-12 < 0.1 < r.measured["untied min rel. error"]
    assert mod.c4_equivariance("quick", 0).measured == r.measured


def test_c4_sample_efficiency():
    r = mod.c4_sample_efficiency("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["mean accuracy gap (C4 − plain)"] >= 0.1
    c4, plain = r.measured["parameters C4 / plain"]
    assert abs(c4 - plain) / plain < 0.15  # compared at about equal size


def test_motif_scan():
    r = mod.motif_scan("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["conv accuracy, unseen positions"] >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize(
    "fn",
    [
        mod.translation_equivariance,
        mod.c4_equivariance,
        mod.c4_sample_efficiency,
        mod.motif_scan,
    ],
)
def test_report_size(fn):
    assert fn("report", 0).passed


@pytest.mark.parametrize(
    ("fn", "key"),
    [
        (mod.translation_equivariance, "circular conv max rel. error"),
        (mod.c4_equivariance, "tied max rel. error"),
    ],
)
def test_a_nan_equivariance_error_fails_the_check(monkeypatch, fn, key):
    """Stop 31: worst errors were Python max(), which drops a NaN that is not first: one
    NaN error of a tied net (the 2nd transform, the 2nd shift) gave PASS, 8.6e-16."""
    real, calls = mod._rel_err, []

    def second_is_nan(a, b):
        calls.append(1)
        return float("nan") if len(calls) == 2 else real(a, b)

    monkeypatch.setattr(mod, "_rel_err", second_is_nan)
    r = fn("quick", 0)
    assert not r.passed and math.isnan(r.measured[key])
