"""Privacy accounting: our figures are Opacus' own; the naive composition claims far too much."""

from __future__ import annotations

import sys

import pytest

from tying.train import epsilon, naive_epsilon, noise_for_epsilon

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")


def opacus_epsilon(name, q, sigma, steps, delta):
    """What Opacus' PrivacyEngine would report: one accountant.step() per optimizer step."""
    from opacus.accountants import create_accountant

    acc = create_accountant(name)
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    return acc.get_epsilon(delta=delta)


@pytest.mark.parametrize("name", ["rdp", "prv"])
@pytest.mark.parametrize("q,sigma,steps,delta", [(0.01, 1.0, 1000, 1e-5), (0.05, 0.8, 300, 1e-6)])
def test_epsilon_is_opacus_own(name, q, sigma, steps, delta):
    assert epsilon(q, sigma, steps, delta, accountant=name) == pytest.approx(
        opacus_epsilon(name, q, sigma, steps, delta), rel=1e-9
    )


def test_prv_is_tighter_than_rdp():
    assert epsilon(0.01, 1.0, 1000, 1e-5, accountant="prv") < epsilon(0.01, 1.0, 1000, 1e-5)


def test_small_epsilon_widens_rdp_orders_instead_of_warning():
    # Opacus' default orders stop at 63 and it warns here; the widened bound is tighter and valid.
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(3.0, 0.001, 10)]
    with pytest.warns(UserWarning, match="Optimal order is the largest alpha"):
        default = acc.get_epsilon(delta=1e-5)
    ours = epsilon(0.001, 3.0, 10, 1e-5)
    assert 0 < ours < default
    assert ours >= epsilon(0.001, 3.0, 10, 1e-5, accountant="prv") * 0.9


def test_naive_composition_overstates_privacy_by_orders_of_magnitude():
    q, sigma, delta = 0.01, 1.0, 1e-5
    right = epsilon(q, sigma, 100_000, delta)  # 100 000 steps = 1000 epochs
    naive = naive_epsilon(q, sigma, 100_000, delta)
    assert right / naive > 100
    # and the gap grows with training length, while the naive figure stays put
    assert naive_epsilon(q, sigma, 100, delta) == naive
    assert epsilon(q, sigma, 1000, delta) / naive < right / naive


def test_sequential_composition_is_valid_but_loose():
    q, sigma, steps, delta = 0.01, 1.0, 1000, 1e-5
    assert naive_epsilon(q, sigma, steps, delta, rule="sequential") > epsilon(
        q, sigma, steps, delta
    )


def test_noise_for_epsilon_hits_the_budget():
    sigma = noise_for_epsilon(2.0, 1e-5, 0.02, 500)
    assert epsilon(0.02, sigma, 500, 1e-5) <= 2.0
    assert epsilon(0.02, sigma * 0.99, 500, 1e-5) > 2.0


def test_zero_steps_cost_nothing():
    assert epsilon(0.1, 1.0, 0, 1e-5) == 0.0 == naive_epsilon(0.1, 1.0, 0, 1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"sample_rate must be in \(0, 1\], got 0"):
        epsilon(0, 1.0, 10, 1e-5)
    with pytest.raises(
        ValueError, match="noise_multiplier must be > 0 for a finite epsilon, got 0"
    ):
        epsilon(0.1, 0, 10, 1e-5)
    with pytest.raises(ValueError, match=r"steps must be an int >= 0, got 2.5"):
        epsilon(0.1, 1.0, 2.5, 1e-5)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\), got 0"):
        epsilon(0.1, 1.0, 10, 0)
    with pytest.raises(ValueError, match=r"accountant must be one of \('rdp', 'prv'\)"):
        epsilon(0.1, 1.0, 10, 1e-5, accountant="moments")
    with pytest.raises(ValueError, match=r"rule must be one of \('parallel', 'sequential'\)"):
        naive_epsilon(0.1, 1.0, 10, 1e-5, rule="advanced")
    with pytest.raises(ValueError, match="target_epsilon must be a finite number > 0"):
        noise_for_epsilon(0, 1e-5, 0.1, 10)


def test_missing_opacus_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opacus.accountants", None)
    with pytest.raises(ImportError, match=r"pip install 'tying\[privacy\]'"):
        epsilon(0.1, 1.0, 10, 1e-5)
