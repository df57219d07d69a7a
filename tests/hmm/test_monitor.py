"""ConvergenceMonitor: hmmlearn's names, but a budget stop is not convergence."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import ConvergenceMonitor, ConvergenceWarning, GaussianHMM


def test_running_out_of_iterations_is_not_reported_as_converged():
    X = np.random.default_rng(0).normal(size=(200, 1))
    with pytest.warns(ConvergenceWarning, match="budget of n_iter=2 iterations"):
        m = GaussianHMM(3, n_iter=2, tol=1e-12, random_state=0).fit(X)
    assert m.monitor_.iter == 2 and not m.monitor_.converged and not m.converged_
    assert m.monitor_.history == m.history_


def test_converged_when_the_gain_falls_below_tol():
    mon = ConvergenceMonitor(tol=0.5, n_iter=10)
    mon.report(-10.0)
    assert not mon.converged  # one value says nothing yet
    mon.report(-9.0)
    assert not mon.converged
    mon.report(-8.7)
    assert mon.converged and mon.iter == 3


def test_verbose_prints_one_line_per_iteration(capsys):
    X = np.random.default_rng(1).normal(size=(50, 1))
    GaussianHMM(2, n_iter=3, tol=-np.inf, verbose=True, random_state=0).fit(X)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1" and "nan" in lines[0]
