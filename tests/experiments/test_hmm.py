"""C3 hmm-tied-emissions and C4 pair-hmm-symmetry at quick size (report size: slow)."""

from __future__ import annotations

import pytest

from tying.experiments import load_all
from tying.experiments.hmm import hmm_tied_emissions, pair_hmm_symmetry


def test_registered():
    reg = load_all()
    assert reg["hmm-tied-emissions"].fn is hmm_tied_emissions
    assert reg["pair-hmm-symmetry"].fn is pair_hmm_symmetry


def test_hmm_tied_emissions_quick():
    r = hmm_tied_emissions("quick", 0)
    assert r.passed
    m = r.measured
    assert m["untied/tied mean error at small data"] > 1.3
    assert m["worst relative EM step (>= -1e-9)"] >= -1e-9
    assert m["max |ΔA| after one EM step, tied vs untied"] <= 1e-10
    assert "tied_emissions" in r.figures


def test_pair_hmm_symmetry_quick():
    r = pair_hmm_symmetry("quick", 0)
    assert r.passed
    m = r.measured
    assert m["max |Δ log p| / |log p|, tied"] == 0.0  # bit for bit
    assert m["max |Δ log p| / |log p|, untied (control)"] > 1e-3
    assert m["tied fit, labels swapped: max parameter change"] <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("fn", [hmm_tied_emissions, pair_hmm_symmetry])
def test_report_size(fn):
    assert fn("report", 0).passed


def test_bad_size():
    with pytest.raises(ValueError, match="size must be one of"):
        hmm_tied_emissions("huge", 0)
