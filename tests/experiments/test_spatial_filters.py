"""B4 and C1 at quick size."""

from __future__ import annotations

import pytest
import torch

from tying.experiments import spatial_filters as mod

from .helpers_spatial import check_result


def test_symmetric_filter():
    r = mod.symmetric_filter("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["palindromic response to antisymmetric input"] < 1e-12
    assert r.measured["MSE ratio untied/palindromic at fewest windows"] > 1.3
    assert r.measured["palindromic physical/logical taps"] == (5, 9)


def test_symmetric_filter_shows_the_ratio_at_every_size_it_checks():
    # the check also needs the ratio >= 0.98 at every size; only the first was shown
    r = mod.symmetric_filter("quick", 1)
    m = r.measured
    ratios = [row["untied / palindromic"] for row in r.tables[0].rows]
    assert m["MSE ratio untied/palindromic, smallest over sizes"] == min(ratios)
    verdict = (
        m["palindromic response to antisymmetric input"] < 1e-12
        and m["untied response to antisymmetric input"] > 1e-3
        and m["MSE ratio untied/palindromic at fewest windows"] > 1.3
        and m["MSE ratio untied/palindromic, smallest over sizes"] > 0.98
    )
    assert verdict == r.passed


def test_cnn_as_pgm():
    r = mod.cnn_as_pgm("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["trained vs least squares (rel.)"] < 1e-7


@pytest.mark.slow
@pytest.mark.parametrize("fn", [mod.symmetric_filter, mod.cnn_as_pgm])
def test_report_size(fn):
    assert fn("report", 0).passed


def test_symmetric_filter_fits_reach_least_squares():
    # stop 35: 50 L-BFGS iterations left the untied report fits up to 28% (test MSE) from
    # the least-squares filter and understated the MSE ratio (3.96, converged 4.67)
    r = mod.symmetric_filter("quick", 0)
    assert r.measured["largest test-MSE gap to the least-squares filter (rel.)"] < 1e-4
    assert "of the exact least-squares filter" in r.notes


def test_symmetric_filter_fails_when_its_fits_stop_short(monkeypatch):
    import dataclasses

    short = dataclasses.replace(mod.SYM_FILTER["quick"], iters=5)
    monkeypatch.setitem(mod.SYM_FILTER, "quick", short)
    r = mod.symmetric_filter("quick", 0)
    assert r.measured["largest test-MSE gap to the least-squares filter (rel.)"] > 1e-2
    assert not r.passed


def test_least_squares_filter_is_palindromic_when_tied():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 7, generator=gen, dtype=torch.float64)
    a = torch.randn(40, generator=gen, dtype=torch.float64)
    w = mod._least_squares_filter(x, a, tied=True)
    assert torch.equal(w, w.flip(0))
    free = mod._least_squares_filter(x, a, tied=False)
    loss = lambda v: ((x[:, 0, :] @ v - a) ** 2).mean()  # noqa: E731
    assert loss(free) <= loss(w)
