"""The EM convergence record of a fitted HMM (hmmlearn's ``monitor_``).

hmmlearn scripts read ``model.monitor_.history`` and ``model.monitor_.converged``
after ``fit``; :class:`ConvergenceMonitor` gives them the same names. One
difference is deliberate: ``converged`` is True only when the log-likelihood
gain fell below ``tol``. hmmlearn also calls a fit that merely ran out of
iterations "converged"; we do not report a budget stop as convergence. Nor do we
call a fall of the log-likelihood convergence (hmmlearn does, after logging "Model is
not converging"): EM stops there, as in hmmlearn, with the same warning, but
``converged`` is False and ``decreases`` names the iterations that fell (stop 25).
A fit that ran out of iterations with a finite ``tol`` says so with a
:class:`ConvergenceWarning` (stop 35); ``tol=-np.inf`` runs exactly ``n_iter``
iterations on purpose, without it.

Example:
    >>> m = ConvergenceMonitor(tol=0.1, n_iter=5, verbose=False)
    >>> for ll in (-10.0, -9.0, -8.95):
    ...     m.report(ll)
    >>> m.iter, m.converged, list(m.history)
    (3, True, [-10.0, -9.0, -8.95])
"""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np

from tying.core.errors import ConvergenceWarning as _BudgetWarning

_log = logging.getLogger(__name__)

#: a fall of the log-likelihood below this (times max(1, |previous|) past 1e5) is
#: rounding, not a fall: hmmlearn's sqrt(eps), with room for large totals' rounding
_SLACK = np.finfo(float).eps ** 0.5
_REL_SLACK = 1e3 * np.finfo(float).eps

__all__ = ["ConvergenceMonitor", "ConvergenceWarning"]


class ConvergenceWarning(_BudgetWarning):
    """An EM fit stopped at its iteration budget (``n_iter``) before its gain fell
    below ``tol``: its parameters may still be moving, and ``converged_`` is False.

    Raise ``n_iter`` (or ``tol``), or pass ``tol=-np.inf`` to run exactly ``n_iter``
    iterations on purpose (no warning then). A subclass of
    :class:`tying.ConvergenceWarning`, which ``tying.fit``'s budget warning shares.

    Example:
        >>> import warnings
        >>> import numpy as np
        >>> from tying.hmm import GaussianHMM
        >>> X = np.random.default_rng(0).normal(size=(60, 1))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     m = GaussianHMM(2, n_iter=2, random_state=0).fit(X)
        >>> [w.category.__name__ for w in caught], m.converged_
        (['ConvergenceWarning'], False)
        >>> GaussianHMM(2, n_iter=2, tol=-np.inf, random_state=0).fit(X).n_iter_  # on purpose
        2
    """


class ConvergenceMonitor:
    """Log-likelihood at every EM iteration, and whether ``tol`` was reached.

    Args:
        tol: convergence threshold on the gain of the total log-likelihood.
        n_iter: the iteration budget.
        verbose: print one line per iteration to stderr (hmmlearn's format).

    Attributes:
        history: every iteration's total log-likelihood (before its M-step);
            hmmlearn keeps the same values.
        iter: number of iterations run.
        decreases: the iterations (1-based, as ``verbose`` prints them) whose
            log-likelihood fell below the previous one by more than rounding; each is
            logged as a warning (hmmlearn's words). EM should never fall: with priors
            (MAP) the posterior rises, not necessarily the likelihood; without them a
            fall is a defect to report.
    """

    _template = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol: float, n_iter: int, verbose: bool = False):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history: list[float] = []
        self.iter = 0
        self.decreases: list[int] = []

    def report(self, log_prob: float) -> None:
        """Record one iteration's log-likelihood (and print it when ``verbose``)."""
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(
                self._template.format(iter=self.iter + 1, log_prob=log_prob, delta=delta),
                file=sys.stderr,
            )
        if self.history and _fell(self.history[-1], log_prob):
            prev = self.history[-1]
            self.decreases.append(self.iter + 1)
            _log.warning(
                "Model is not converging.  Current: %s is not greater than %s. Delta is %s "
                "(EM iteration %d; converged will be False: with priors the posterior, not "
                "the likelihood, is what EM raises; without them, please report it)",
                log_prob, prev, log_prob - prev, self.iter + 1,
            )  # fmt: skip
        self.history.append(float(log_prob))
        self.iter += 1

    @property
    def stopped(self) -> bool:
        """True when EM should stop: the last gain was below ``tol`` (a fall included,
        as in hmmlearn). The EM loops ask this; users read :attr:`converged`."""
        return len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol

    @property
    def converged(self) -> bool:
        """True when the last gain was below ``tol`` and not a fall of the
        log-likelihood larger than ``tol`` (neither a budget stop nor a fall is
        convergence).

        Example:
            >>> m = ConvergenceMonitor(tol=0.1, n_iter=5)
            >>> m.report(-10.0); m.report(-12.0)    # logs "Model is not converging"
            >>> m.stopped, m.converged, m.decreases
            (True, False, [2])
        """
        if not self.stopped:
            return False
        # a fall within rounding, or smaller than tol itself (EM's rounding near its
        # optimum: hmmlearn logs those too), is still convergence; a larger one is not
        return not _fell(self.history[-2], self.history[-1], max(self.tol, 0.0))

    @property
    def hit_budget(self) -> bool:
        """True when EM ran all of ``n_iter >= 1`` iterations and the last gain was not
        below a finite ``tol`` (``tol=-inf`` asks for exactly ``n_iter`` iterations).

        Example:
            >>> m = ConvergenceMonitor(tol=0.1, n_iter=2)
            >>> m.report(-10.0); m.report(-9.0)
            >>> m.hit_budget, m.converged
            (True, False)
        """
        return (
            self.n_iter > 0 and self.iter >= self.n_iter and not self.stopped
            and self.tol != -np.inf
        )  # fmt: skip

    def warn_if_budget(self, model: str, what: str = "log-likelihood") -> None:
        """Warn (:class:`ConvergenceWarning`) when :attr:`hit_budget`, naming ``model``,
        the iterations run, the last gain of ``what`` against ``tol``, and the fix. Called
        by the estimators' ``fit`` (the warning points at the caller of ``fit``)."""
        if not self.hit_budget:
            return
        if len(self.history) >= 2:
            gain = self.history[-1] - self.history[-2]
            last = (
                f"the last gain of the {what} was {gain:.6g} (iteration {self.iter - 1} -> "
                f"{self.iter}), not below tol={self.tol!r}"
            )
        else:
            last = f"one iteration gives no gain of the {what} to compare with tol={self.tol!r}"
        warnings.warn(
            f"{model}: EM stopped at its budget of n_iter={self.n_iter} iterations before "
            f"converging: {last}; the parameters may still be moving (converged_ is False). "
            f"Raise n_iter, or pass tol=-np.inf to run exactly n_iter iterations on purpose",
            ConvergenceWarning,
            stacklevel=4,  # this, the estimator's _fit, its fit, the caller of fit
        )

    @property
    def decreased(self) -> bool:
        """True when some iteration's log-likelihood fell (see :attr:`decreases`)."""
        return bool(self.decreases)

    def __repr__(self) -> str:
        return (
            f"ConvergenceMonitor(tol={self.tol!r}, n_iter={self.n_iter}, iter={self.iter}, "
            f"converged={self.converged})"
        )


def check_monitor_kept(model) -> None:
    """Refuse a ``monitor_`` assigned (or re-set) since the last fit, before fit changes anything.

    hmmlearn documents assigning ``model.monitor_`` (a subclass with its own
    ``converged``) as the way to a custom stopping rule, and its ``fit`` reads
    ``monitor_.tol`` and ``monitor_.n_iter``. Our ``fit`` builds its monitor from the
    model's ``tol`` and ``n_iter`` (one per restart), so such a monitor, or a change to
    the fitted one's settings, would be dropped with no error and EM would stop by
    another rule than the one the caller set.

    Args:
        model: an HMM whose ``fit`` is about to run.

    Raises:
        ValueError: ``monitor_`` is not the monitor of the model's last fit, or its
            ``tol`` / ``n_iter`` / ``verbose`` changed since; names the fix.

    Example:
        >>> import numpy as np
        >>> from tying.hmm import ConvergenceMonitor, GaussianHMM
        >>> m = GaussianHMM(2, random_state=0)
        >>> m.monitor_ = ConvergenceMonitor(tol=5.0, n_iter=10)
        >>> try:
        ...     m.fit(np.random.default_rng(0).normal(size=(30, 1)))
        ... except ValueError as err:
        ...     print(str(err)[:58])
        monitor_ was assigned before fit (hmmlearn's hook for a cu
    """
    held = model.__dict__.get("monitor_")
    if held is None:
        return
    kept = model.__dict__.get("_fit_monitor")
    fitted_before = held.__class__ is ConvergenceMonitor and (
        getattr(held, "iter", None) == model.__dict__.get("n_iter_", -1)
    )  # a model fitted (and pickled) before this check: its own monitor
    if kept is None and fitted_before:
        kept = (held, held.tol, held.n_iter, held.verbose)
    name = type(model).__name__
    if kept is None or held is not kept[0]:
        raise ValueError(
            f"monitor_ was assigned before fit (hmmlearn's hook for a custom convergence "
            f"test, got a {type(held).__name__}); {name}.fit builds its own "
            f"ConvergenceMonitor from the model's tol and n_iter and would ignore it, "
            f"stopping EM by another rule than the one given: set tol / n_iter instead "
            f"(tol=-np.inf runs exactly n_iter iterations) and del m.monitor_; nothing "
            f"was fitted"
        )
    now = {"tol": held.tol, "n_iter": held.n_iter, "verbose": held.verbose}
    was = dict(zip(now, kept[1:]))
    changed = {k: (was[k], v) for k, v in now.items() if not _same_setting(was[k], v)}
    if changed:
        what = ", ".join(f"monitor_.{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        fix = ", ".join(f"{k}={b!r}" for k, (_, b) in changed.items())
        raise ValueError(
            f"{what} since the last fit: {name}.fit reads tol, n_iter and verbose from "
            f"the model's settings, not from monitor_, and would ignore the change; set "
            f"them on the model (m.set_params({fix})) and del m.monitor_; nothing was "
            f"fitted"
        )


def keep_monitor(model, monitor: ConvergenceMonitor) -> None:
    """Store a fit's monitor as ``model.monitor_``, remembered for :func:`check_monitor_kept`."""
    model.monitor_ = monitor
    model._fit_monitor = (monitor, monitor.tol, monitor.n_iter, monitor.verbose)


def _same_setting(a, b) -> bool:
    try:
        return a is b or bool(a == b)
    except (TypeError, ValueError):  # an array's == is not one truth value
        return False


def _fell(prev: float, new: float, tol: float = 0.0) -> bool:
    """``new`` is below ``prev`` by more than rounding (and than ``tol``)."""
    return new - prev < -max(_SLACK, _REL_SLACK * abs(prev), tol)
