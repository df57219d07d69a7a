"""Errors beside an exact null direction scaled by χ²/(n - rank J), as a fit holding it (stop 61).

``amp·exp(-(x - cen)/wid) + off``: ``amp`` and ``cen`` change the model the same way. The
message says the other errors are "the same whichever of them is fixed", yet with
``scale_covar=True`` they were scaled by χ²/(n - p) where the fit holding ``cen`` scales by
χ²/(n - p + 1): ``wid`` 1.9 % above the held fit's on 30 points (0.01586 for 0.01556), no
word. ``nfree`` and ``redchi`` keep lmfit's ``n - nvarys``.
"""

import numpy as np
import pytest

from .test_rank_dof_review61 import _fits


def _data():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 3, 30)
    return [(x, 2 * np.exp(-(x - 0.5) / 0.8) + 0.3 + rng.normal(0, 0.05, 30))]


@pytest.mark.parametrize("solver", ["lm", "trf"])
def test_estimable_errors_beside_a_null_direction_are_the_held_fit_s(solver):
    ((x, y),) = _data()
    res, held = _fits(x, y, solver)
    assert res.nfree == 26 and held.nfree == 27  # lmfit's n - nvarys, unchanged
    assert res.chi2 == pytest.approx(held.chi2, rel=1e-9)
    for name in ("wid", "off"):  # were 1.9 % above the held fit's
        assert res.stderr[name] == pytest.approx(held.stderr[name], rel=1e-6)
    if "could not be estimated" in res.message:  # the SVD route says how it scaled
        assert "scaled by chi2 / (ndata - rank) = chi2 / 27, not chi2 / nfree" in res.message


def test_without_a_null_direction_the_scale_is_lmfit_s():
    from tying.fit.rank_deficient import rank_scale

    assert rank_scale(26.0, 26, 0, 1.0) == (1.0, "")
    # nfree = 0 with one null direction: n - rank = 1, the held fit's (review 61: was 1.0,
    # the errors unscaled as if sigma were 1)
    assert rank_scale(26.0, 0, 1, 1.0)[0] == 26.0
    assert np.isnan(rank_scale(26.0, -1, 1, 1.0)[0])  # n - rank = 0: nothing to scale by
    assert rank_scale(27.0, 26, 1, 27 / 26)[0] == pytest.approx(1.0)
