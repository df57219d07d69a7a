"""One base class for every domain's "stopped at its budget" warning (stop 35)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tying


def test_an_hmm_fit_that_hit_n_iter_warns_with_the_shared_class():
    from tying.hmm import GaussianHMM

    X = np.random.default_rng(0).normal(size=(200, 1))
    with pytest.warns(tying.ConvergenceWarning, match="budget of n_iter=2"):
        GaussianHMM(2, n_iter=2, random_state=0).fit(X)


def test_a_global_fit_that_hit_its_budget_warns_with_the_shared_class():
    from tests.fit.helpers import INIT, gauss, peaks
    from tying.fit import FitWarning, GlobalFit

    datasets, _ = peaks(k=3, n=40)
    fit = GlobalFit(gauss, datasets, shared=["center", "width"], local=["amplitude"],
                    init=INIT, max_iter=2)  # fmt: skip
    with pytest.warns(tying.ConvergenceWarning, match="max_iter=2 reached") as caught:
        res = fit.run()
    assert not res.success
    assert any(issubclass(w.category, FitWarning) for w in caught)  # still a fit warning


def test_one_filter_silences_every_domain():
    from tying.hmm import GaussianHMM

    X = np.random.default_rng(0).normal(size=(200, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", tying.ConvergenceWarning)
        m = GaussianHMM(2, n_iter=2, random_state=0).fit(X)
    assert m.monitor_.hit_budget
