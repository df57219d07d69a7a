"""Concept drift: detect a sustained jump in a loss stream, then adapt (claim D9).

A model deployed on a stream sees its validation (or prequential: "test on the
next batch, then train on it") loss. When the world changes, that loss jumps
and stays up. Two classic sequential change detectors watch for it:

- :class:`PageHinkley` (Page 1954, Hinkley 1971): the cumulative deviation of the
  loss from its running mean, minus a tolerance ``delta``; alarm when it rises
  more than ``threshold`` above its running minimum. Needs no reference period.
- :class:`CUSUM` (Page 1954): after a warm-up that estimates the loss's mean and
  spread, the one-sided cumulative sum of standardised excesses ``(x−μ)/σ − k``;
  alarm when it exceeds ``h`` (in standard deviations).

:class:`DriftMonitor` feeds a detector and calls back on an alarm, e.g.
:func:`reset_optimizer` (fresh moments and the initial learning rate: a model
whose learning rate has decayed cannot follow a new concept) or a retrain.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable

import numpy as np
import torch


def _check(owner: str, reals: dict, ints: dict) -> None:
    """Refuse parameters that would make a detector silent for ever.

    A NaN ``delta``/``k`` passed the range checks (every comparison with NaN is False)
    and made the statistic NaN, or ``max(0, NaN) = 0``, so no alarm ever came; a
    fractional ``warmup`` was never reached exactly, so the reference stayed NaN.
    """
    for name, v in reals.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{owner}: {name} must be a finite number, got {v!r}")
    for name, v in ints.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ValueError(f"{owner}: {name} must be an int, got {v!r}")


def _value(owner: str, x) -> float:
    """One loss value as a float: a real number, a NumPy scalar or a one-element tensor.

    ``float("1.5")`` and ``float(True)`` read a string and a bool as losses with no
    error (stop 42); a loss is a real number, so both are refused, as is a complex one.
    """
    if isinstance(x, (bool, np.bool_, str, bytes, bytearray)) or (
        isinstance(x, torch.Tensor) and (x.dtype == torch.bool or x.is_complex())
    ):
        raise TypeError(
            f"{owner}: a loss value must be a real number (a float, an int, a NumPy scalar "
            f"or a one-element tensor), got {type(x).__name__} {x!r:.40}; pass the loss itself"
        )
    if isinstance(x, torch.Tensor):
        # the training step's loss itself: float() of a tensor that requires grad warns
        # on recent torch (an error where warnings are errors, as under pytest)
        x = x.detach()
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(
            f"{owner}: got a non-finite value {x}; it would make the statistic NaN (no alarm "
            f"ever again), so it was not added: pass finite losses (skip a diverged step's, "
            f"or reset the model and the detector)"
        )
    return x


def _overflowed(owner: str, x: float, state: dict) -> None:
    """Refuse a finite value that overflowed the detector's running sums.

    ``1e308`` then ``-1e308`` made the running mean ``-inf`` and then NaN: every later
    statistic was NaN, so no alarm ever came, with no error (stop 42). The value is not
    added; the state is as before the call.
    """
    bad = {k: v for k, v in state.items() if not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k} {v}" for k, v in bad.items())
        raise ValueError(
            f"{owner}: the value {x!r} overflowed the running sums ({shown}), which would "
            f"leave the statistic NaN or infinite for good, so it was not added; scale the "
            f"stream (e.g. its logarithm, or divide by a typical loss) so that sums of its "
            f"values stay below 1e308"
        )


class PageHinkley:
    """Page-Hinkley test for an increase in the mean of a stream.

    Args:
        delta: tolerated increase per sample (same units as the stream).
        threshold: alarm when the cumulative excess rises this far above its minimum.
        min_samples: no alarm before this many samples since the last reset.

    Raises:
        ValueError: a negative ``delta``, a non-positive ``threshold`` or ``min_samples`` < 1;
            a NaN/inf number or a non-integer count.

    Example:
        >>> from tying.train import PageHinkley
        >>> ph = PageHinkley(delta=0.1, threshold=5.0, min_samples=10)
        >>> stream = [1.0] * 50 + [3.0] * 50
        >>> next(t for t, x in enumerate(stream) if ph.update(x))
        52
    """

    def __init__(self, delta: float = 0.005, threshold: float = 50.0, min_samples: int = 30):
        _check(
            "PageHinkley", {"delta": delta, "threshold": threshold}, {"min_samples": min_samples}
        )
        if delta < 0 or not threshold > 0 or min_samples < 1:
            raise ValueError(
                f"PageHinkley needs delta >= 0, threshold > 0, min_samples >= 1; got "
                f"delta={delta}, threshold={threshold}, min_samples={min_samples}"
            )
        self.delta = delta
        self.threshold = threshold
        self.min_samples = min_samples
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far (call after adapting to a drift)."""
        self.n_ = 0
        self.mean_ = 0.0
        self.cum_ = 0.0
        self.min_ = 0.0

    @property
    def statistic(self) -> float:
        """The current test statistic ``m_t − min_s m_s``."""
        return self.cum_ - self.min_

    def update(self, x: float) -> bool:
        """Add one value; True when a drift (an increase) is detected.

        Raises:
            ValueError: a value that is not finite, or one that would overflow the running
                sums (the value is not added).
            TypeError: a string, a bool or a complex value.
        """
        x = _value("PageHinkley.update", x)
        n = self.n_ + 1
        mean = self.mean_ + (x - self.mean_) / n
        cum = self.cum_ + (x - mean - self.delta)
        _overflowed("PageHinkley.update", x, {"running mean": mean, "cumulative sum": cum})
        self.n_, self.mean_, self.cum_ = n, mean, cum
        self.min_ = min(self.min_, self.cum_)
        return self.n_ >= self.min_samples and self.statistic > self.threshold


class CUSUM:
    """One-sided CUSUM for an increase, standardised by a warm-up window.

    Args:
        k: allowance, in standard deviations (half the shift to detect, classically).
        h: decision threshold, in standard deviations.
        warmup: samples used to estimate the reference mean and (sample) standard
            deviation, ``mu_`` and ``sigma_``; a warm-up constant to the floats'
            resolution gets ``sigma_ = 1e-8 + 1e-3·|mu_|``, so that a later wiggle is
            not infinitely many deviations away.
        burn_in: samples ignored (after construction and after each reset) before the
            warm-up starts: e.g. while a model is still learning, whose loss is no
            reference for "normal".

    Raises:
        ValueError: ``k`` < 0, ``h`` <= 0, ``warmup`` < 2 or ``burn_in`` < 0; a NaN/inf
            number or a non-integer count.

    Example:
        >>> from tying.train import CUSUM
        >>> cs = CUSUM(k=0.5, h=5.0, warmup=20)
        >>> stream = [1.0, 1.2] * 25 + [3.0] * 20
        >>> next(t for t, x in enumerate(stream) if cs.update(x))
        50
    """

    def __init__(self, k: float = 0.5, h: float = 5.0, warmup: int = 30, burn_in: int = 0):
        _check("CUSUM", {"k": k, "h": h}, {"warmup": warmup, "burn_in": burn_in})
        if k < 0 or not h > 0 or warmup < 2 or burn_in < 0:
            raise ValueError(
                f"CUSUM needs k >= 0, h > 0, warmup >= 2, burn_in >= 0; got k={k}, h={h}, "
                f"warmup={warmup}, burn_in={burn_in}"
            )
        self.k = k
        self.h = h
        self.warmup = warmup
        self.burn_in = burn_in
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far; the next ``warmup`` values set a new reference."""
        self.n_ = 0
        self._mean = 0.0  # the warm-up's running mean and sum of squared deviations
        self._m2 = 0.0  # (Welford's update: see update)
        self.mu_ = math.nan
        self.sigma_ = math.nan
        self.statistic = 0.0

    def update(self, x: float) -> bool:
        """Add one value; True when a drift (an increase) is detected.

        Raises:
            ValueError: a value that is not finite, or one that would overflow the running
                sums or the statistic (more than ~1e308 standard deviations in all; the
                value is not added).
            TypeError: a string, a bool or a complex value.
        """
        x = _value("CUSUM.update", x)
        if self.n_ + 1 <= self.burn_in:
            self.n_ += 1
            return False
        if self.n_ + 1 <= self.burn_in + self.warmup:
            # Welford's update, not Σx² − n·μ²: that difference cancelled to rounding
            # noise once the stream sat far from 0 (σ = 1 read as 0 or 20 at a loss of
            # 1e8), so the detector's result depended on the stream's offset (stop 41)
            i = self.n_ + 1 - self.burn_in
            step = x - self._mean
            mean = self._mean + step / i
            m2 = self._m2 + step * (x - mean)
            _overflowed("CUSUM.update", x, {"warm-up mean": mean, "sum of squares": m2})
            self.n_, self._mean, self._m2 = self.n_ + 1, mean, m2
            if i == self.warmup:
                self.mu_ = self._mean
                sd = math.sqrt(max(self._m2, 0.0) / (self.warmup - 1))
                # a warm-up constant to the floats' resolution would make every later
                # wiggle infinite: only then is σ floored (1e-3 of |μ|). A measured σ is
                # kept: a floor of 1e-3·|μ| under it made σ = 1000 out of a measured 1 at
                # a loss of 1e6, so a 5σ jump never raised an alarm (stop 41)
                if sd > 8 * math.ulp(abs(self.mu_)) and math.isfinite(sd):
                    self.sigma_ = sd
                else:
                    self.sigma_ = 1e-8 + 1e-3 * abs(self.mu_)
            return False
        z = (x - self.mu_) / self.sigma_
        statistic = max(0.0, self.statistic + z - self.k)
        if not (math.isfinite(z) and math.isfinite(statistic)):
            # an infinite statistic raised its alarm, and a later value as far below
            # made inf + (-inf) = NaN and max(0, NaN) = 0: alarm gone, no error (stop 47)
            raise ValueError(
                f"CUSUM.update: the value {x!r} is {z:.3g} standard deviations (sigma_ = "
                f"{self.sigma_:.3g}) from the reference mean mu_ = {self.mu_:.3g}, so the "
                f"statistic ({self.statistic:.3g} before) would overflow to "
                f"{statistic if math.isfinite(z) else z}; it was not added (the statistic "
                f"is as before). A value this far off is a drift by any measure: reset() "
                f"the detector and adapt, or scale the stream (e.g. its logarithm)"
            )
        self.n_ += 1
        self.statistic = statistic
        return self.statistic > self.h


class DriftMonitor:
    """Feed a loss stream to a detector; on an alarm call ``on_drift(t)`` and reset the detector.

    Args:
        detector: a :class:`PageHinkley` or :class:`CUSUM` (anything with ``update``/``reset``).
        on_drift: called with the step index at each alarm (e.g. reset the optimizer).

    Example:
        >>> from tying.train import DriftMonitor, PageHinkley
        >>> alarms = []
        >>> mon = DriftMonitor(PageHinkley(delta=0.1, threshold=5.0, min_samples=10), alarms.append)
        >>> for x in [1.0] * 50 + [3.0] * 50:
        ...     _ = mon.update(x)
        >>> alarms, mon.detections
        ([52], [52])
    """

    def __init__(self, detector, on_drift: Callable[[int], object] | None = None):
        self.detector = detector
        self.on_drift = on_drift
        self.t = 0
        self.detections: list[int] = []

    def update(self, loss: float) -> bool:
        """Add one loss value; True (after calling back) when a drift is detected.

        Raises:
            Exception: whatever the detector (a non-finite loss) or ``on_drift`` raises. A
                refused loss changes nothing; an alarm whose callback raised is still
                recorded, the detector reset and ``t`` advanced before the callback ran, so
                the next value starts a new reference instead of raising the same alarm
                again at the same ``t`` (stop 38).
        """
        alarm = self.detector.update(loss)
        t = self.t
        self.t += 1
        if alarm:
            self.detections.append(t)
            self.detector.reset()
            if self.on_drift is not None:
                self.on_drift(t)
        return alarm


def _restart(scheduler, groups: list[dict]) -> None:
    """Put ``scheduler`` where its construction left it (the groups' ``lr`` already reset).

    Every torch scheduler but ``ReduceLROnPlateau`` starts with ``last_epoch = -1`` and
    one step (``_initial_step``): that step computes epoch 0's rate (for a chainable one
    such as ``LinearLR`` from the group's current rate) and any state of its own
    (``CosineAnnealingWarmRestarts``' cycle, ``OneCycleLR``'s momentum). The composite
    schedulers restart their parts as their own constructors do.
    """
    S = torch.optim.lr_scheduler
    if isinstance(scheduler, S.ReduceLROnPlateau):
        scheduler._reset()  # best, bad-epoch and cooldown counters
        scheduler.last_epoch = 0
        scheduler._last_lr = [g["lr"] for g in groups]
    elif isinstance(scheduler, S.ChainedScheduler):  # each part built in turn
        for part in scheduler._schedulers:
            _restart(part, groups)
        scheduler._last_lr = [g["lr"] for g in groups]
    elif isinstance(scheduler, S.SequentialLR):  # parts before their milestone: unstarted
        for part in scheduler._schedulers:
            _unstart(part)
        scheduler.last_epoch = 0
        first = scheduler._schedulers[bisect.bisect_right(scheduler._milestones, 0)]
        first._initial_step()
        scheduler._last_lr = first.get_last_lr()
    else:
        scheduler.last_epoch = -1
        scheduler._initial_step()


def _unstart(scheduler) -> None:
    """A :class:`SequentialLR` part as its constructor leaves it (``recursive_undo``)."""
    for part in getattr(scheduler, "_schedulers", ()):
        _unstart(part)
    if not hasattr(scheduler, "_schedulers"):
        scheduler.last_epoch = -1


def _check_scheduler(optimizer, scheduler) -> None:
    """Refuse a scheduler that cannot be restarted on ``optimizer``, before any change."""
    S = torch.optim.lr_scheduler
    if not isinstance(scheduler, (S.LRScheduler, S.ReduceLROnPlateau)):
        raise TypeError(
            f"reset_optimizer: scheduler must be a torch.optim.lr_scheduler scheduler, got "
            f"{type(scheduler).__name__}"
        )
    for part in [scheduler, *getattr(scheduler, "_schedulers", ())]:
        if part.optimizer is not optimizer:
            raise ValueError(
                f"reset_optimizer: the {type(part).__name__} schedules another optimizer than "
                f"the one reset: restarting it would leave this optimizer's decayed rates in "
                f"place; pass the scheduler built on this optimizer"
            )
    missing = [i for i, g in enumerate(optimizer.param_groups) if "initial_lr" not in g]
    if missing:
        raise ValueError(
            f"reset_optimizer: optimizer.param_groups{missing} have no 'initial_lr', so the "
            f"rate to restart from is unknown (ReduceLROnPlateau records none; a group added "
            f"after the scheduler was built has none); set group['initial_lr'] to the rate "
            f"to restart from"
        )


def reset_optimizer(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    """Forget an optimizer's state (moments, step counts) and restart its schedule.

    After a drift the old moments point the wrong way and a decayed learning rate
    is too small to follow the new concept.

    Args:
        optimizer: any ``torch.optim`` optimizer.
        scheduler: its learning-rate scheduler, restarted at its first step (the
            learning rates go back to each group's ``initial_lr``, and the scheduler
            to the state its construction left: a warm-up starts again, a
            ``SequentialLR``/``ChainedScheduler`` restarts its parts).

    Raises:
        TypeError: ``scheduler`` is not a torch learning-rate scheduler.
        ValueError: ``scheduler`` (or one of its parts) schedules another optimizer, or
            a param group has no ``initial_lr`` (``ReduceLROnPlateau`` records none:
            set it). Nothing is changed by a refused call.

    Example:
        >>> import torch
        >>> from tying.train import reset_optimizer
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.Adam([w], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t))
        >>> for _ in range(3):
        ...     w.sum().backward(); opt.step(); sched.step()
        >>> reset_optimizer(opt, sched)
        >>> len(opt.state), opt.param_groups[0]["lr"]
        (0, 0.1)
    """
    if scheduler is not None:
        _check_scheduler(optimizer, scheduler)  # before anything changes
    optimizer.state.clear()
    if scheduler is not None:
        # the rates and the schedule as the scheduler's construction left them: setting
        # last_epoch = 0 by hand restarted a LinearLR warm-up at 10x its rate, a
        # MultiplicativeLR one factor low, a SequentialLR/ChainedScheduler past its
        # warm-up, ReduceLROnPlateau at its decayed rate (stop 32)
        for group in optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):  # a tensor rate is updated in place
                group["lr"].fill_(float(group["initial_lr"]))
            else:
                group["lr"] = group["initial_lr"]
        _restart(scheduler, optimizer.param_groups)
