"""The EM convergence record of a fitted HMM (hmmlearn's ``monitor_``).

hmmlearn scripts read ``model.monitor_.history`` and ``model.monitor_.converged``
after ``fit``; :class:`ConvergenceMonitor` gives them the same names. One
difference is deliberate: ``converged`` is True only when the log-likelihood
gain fell below ``tol``. hmmlearn also calls a fit that merely ran out of
iterations "converged"; we do not report a budget stop as convergence.

Example:
    >>> m = ConvergenceMonitor(tol=0.1, n_iter=5, verbose=False)
    >>> for ll in (-10.0, -9.0, -8.95):
    ...     m.report(ll)
    >>> m.iter, m.converged, list(m.history)
    (3, True, [-10.0, -9.0, -8.95])
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["ConvergenceMonitor"]


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
    """

    _template = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol: float, n_iter: int, verbose: bool = False):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history: list[float] = []
        self.iter = 0

    def report(self, log_prob: float) -> None:
        """Record one iteration's log-likelihood (and print it when ``verbose``)."""
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(
                self._template.format(iter=self.iter + 1, log_prob=log_prob, delta=delta),
                file=sys.stderr,
            )
        self.history.append(float(log_prob))
        self.iter += 1

    @property
    def converged(self) -> bool:
        """True when the last gain was below ``tol`` (a budget stop is not convergence)."""
        return len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol

    def __repr__(self) -> str:
        return (
            f"ConvergenceMonitor(tol={self.tol!r}, n_iter={self.n_iter}, iter={self.iter}, "
            f"converged={self.converged})"
        )
