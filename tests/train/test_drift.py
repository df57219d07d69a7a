"""Drift detectors: alarms on a sustained increase, quiet on a stationary stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.train import CUSUM, DriftMonitor, PageHinkley, reset_optimizer


def _stream(seed, n=600, jump_at=None, jump=1.0):
    rng = np.random.default_rng(seed)
    x = 1.0 + 0.1 * rng.standard_normal(n)
    if jump_at is not None:
        x[jump_at:] += jump
    return x


@pytest.mark.parametrize(
    "make", [lambda: PageHinkley(delta=0.05, threshold=2.0), lambda: CUSUM(k=1.0, h=8.0)]
)
def test_detects_a_jump_quickly_and_not_before(make):
    for seed in range(10):
        det = make()
        hits = [t for t, x in enumerate(_stream(seed, jump_at=300)) if det.update(x)]
        assert hits and 300 <= hits[0] <= 310


@pytest.mark.parametrize(
    "make", [lambda: PageHinkley(delta=0.05, threshold=2.0), lambda: CUSUM(k=1.0, h=8.0)]
)
def test_no_alarm_on_a_stationary_or_decreasing_stream(make):
    for seed in range(10):
        det = make()
        decreasing = _stream(seed) + np.linspace(2.0, 0.0, 600)
        assert not any(det.update(x) for x in _stream(seed))
        det.reset()
        if isinstance(det, PageHinkley):  # CUSUM's warm-up reference assumes stationarity
            assert not any(det.update(x) for x in decreasing)


def test_monitor_calls_back_and_resets():
    seen = []
    mon = DriftMonitor(PageHinkley(delta=0.05, threshold=2.0, min_samples=20), seen.append)
    stream = np.concatenate([_stream(0, 300), _stream(1, 300) + 1.0, _stream(2, 300) + 2.0])
    for x in stream:
        mon.update(x)
    assert seen == mon.detections and len(seen) == 2
    assert 300 <= seen[0] <= 310 and 600 <= seen[1] <= 610


def test_reset_optimizer_restores_lr_and_clears_moments():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t))
    for _ in range(5):
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 / 6)
    reset_optimizer(opt, sched)
    assert opt.state == {} and opt.param_groups[0]["lr"] == 0.5
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)


def test_bad_settings_and_values_are_named():
    with pytest.raises(ValueError, match="PageHinkley needs delta >= 0.*threshold=0"):
        PageHinkley(threshold=0)
    with pytest.raises(ValueError, match="CUSUM needs k >= 0, h > 0, warmup >= 2.*warmup=1"):
        CUSUM(warmup=1)
    with pytest.raises(ValueError, match="non-finite value nan"):
        PageHinkley().update(float("nan"))


def test_cusum_burn_in_skips_a_transient_before_its_reference():
    stream = list(np.linspace(10.0, 1.0, 50)) + list(_stream(0, 200)) + list(_stream(1, 100) + 1.0)
    plain, burnt = CUSUM(k=1.0, h=8.0), CUSUM(k=1.0, h=8.0, burn_in=50)
    assert not any(plain.update(x) for x in stream)  # its reference was the transient
    hits = [t for t, x in enumerate(stream) if burnt.update(x)]
    assert hits and 250 <= hits[0] <= 255


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: PageHinkley(delta=float("nan")),
            r"PageHinkley: delta must be a finite number, got nan",
        ),
        (lambda: PageHinkley(min_samples=2.5), r"PageHinkley: min_samples must be an int, got 2.5"),
        (lambda: CUSUM(k=float("nan")), r"CUSUM: k must be a finite number, got nan"),
        (lambda: CUSUM(h=float("inf")), r"CUSUM: h must be a finite number, got inf"),
        (lambda: CUSUM(warmup=10.5), r"CUSUM: warmup must be an int, got 10.5"),
    ],
)
def test_settings_that_would_silence_a_detector_are_refused(make, match):
    # before: each was accepted and no jump was ever detected (a NaN statistic, or a
    # fractional warm-up that was never reached, so the reference stayed NaN)
    with pytest.raises(ValueError, match=match):
        make()
