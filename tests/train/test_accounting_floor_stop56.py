"""A noise multiplier too small for float64 is refused by name (stop 56).

Below σ ≈ 1.5e-154, σ² leaves float64's normal range: Opacus' RDP series never ended
(``epsilon(0.01, 1e-155, 1, 1e-5)`` hung), PRV raised ``ZeroDivisionError`` (σ = 1e-300,
also through ``naive_epsilon``) or ``OverflowError: cannot convert float infinity to
integer`` (σ = 1e-153). Every σ from 1e-150 up is answered as before.
"""

from __future__ import annotations

import pytest

from tying.train import epsilon, naive_epsilon

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")

_TOO_SMALL = r"noise_multiplier=1e-\d+ is below 1e-150.*noise_for_epsilon finds one"


@pytest.mark.parametrize("sigma", [1e-153, 1e-300])
def test_a_sigma_below_float64s_range_is_refused_by_every_accountant(sigma):
    with pytest.raises(ValueError, match=_TOO_SMALL):
        epsilon(0.01, sigma, 1, 1e-5, accountant="prv")
    with pytest.raises(ValueError, match=_TOO_SMALL):
        epsilon(0.01, sigma, 1, 1e-5, accountant="rdp")
    with pytest.raises(ValueError, match=_TOO_SMALL):
        naive_epsilon(0.01, sigma, 10, 1e-5)


def test_the_smallest_sigma_taken_gives_the_rdp_bound_of_its_size():
    # one step of the subsampled Gaussian at tiny σ: RDP ε grows as 1/σ² (5.5e99 at 1e-50)
    small, smaller = epsilon(0.01, 1e-140, 1, 1e-5), epsilon(0.01, 1e-150, 1, 1e-5)
    assert smaller == pytest.approx(small * 1e20, rel=1e-6)
