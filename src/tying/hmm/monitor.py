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


def _fell(prev: float, new: float, tol: float = 0.0) -> bool:
    """``new`` is below ``prev`` by more than rounding (and than ``tol``)."""
    return new - prev < -max(_SLACK, _REL_SLACK * abs(prev), tol)
