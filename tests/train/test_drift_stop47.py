"""Drift detectors on streams with huge and non-finite values (stop 47).

CUSUM stored an infinite statistic (a finite value more than ~1e308 standard deviations
off raised its alarm), and a later value as far below made ``inf + (-inf) = NaN`` and
``max(0, NaN) = 0``: the alarm was gone with no error, where the exact CUSUM stays at
~5e308. Since then a value that would overflow the statistic is refused, as one that
would overflow the running sums was (stop 42). The reference is the textbook CUSUM and
Page-Hinkley in exact rational arithmetic (``fractions.Fraction``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.train import CUSUM, DriftMonitor, PageHinkley

BIG = Fraction(1.7976931348623157e308)


def _warm(det, values=(0.0, 0.0)):
    for v in values:
        assert det.update(v) is False
    return det


def test_cusum_no_longer_reads_inf_plus_minus_inf_as_zero():
    cs = _warm(CUSUM(k=0.5, h=5.0, warmup=2))  # a constant warm-up: sigma_ = 1e-8
    assert cs.sigma_ == 1e-8
    # 1e301 is 1e309 standard deviations off: the statistic used to become inf (an alarm),
    # then -5e300 (-5e308 sigma) made it inf + (-inf) -> NaN -> max(0, NaN) = 0, no alarm
    with pytest.raises(ValueError, match=r"1e\+301 is inf standard deviations .* not added"):
        cs.update(1e301)
    assert (cs.n_, cs.statistic) == (2, 0.0)
    assert cs.update(1.0) is True  # 1e8 sigma: the alarm a finite statistic gives


def test_cusum_keeps_a_finite_alarm_when_the_next_value_would_overflow_it():
    cs = _warm(CUSUM(k=0.5, h=5.0, warmup=2), (0.0, 2.0**0.5))  # mu_ = 0.707, sigma_ = 1
    assert cs.sigma_ == pytest.approx(1.0)
    assert cs.update(1e308) is True
    alarmed = cs.statistic
    with pytest.raises(ValueError, match="would overflow to inf; it was not added"):
        cs.update(1e308)  # exact statistic 2e308: not a float
    assert cs.statistic == alarmed and cs.n_ == 3
    assert cs.update(-1.5e308) is False  # exact: max(0, 1e308 - 1.5e308 - ...) = 0
    assert cs.statistic == 0.0


def test_a_monitor_passes_the_refusal_on_and_changes_nothing():
    alarms = []
    mon = DriftMonitor(_warm(CUSUM(k=0.5, h=5.0, warmup=2)), alarms.append)
    with pytest.raises(ValueError, match="reset\\(\\) the detector"):
        mon.update(1e301)
    assert (mon.t, mon.detections, alarms, mon.detector.n_) == (0, [], [], 2)


SPECIAL = [math.inf, -math.inf, math.nan, 1e300, -1e300, 1e308, -1e308, 1.5e308, -1.5e308]
VALUES = st.one_of(st.floats(-3.0, 3.0), st.sampled_from(SPECIAL))


def _exact_cusum(mu, sigma, k, stream):
    """Yields, per value, None (beyond floats: must be refused) or (statistic, alarm)."""
    s, mu, sigma, k = Fraction(0), Fraction(mu), Fraction(sigma), Fraction(k)
    for x in stream:
        if not math.isfinite(x):
            yield None
            continue
        z = (Fraction(x) - mu) / sigma
        new = max(Fraction(0), s + z - k)
        if abs(z) > BIG or new > BIG:
            yield None
            continue
        s = new
        yield s


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    warm=st.lists(st.floats(-2.0, 2.0), min_size=2, max_size=4),
    stream=st.lists(VALUES, min_size=1, max_size=12),
)
def test_property_cusum_equals_the_exact_cusum_or_refuses_on_any_stream(warm, stream):
    cs = CUSUM(k=0.5, h=5.0, warmup=len(warm))
    _warm(cs, warm)
    scale = Fraction(1)
    for x, want in zip(stream, _exact_cusum(cs.mu_, cs.sigma_, 0.5, stream)):
        before = (cs.n_, cs.statistic)
        if want is None:  # not finite, or beyond floats: refused, nothing changed
            with pytest.raises(ValueError):
                cs.update(x)
            assert (cs.n_, cs.statistic) == before
            continue
        alarm = cs.update(x)
        scale = max(scale, want, abs((Fraction(x) - Fraction(cs.mu_)) / Fraction(cs.sigma_)))
        tol = scale * Fraction(1, 10**9)
        assert math.isfinite(cs.statistic)
        assert abs(Fraction(cs.statistic) - want) <= tol
        if abs(want - 5) > tol:
            assert alarm is (want > 5)


@settings(derandomize=True, deadline=None, max_examples=60)
@given(stream=st.lists(VALUES, min_size=1, max_size=14))
def test_property_page_hinkley_equals_the_exact_test_or_refuses_on_any_stream(stream):
    """Each value is either refused (the detector as before) or added, and then the
    statistic and the alarm are the exact test's on the values added."""
    ph = PageHinkley(delta=0.1, threshold=5.0, min_samples=1)
    n, mean, cum, low = 0, Fraction(0), Fraction(0), Fraction(0)
    scale = Fraction(1)
    for x in stream:
        before = (ph.n_, ph.mean_, ph.cum_, ph.min_)
        try:
            alarm = ph.update(x)
        except ValueError:
            assert (ph.n_, ph.mean_, ph.cum_, ph.min_) == before
            assert not math.isfinite(x) or any(
                abs(v) > BIG / 2 for v in (Fraction(x), mean, cum)
            )  # refused only for a non-finite value or one near the floats' limit
            continue
        n += 1
        mean += (Fraction(x) - mean) / n
        cum += Fraction(x) - mean - Fraction(0.1)
        low = min(low, cum)
        scale = max(scale, abs(Fraction(x)), abs(cum), abs(mean))
        tol = scale * Fraction(1, 10**9)
        assert abs(Fraction(ph.cum_) - cum) <= tol and abs(Fraction(ph.min_) - low) <= tol
        want = cum - low
        if abs(want - 5) > 2 * tol:
            assert alarm is (want > 5)
