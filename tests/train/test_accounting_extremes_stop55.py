"""RDP epsilon at the corners of the settings against Opacus' own accountant (stop 55).

sigma 0.3 and 50, sample_rate 1e-5 and 1, 1 and 100,000 steps, delta 1e-5 and 1e-10:
a finite number >= 0 every time, equal to Opacus' ``RDPAccountant`` to 1e-6 relative
where Opacus' own orders hold the best one, and at most Opacus' figure where tying widens
the orders (Opacus' best order is then its largest; tying's is still a valid RDP bound).
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest

from tying.train import epsilon

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")

CORNERS = list(itertools.product([1e-5, 1.0], [0.3, 50.0], [1, 100_000], [1e-5, 1e-10]))


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), CORNERS)
def test_rdp_epsilon_at_a_corner_is_finite_and_opacus_own(q, sigma, steps, delta):
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    ours = epsilon(q, sigma, steps, delta)
    assert math.isfinite(ours) and ours >= 0
    acc = RDPAccountant()
    orders = acc.DEFAULT_ALPHAS
    with warnings.catch_warnings():  # Opacus warns when its best order is an end one
        warnings.simplefilter("ignore")
        rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
        theirs, best = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    if best < max(orders):
        assert ours == pytest.approx(max(float(theirs), 0.0), rel=1e-6)
    else:
        assert ours <= theirs
