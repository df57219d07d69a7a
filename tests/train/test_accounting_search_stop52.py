"""noise_for_epsilon's search: the same σ as doubling then bisecting on both accountants,
for fewer accountant calls (stop 52: noise_for_epsilon(8.0, 1e-8, 0.5, 100_000) took
minutes, ~20 s a PRV call and ~3 s an RDP one).

The accountants are replaced by cheap monotone stand-ins here, so that the reference
search (the pre-stop-52 algorithm, written out below) runs in microseconds and any
difference in the steps taken shows as a different σ; the real accountants are
checked against the same reference in test_accounting.py's budget tests.
"""

from __future__ import annotations

import math

import pytest

from tying.train import accounting
from tying.train.accounting import _PRVUnusable, noise_for_epsilon

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")


def _reference(target, accountant, eps):
    """Doubling from σ = 1, then bisection on log σ to 0.1 %, asking both accountants."""

    def within(sigma):
        for name in dict.fromkeys((accountant, "prv")):
            try:
                if eps(sigma, name) > target:
                    return False
            except _PRVUnusable:
                if name == accountant:
                    return False
        return True

    lo, hi = 0.05, 1.0
    while not within(hi):
        lo, hi = hi, hi * 2
        if hi > 1e4:
            return None
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if within(mid) else (mid, hi)
        if hi / lo < 1 + 1e-3:
            break
    return hi


def _stand_in(rdp_scale, prv_scale, unusable_below=0.0):
    """ε = scale / σ per accountant (falls as σ grows); PRV cannot compute below a σ."""
    calls = {"rdp": 0, "prv": 0}

    def eps(sigma, name):
        if name == "prv" and sigma < unusable_below:
            raise _PRVUnusable("grid too large")
        return (rdp_scale if name == "rdp" else prv_scale) / sigma

    def fake(q, sigma, steps, delta, *, accountant="rdp"):
        calls[accountant] += 1
        return eps(sigma, accountant)

    return eps, fake, calls


CASES = [
    # (rdp scale, prv scale, PRV unusable below σ): PRV tighter (the usual), PRV looser
    # (the search on both accountants), PRV unusable where RDP already passes
    (310.0, 290.0, 0.0),
    (310.0, 330.0, 0.0),
    (310.0, 290.0, 50.0),
    (0.7, 0.6, 0.0),  # answer below σ = 1
    (5e3, 4e3, 0.0),
]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize(("rdp", "prv", "unusable"), CASES)
def test_the_search_finds_the_reference_sigma(monkeypatch, accountant, rdp, prv, unusable):
    eps, fake, calls = _stand_in(rdp, prv, unusable)
    want = _reference(8.0, accountant, eps)
    monkeypatch.setattr(accounting, "epsilon", fake)
    monkeypatch.setattr(accounting, "_bracket_guess", lambda *a: 3)  # any start: checked
    got = noise_for_epsilon(8.0, 1e-5, 0.1, 1000, accountant=accountant)
    assert got == pytest.approx(want, rel=1e-12)


def test_prv_is_asked_about_twice_when_it_is_the_tighter_accountant(monkeypatch):
    eps, fake, calls = _stand_in(310.0, 290.0)
    old = {"rdp": 0, "prv": 0}

    def counted(sigma, name):
        old[name] += 1
        return eps(sigma, name)

    want = _reference(8.0, "rdp", counted)
    monkeypatch.setattr(accounting, "epsilon", fake)
    monkeypatch.setattr(accounting, "_bracket_guess", lambda *a: 6)  # σ = 64: right here
    assert noise_for_epsilon(8.0, 1e-5, 0.1, 1000) == pytest.approx(want, rel=1e-12)
    # the old search asked PRV at every σ it took downward, and RDP at every power of 2
    # below the answer
    assert (old["prv"], calls["prv"]) == (7, 2)
    assert calls["rdp"] <= old["rdp"] - 5


@pytest.mark.parametrize("start", [0, 2, 5, 9, 13])
def test_a_wrong_starting_guess_costs_calls_not_the_answer(monkeypatch, start):
    eps, fake, _ = _stand_in(310.0, 290.0)
    monkeypatch.setattr(accounting, "epsilon", fake)
    monkeypatch.setattr(accounting, "_bracket_guess", lambda *a: start)
    assert noise_for_epsilon(8.0, 1e-5, 0.1, 1000) == pytest.approx(
        _reference(8.0, "rdp", eps), rel=1e-12
    )


def test_a_budget_no_sigma_meets_is_still_refused(monkeypatch):
    _, fake, _ = _stand_in(1e9, 1e9)
    monkeypatch.setattr(accounting, "epsilon", fake)
    with pytest.raises(ValueError, match=r"no noise multiplier up to 1e4 reaches epsilon=8.0"):
        noise_for_epsilon(8.0, 1e-5, 0.1, 1000)
