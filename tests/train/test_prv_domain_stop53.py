"""The PRV accountant's domain, sized once (stop 53).

``epsilon(..., accountant="prv")`` sized Opacus' discretisation domain for its grid-size
check, and Opacus' accountant sized it again: two ``compute_safe_domain_size`` calls,
four RDP series at Opacus' 60 orders per σ, half the time of
``noise_for_epsilon(..., accountant="prv")``. Now one series, its figures equal to
Opacus' bit for bit. Anchor: Opacus' own ``compute_safe_domain_size`` and
``PRVAccountant``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tying.train import accounting, epsilon

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")

# (q, σ, steps, δ): small grids (milliseconds), q = 1 (log(1 - q) = -inf inside Opacus),
# a best RDP order at the end of Opacus' list
CASES = [(1.0, 2.0, 3, 1e-5), (0.1, 1.3, 40, 1e-6), (0.02, 30.0, 5, 1e-5)]


def _opacus_prv(q, sigma, steps, delta):
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = [(sigma, q, steps)]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return acc.get_epsilon(delta=delta)


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), CASES)
def test_the_domain_and_epsilon_are_opacus_own(q, sigma, steps, delta):
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV
    from opacus.accountants.analysis.prv.domain import compute_safe_domain_size

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = compute_safe_domain_size(
            prvs=[PoissonSubsampledGaussianPRV(q, sigma)],
            max_self_compositions=[steps],
            eps_error=0.01,
            delta_error=delta / 1000,
        )
    assert accounting._prv_domain_half(q, sigma, steps, delta) == want
    assert epsilon(q, sigma, steps, delta, accountant="prv") == max(
        _opacus_prv(q, sigma, steps, delta), 0.0
    )


def test_one_rdp_series_per_sigma(monkeypatch):
    from opacus.accountants.analysis import rdp

    calls = []
    real = rdp.compute_rdp

    def counted(*args, **kwargs):
        calls.append(kwargs.get("noise_multiplier"))
        return real(*args, **kwargs)

    assert accounting._domain_rule_holds()  # checked once per process (before counting)
    monkeypatch.setattr(rdp, "compute_rdp", counted)
    accounting._prv_grid_points.cache_clear()
    accounting._prv_domain_half.cache_clear()
    got = epsilon(0.3, 1.7, 11, 1e-5, accountant="prv")
    assert calls == [1.7]  # the old code: 4 (two for its size check, two in Opacus)
    assert got == _opacus_prv(0.3, 1.7, 11, 1e-5)  # Opacus' own, which asks 2 more series


def test_another_opacus_rule_falls_back_to_opacus_own_sizing(monkeypatch):
    """The one-series shortcut restates Opacus' private rule; where the installed Opacus
    sizes the domain otherwise, its own function is used and its accountant is left alone."""
    monkeypatch.setattr(accounting, "_domain_rule_holds", lambda: False)
    accounting._prv_domain_half.cache_clear()
    try:
        half = accounting._prv_domain_half(0.1, 1.3, 40, 1e-6)
        assert half == accounting._opacus_domain_half(0.1, 1.3, 40, 1e-6)
        from opacus.accountants import PRVAccountant

        acc = PRVAccountant()
        before = acc._get_domain
        accounting._reuse_domain(acc, 0.1, 1.3, 40, 1e-6)
        assert acc._get_domain == before
    finally:
        accounting._prv_domain_half.cache_clear()
