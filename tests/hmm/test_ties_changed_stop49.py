"""Assignments after ``set_params(ties=...)`` on a fitted model (found by the stateful
machine of ``test_stateful_stop49.py``).

``ties`` takes effect at the next ``fit``; until then the model holds the fitted
``ties_``, and an assignment giving states of one of its groups different values is
refused. The refusal told the user to "untie them" (which they just did, in ``ties``)
with no word that ``ties_`` is the last fit's: the fix it named did not work. Sequence:
``build(ct="diag", K=3) -> declare_ties("covars") -> fit -> declare_ties("means") ->
set_covars`` (refused, naming only the old tie).
"""

from __future__ import annotations

import numpy as np
import pytest
from hmmlearn import hmm as hl
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import GaussianHMM

X = np.random.default_rng(0).normal(size=(40, 2))
NOTE = r"ties_, from the last fit\), not the ties=.* set since, which take effect at the next fit"


def _fitted(ties):
    return GaussianHMM(3, "diag", n_iter=2, tol=-np.inf, random_state=0, ties=ties).fit(X)


def test_tie_refusal_after_ties_changed_says_ties_take_effect_at_fit():
    m = _fitted({"covars": [[0, 1]]})
    m.set_params(ties={"means": [[0, 1]]})
    before = m.covars_.copy()
    cv = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    with pytest.raises(ValueError, match=r"covars_: states 0 and 1 are tied.*" + NOTE):
        m.covars_ = cv
    np.testing.assert_array_equal(m.covars_, before)  # refused: unchanged
    m.fit(X)  # the new ties take effect: now the covariances are per state
    m.covars_ = cv
    np.testing.assert_allclose(m._covars_, cv)


def test_item_write_refusal_after_ties_changed_names_the_pending_ties():
    m = _fitted({"means": [[0, 1]]})
    m.set_params(ties=None)
    mu = m.means_
    with pytest.raises(ValueError, match=r"means_: states 0 and 1 are tied.*" + NOTE):
        mu[[0, 1]] = [[1.0, 1.0], [2.0, 2.0]]


def test_tie_refusal_without_a_pending_change_has_no_note():
    m = _fitted({"means": [[0, 1]]})
    with pytest.raises(ValueError, match=r"or untie them$"):
        m.means_ = np.arange(6.0).reshape(3, 2)


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    fitted_kind=st.sampled_from(["means", "covars", "transitions"]),
    new=st.sampled_from([None, "means", "covars", "transitions"]),
    seed=st.integers(0, 2**16),
)
def test_property_assignments_after_a_ties_change_are_right_or_refused_by_name(
    fitted_kind, new, seed
):
    """Whatever ``ties`` says since the fit, an assignment either holds, per state, and
    scores as hmmlearn on those parameters, or is refused naming the pending ties and
    changes nothing."""
    rng = np.random.default_rng(seed)
    m = _fitted({fitted_kind: [[0, 1]]})
    m.set_params(ties=None if new is None else {new: [[1, 2]]})
    values = {
        "means_": rng.normal(size=(3, 2)),
        "covars_": rng.uniform(0.5, 2, (3, 2)),
        "transmat_": rng.dirichlet(np.ones(3), size=3),
    }
    for name, v in values.items():
        before = {a: np.array(getattr(m, a)) for a in values}
        kind = {"means_": "means", "covars_": "covars", "transmat_": "transitions"}[name]
        if kind == fitted_kind:  # rows 0 and 1 differ: the fitted tie refuses them
            with pytest.raises(ValueError, match=NOTE):  # ties never tie 0, 1 since
                setattr(m, name, v)
            for a in values:
                np.testing.assert_array_equal(getattr(m, a), before[a])
            continue
        setattr(m, name, v)
    t = hl.GaussianHMM(3, "diag", init_params="")
    t.startprob_, t.transmat_, t.means_ = m.startprob_, m.transmat_, m.means_
    t.covars_ = m._covars_
    np.testing.assert_allclose(m.score(X, [10, 30]), t.score(X, [10, 30]), rtol=1e-9)
