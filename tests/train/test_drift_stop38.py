"""DriftMonitor when its callback raises (stop 38).

An ``on_drift`` that raised (``reset_optimizer`` refusing a ``ReduceLROnPlateau`` with no
``initial_lr``) left the alarm recorded but the detector not reset and ``t`` not advanced:
the next value raised the same alarm again at the same ``t`` (``detections == [52, 52]``)
and every later step index was one short (``t`` 99 after 100 values), with no error.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.train import CUSUM, DriftMonitor, PageHinkley


def _raise_at(fail: set[int], calls: list[int]):
    def on_drift(t):
        calls.append(t)
        if len(calls) in fail:
            raise RuntimeError(f"callback failed at {t}")

    return on_drift


def test_a_callback_that_raises_leaves_the_monitor_as_after_the_alarm():
    calls: list[int] = []
    mon = DriftMonitor(PageHinkley(delta=0.1, threshold=5.0, min_samples=10), _raise_at({1}, calls))
    stream = [1.0] * 50 + [3.0] * 50
    for x in stream:
        try:
            mon.update(x)
        except RuntimeError as err:
            assert str(err) == "callback failed at 52"
    assert mon.detections == [52] == calls  # was [52, 52]
    assert mon.t == len(stream)  # was 99


def test_a_refused_value_changes_nothing():
    mon = DriftMonitor(CUSUM(warmup=5))
    for x in [1.0, 1.2, 0.9]:
        mon.update(x)
    before = (mon.t, list(mon.detections), dict(vars(mon.detector)))
    with pytest.raises(ValueError, match=r"CUSUM\.update: got a non-finite value inf"):
        mon.update(float("inf"))
    assert (mon.t, mon.detections, vars(mon.detector)) == before


def _brute(make, stream):
    """The alarms of a detector run over the stream by hand, reset after each."""
    det, out = make(), []
    for t, x in enumerate(stream):
        if det.update(x):
            out.append(t)
            det.reset()
    return out


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    pieces=st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(5, 40)), min_size=1, max_size=5),
    fail=st.sets(st.integers(1, 6), max_size=3),
    kind=st.sampled_from(["ph", "cusum"]),
)
def test_property_detections_are_the_detectors_alarms_whatever_the_callback_does(
    pieces, fail, kind
):
    def make():
        if kind == "ph":
            return PageHinkley(delta=0.05, threshold=3.0, min_samples=5)
        return CUSUM(k=0.5, h=4.0, warmup=5)

    stream = [level + 0.1 * ((i * 7919) % 13 - 6) / 6 for level, n in pieces for i in range(n)]
    calls: list[int] = []
    mon = DriftMonitor(make(), _raise_at(fail, calls))
    for x in stream:
        try:
            mon.update(x)
        except RuntimeError:
            pass
    want = _brute(make, stream)
    assert mon.detections == want == calls
    assert mon.t == len(stream)
