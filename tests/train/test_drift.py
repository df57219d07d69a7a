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


# -- stop 32: reset_optimizer restarts every torch scheduler as its construction did --

_S = torch.optim.lr_scheduler
SCHEDULERS = {
    "LambdaLR": lambda o: _S.LambdaLR(o, lambda t: 1 / (1 + t)),
    "MultiplicativeLR": lambda o: _S.MultiplicativeLR(o, lambda t: 0.9),
    "StepLR": lambda o: _S.StepLR(o, 3, 0.5),
    "LinearLR": lambda o: _S.LinearLR(o, 0.1, 1.0, total_iters=5),
    "ConstantLR": lambda o: _S.ConstantLR(o, 0.25, total_iters=4),
    "ExponentialLR": lambda o: _S.ExponentialLR(o, 0.9),
    "PolynomialLR": lambda o: _S.PolynomialLR(o, total_iters=10),
    "CosineAnnealingLR": lambda o: _S.CosineAnnealingLR(o, 10),
    "CosineAnnealingWarmRestarts": lambda o: _S.CosineAnnealingWarmRestarts(o, 4),
    "CyclicLR": lambda o: _S.CyclicLR(o, 0.01, 0.1, step_size_up=3),
    "OneCycleLR": lambda o: _S.OneCycleLR(o, max_lr=1.0, total_steps=40),
    "SequentialLR": lambda o: _S.SequentialLR(
        o, [_S.LinearLR(o, 0.1, 1.0, total_iters=4), _S.CosineAnnealingLR(o, 10)], milestones=[4]
    ),
    "ChainedScheduler": lambda o: _S.ChainedScheduler(
        [_S.LinearLR(o, 0.1, 1.0, total_iters=4), _S.ExponentialLR(o, 0.9)]
    ),
}


def _run(opt, sched, w, steps):
    """The lr and momentum of each step, the scheduler stepped after the optimizer."""
    seen = [opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]]
    for _ in range(steps):
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        sched.step()
        seen += [opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]]
    return seen


@pytest.mark.parametrize("make", list(SCHEDULERS.values()), ids=list(SCHEDULERS))
def test_reset_optimizer_restarts_every_scheduler_as_a_fresh_one(make):
    """Before stop 32 the schedule was restarted by setting last_epoch = 0: a LinearLR
    warm-up came back at 10x its rate (1.0 for 0.1), a MultiplicativeLR one factor low,
    a SequentialLR/ChainedScheduler past its warm-up, a CosineAnnealingWarmRestarts in
    the middle of its cycle, each with no error."""
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    sched = make(opt)
    _run(opt, sched, w, 7)
    reset_optimizer(opt, sched)
    assert opt.state == {}
    after = _run(opt, sched, w, 12)
    w2 = torch.nn.Parameter(torch.ones(2))
    opt2 = torch.optim.SGD([w2], lr=0.1, momentum=0.9)
    fresh = _run(opt2, make(opt2), w2, 12)
    assert after == pytest.approx(fresh, rel=1e-12)


def test_reset_optimizer_restarts_reduce_on_plateau_from_the_rate_given():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = _S.ReduceLROnPlateau(opt, patience=0)
    for _ in range(4):
        sched.step(1.0)  # no improvement: the rate falls
    state, lr = dict(sched.__dict__), opt.param_groups[0]["lr"]
    # ReduceLROnPlateau records no rate to restart from: it used to stay at the decayed one
    with pytest.raises(ValueError, match=r"param_groups\[0\] have no 'initial_lr'.*set group"):
        reset_optimizer(opt, sched)
    assert opt.param_groups[0]["lr"] == lr and sched.__dict__ == state  # nothing changed
    opt.param_groups[0]["initial_lr"] = 0.1
    reset_optimizer(opt, sched)
    rates = []
    for _ in range(3):
        sched.step(1.0)
        rates.append(opt.param_groups[0]["lr"])
    assert rates == pytest.approx([0.1, 0.01, 0.001])  # a fresh scheduler's: best reset too


def test_reset_optimizer_refuses_a_scheduler_of_another_optimizer_and_changes_nothing():
    w = torch.nn.Parameter(torch.ones(2))
    opt, other = torch.optim.Adam([w], lr=0.1), torch.optim.Adam([w], lr=0.1)
    sched = _S.ExponentialLR(other, 0.5)
    w.sum().backward()
    opt.step()
    with pytest.raises(ValueError, match="ExponentialLR schedules another optimizer"):
        reset_optimizer(opt, sched)
    assert len(opt.state) == 1  # the moments were kept
    with pytest.raises(TypeError, match="scheduler must be a torch.optim.lr_scheduler"):
        reset_optimizer(opt, object())
