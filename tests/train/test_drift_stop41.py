"""CUSUM's warm-up reference on a stream far from 0 (stop 41).

The warm-up's spread came from ``Σx² − n·μ²`` and was then floored at ``1e-3·|μ|``: on a
loss stream of mean 1e6 and standard deviation 1 the reference σ was 1000, so a jump of
5σ never raised an alarm, and at a mean of 1000 σ read 1.0 for a measured 0.948; the
detector's answer depended on where the stream sat, with no error. A standardised CUSUM
must give the same alarms for ``x`` and ``x + c``. The reference here is the textbook
CUSUM on the warm-up's sample mean and standard deviation (``statistics``, exact).
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.train import CUSUM


def _reference_alarms(stream, k, h, warmup):
    """Textbook one-sided CUSUM on the warm-up's exact mean and sample deviation."""
    ref = stream[:warmup]
    mu, sd = statistics.fmean(ref), statistics.stdev(ref)
    s, alarms = 0.0, []
    for t, x in enumerate(stream[warmup:], start=warmup):
        s = max(0.0, s + (x - mu) / sd - k)
        if s > h:
            alarms.append(t)
    return alarms, mu, sd


def _alarms(det, stream):
    return [t for t, x in enumerate(stream) if det.update(x)]


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6, 1e8])
def test_cusum_alarms_do_not_depend_on_the_streams_offset(offset):
    rng = np.random.default_rng(0)
    noise = np.r_[rng.normal(0.0, 1.0, 60), 5.0 + rng.normal(0.0, 1.0, 40)]  # +5σ at t=60
    stream = [offset + float(v) for v in noise]
    det = CUSUM(k=1.0, h=8.0, warmup=30)
    got = _alarms(det, stream)
    want, mu, sd = _reference_alarms(stream, 1.0, 8.0, 30)
    assert det.sigma_ == pytest.approx(sd, rel=1e-6)  # was 1000 at offset 1e6, 1.0 at 1e3
    assert det.mu_ == pytest.approx(mu, rel=1e-12, abs=1e-9)
    assert got == want
    assert got and 60 <= got[0] <= 65  # the jump is seen within a few samples


def test_a_constant_warm_up_is_still_floored_so_a_wiggle_is_not_infinite():
    det = CUSUM(k=0.5, h=5.0, warmup=5)
    for _ in range(5):
        assert not det.update(2.0)
    assert det.sigma_ == 1e-8 + 1e-3 * 2.0
    assert not det.update(2.001)  # z = 0.5 = k: no alarm, and no division by zero
    assert det.statistic == pytest.approx(0.0, abs=1e-6)


def test_the_warm_up_restarts_after_reset_and_after_a_burn_in():
    det = CUSUM(k=0.5, h=5.0, warmup=4, burn_in=3)
    for x in [100.0, -100.0, 50.0]:  # burn-in: no part of the reference
        det.update(x)
    for x in [1e6 + 1, 1e6 - 1, 1e6 + 1, 1e6 - 1]:
        det.update(x)
    assert det.mu_ == 1e6 and det.sigma_ == pytest.approx(statistics.stdev([1, -1, 1, -1]))
    det.reset()
    det.burn_in = 0
    for x in [5.0, 7.0, 5.0, 7.0]:
        det.update(x)
    assert det.mu_ == 6.0 and det.sigma_ == pytest.approx(statistics.stdev([5, 7, 5, 7]))


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    offset=st.sampled_from([0.0, -50.0, 1e2, 1e4, 1e6, 1e8]),
    scale=st.floats(1e-2, 1e2),
    jump=st.floats(0.0, 6.0),
    seed=st.integers(0, 2**16),
)
def test_property_cusum_equals_the_textbook_cusum_wherever_the_stream_sits(
    offset, scale, jump, seed
):
    rng = np.random.default_rng(seed)
    noise = np.r_[rng.normal(0.0, 1.0, 40), jump + rng.normal(0.0, 1.0, 40)]
    stream = [offset + scale * float(v) for v in noise]
    want, _, sd = _reference_alarms(stream, 1.0, 4.0, 20)
    det = CUSUM(k=1.0, h=4.0, warmup=20)
    first = _alarms(det, stream)[:1]  # the detector needs a reset after an alarm
    assert det.sigma_ == pytest.approx(sd, rel=1e-6)
    assert first == want[:1]
