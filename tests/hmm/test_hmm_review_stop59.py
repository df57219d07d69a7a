"""Review of stop 59 (hmm): CovarianceFloorWarning on a state that collapsed onto a few
neighbouring rows of unit-scale data.

The floor exists to stop such a collapse; the warning read it as "the data vary less
than min_covar" and advised a smaller min_covar (and "rescale X", on unit-scale data):
under -W error (the test suite, careful users) the fit was refused. Following the
advice literally on 1e-2-scale data, a GMMHMM warned again (a component collapsed onto
rows at the new floor, variance 4.7e-7 where the data's is 1e-4).
"""

import warnings

import numpy as np
import pytest

from tying.hmm import GMMHMM, CovarianceFloorWarning, GaussianHMM


def _fit_floor_errors(model, X, lengths):
    """fit with CovarianceFloorWarning an error and every other warning ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", CovarianceFloorWarning)
        return model.fit(X, lengths)


def _indicator_and_unit_feature():
    # a 0/1 indicator and a standardised measurement, three regimes, 20 sequences of 30
    rng = np.random.default_rng(1)
    z = np.repeat(rng.integers(0, 3, 20), 30)
    flag = (rng.random(600) < np.where(z == 0, 0.1, 0.5)).astype(float)
    return np.column_stack([flag, rng.normal(z, 1.0)]), [30] * 20


def test_a_state_collapsed_on_six_unit_scale_rows_is_not_flagged_as_the_datas_scale():
    X, lengths = _indicator_and_unit_feature()
    m = _fit_floor_errors(GaussianHMM(6, "diag", n_iter=100, random_state=1), X, lengths)
    # the collapse did happen: one state reads the floor along the unit-scale feature,
    # the others read variances of order 1 there; the floor did its job
    assert np.isclose(m.covars_[:, 1, 1].min(), 1e-3)
    assert np.median(m.covars_[:, 1, 1]) > 0.5


def test_the_advised_min_covar_followed_literally_does_not_warn_again():
    rng = np.random.default_rng(2)
    z = np.repeat(rng.integers(0, 3, 20), 30)
    X = rng.normal(z * 1e-2, 1e-2)[:, None]  # variance 1e-4: the default floor binds
    kw = dict(n_mix=8, covariance_type="diag", n_iter=60, random_state=2)
    with pytest.warns(CovarianceFloorWarning, match=r"e\.g\. min_covar=1e-06"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # not ours: budget, degenerate
            warnings.simplefilter("always", CovarianceFloorWarning)
            GMMHMM(3, **kw).fit(X, [30] * 20)
    # the advice: min_covar=1e-06; a component then collapsing onto a few rows of this
    # 1e-2-scale cloud is the new floor's job, not a second scale problem
    m = _fit_floor_errors(GMMHMM(3, min_covar=1e-6, **kw), X, [30] * 20)
    assert m.covars_.max() > 5e-5  # the data's variances, free of the old floor
