"""A6 landscape-symmetry and D7 symmetry-breaking at quick size (report size: slow)."""

from __future__ import annotations

import math

import pytest
import torch

from tying.experiments.symmetry import (
    LANDSCAPE,
    _enumerate_conv_symmetries,
    _flat_directions,
    landscape_symmetry,
    symmetry_breaking,
)


def test_landscape_symmetry():
    r = landscape_symmetry("quick", 0)
    assert r.passed
    m = r.measured
    assert m["max |Δf| over neuron permutations"] <= 1e-12
    assert m["min |Δf| when only inputs are permuted (control)"] > 1e-6
    assert m["brute-force conv-keeping permutations"] == math.factorial(3)
    assert (m["null space shared"], m["null space untied"]) == (2, 12)


def test_brute_force_counts_filter_permutations_only():
    cfg = LANDSCAPE["quick"]
    out = _enumerate_conv_symmetries(cfg, torch.Generator().manual_seed(1))
    assert out["permutations"] == math.factorial(cfg.filters * cfg.enum_positions)
    assert out["keep the conv"] == math.factorial(cfg.filters)


def test_flat_directions_one_per_neuron_vs_one_per_filter():
    cfg = LANDSCAPE["quick"]
    null_shared, n_shared, _ = _flat_directions(True, cfg, seed=4)
    null_untied, n_untied, _ = _flat_directions(False, cfg, seed=4)
    assert (null_shared, null_untied) == (cfg.hess_filters, cfg.hess_filters * 6)
    assert n_untied > n_shared


def test_symmetry_breaking():
    r = symmetry_breaking("quick", 0)
    assert r.passed
    m = r.measured
    assert m["constant: max spread during training"] == 0.0
    assert m["constant: units found identical"] == list(range(8))
    assert m["random: tie groups found"] == 0
    assert m["nudged: spread growth"] > 100


@pytest.mark.slow
@pytest.mark.parametrize("fn", [landscape_symmetry, symmetry_breaking])
def test_report_size(fn):
    assert fn("report", 0).passed
