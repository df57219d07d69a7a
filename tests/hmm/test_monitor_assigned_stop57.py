"""A ``monitor_`` assigned before fit is refused, not dropped (stop 57).

hmmlearn documents ``model.monitor_ = MyMonitor(...)`` as the way to a custom stopping
rule. Our fit built its own monitor from ``tol``/``n_iter`` and replaced it: EM stopped
by another rule than the one given (8 iterations where the custom monitor said 3), with
no error.
"""

import numpy as np
import pytest

from tying.hmm import CategoricalHMM, ConvergenceMonitor, GaussianHMM, PairHMM

X = np.random.default_rng(0).normal(size=(40, 1))
S = np.random.default_rng(1).integers(0, 3, size=(30, 1))


class StopAt3(ConvergenceMonitor):
    @property
    def stopped(self):
        return self.iter >= 3


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianHMM(2, n_iter=3, tol=-np.inf, random_state=0),
        lambda: CategoricalHMM(2, n_features=3, n_iter=3, tol=-np.inf, random_state=0),
        lambda: PairHMM("AC", n_iter=3, tol=-np.inf),
    ],
)
def test_an_assigned_monitor_is_refused_and_nothing_changes(make):
    m = make()
    m.monitor_ = StopAt3(tol=0.1, n_iter=5)
    data = [("ACA", "AC")] if isinstance(m, PairHMM) else (S if "Cat" in type(m).__name__ else X)
    before = dict(vars(m))
    with pytest.raises(
        ValueError, match=r"monitor_ was assigned before fit .*got a StopAt3.*del m\.monitor_"
    ):
        m.fit(data)
    assert vars(m).keys() == before.keys() and m.monitor_ is before["monitor_"]
    del m.monitor_
    assert m.fit(data).monitor_ is not None


def test_a_changed_fitted_monitor_is_refused_and_a_refit_passes():
    m = GaussianHMM(2, n_iter=200, tol=1e-2, random_state=0).fit(X)
    first = m.monitor_
    m.fit(X)  # our own monitor, untouched: refits as before
    assert m.monitor_ is not first and m.monitor_.tol == 1e-2
    m.monitor_.tol = 5.0
    with pytest.raises(
        ValueError, match=r"monitor_\.tol 0\.01 -> 5\.0 since the last fit.*set_params\(tol=5\.0\)"
    ):
        m.fit(X)
    del m.monitor_
    m.set_params(tol=5.0).fit(X)
    assert m.converged_ and m.monitor_.tol == 5.0 and m.n_iter_ < 200


def test_our_own_class_assigned_is_refused_and_a_model_fitted_before_refits():
    m = CategoricalHMM(2, n_features=3, n_iter=3, tol=-np.inf, random_state=0)
    m.monitor_ = ConvergenceMonitor(tol=5.0, n_iter=10)
    with pytest.raises(ValueError, match=r"got a ConvergenceMonitor\); CategoricalHMM\.fit"):
        m.fit(S)
    del m.monitor_
    m.fit(S)
    del m._fit_monitor  # as pickled before stop 57: its own monitor, no record of it
    assert m.fit(S).n_iter_ == 3
