"""Stop 58: a hand-built StateTies is one grouping of the states, or refused by kind.

``StateTies(n, {kind: labels})`` is public (``tying.hmm.StateTies``) and a model takes it
as ``ties=``. Its labels were taken as given: ``[0, 0, -1]`` made state 2 read the last
group (``groups`` left it out, the fit's log-likelihood fell), ``[0, 0, 5]`` counted four
empty groups (``n_free_parameters`` 17 where the model has 13), ``[0, 0, 1.5]`` was cast to
``[0, 0, 1]``, and misshaped labels reached NumPy's broadcast error. A flat list as a
dict spec's groups (``{"means": [0, 1]}``) was refused without saying how to write it.
"""

from __future__ import annotations

import numpy as np
import pytest

import tying
from tying.hmm import GaussianHMM, StateTies

KINDS = ("transitions", "means", "covars")


def _X():
    rng = np.random.default_rng(1)
    return rng.normal(size=(90, 1)) + rng.integers(0, 3, 90)[:, None] * 3.0


def _fit(ties, covariance_type="diag"):
    return GaussianHMM(3, covariance_type, ties=ties, n_iter=3, tol=-np.inf, random_state=0).fit(
        _X()
    )


def _labels(means, covars=(0, 1, 2)):
    return StateTies(3, {"transitions": [0, 1, 2], "means": means, "covars": list(covars)})


@pytest.mark.parametrize("means", [[0, 0, 5], [1, 1, 0], [7, 7, 3]])
def test_labels_with_gaps_or_in_another_order_fit_as_the_groups_they_name(means):
    want = _fit({"means": [[0, 1]]})
    got = _fit(_labels(means))
    assert got.ties_.groups("means") == [[0, 1], [2]]
    assert got.n_free_parameters() == want.n_free_parameters() == 13  # was 17 for [0, 0, 5]
    assert got.means_.tobytes() == want.means_.tobytes()
    assert got.history_ == want.history_


@pytest.mark.parametrize(
    "means, err, match",
    [
        ([0, 0, -1], tying.TieError, r"group_of\['means'\]: state 2 has the negative label -1"),
        ([0, 0, 1.5], TypeError, r"group_of\['means'\]: group labels are integers, got dtype"),
        ([True, True, False], TypeError, r"group labels are integers, got dtype bool"),
        ([[0, 0, 1]], tying.TieError, r"one label per state, shape \(3,\), got shape \(1, 3\)"),
        ([0, 0], tying.TieError, r"one label per state, shape \(3,\), got shape \(2,\)"),
    ],
)
def test_labels_that_are_no_grouping_of_the_states_are_refused_by_kind(means, err, match):
    with pytest.raises(err, match=match):
        _labels(means)


def test_labels_edited_in_place_are_checked_when_a_model_reads_them():
    t = _labels([0, 0, 1])
    t.group_of["means"][2] = -1  # state 2 read the last group, with no error
    m = GaussianHMM(3, ties=t, n_iter=3, tol=-np.inf, random_state=0)
    with pytest.raises(tying.TieError, match=r"state 2 has the negative label -1"):
        m.fit(_X())
    assert not hasattr(m, "ties_")  # nothing was fitted
    t.group_of["means"][:] = [1, 1, 0]  # the same groups, numbered otherwise: taken
    assert _fit(t).ties_.groups("means") == [[0, 1], [2]]
    # one covariance group labelled 1 is what covariance_type='tied' says (was refused)
    one = _labels([0, 1, 2])
    one.group_of["covars"][:] = 1
    tied = _fit(one, "tied")
    assert tied.ties_.groups("covars") == [[0, 1, 2]]
    assert tied.history_ == _fit(None, "tied").history_


def test_the_advice_for_bad_labels_works_when_followed():
    with pytest.raises(tying.TieError, match=r"kinds=model.tie_kinds\)") as info:
        _labels([0, 0, -1])
    assert "StateTies.resolve({'means': [[0, 1]]}, n_states=3" in str(info.value)
    model = GaussianHMM(3, n_iter=3, tol=-np.inf, random_state=0)
    ties = StateTies.resolve({"means": [[0, 1]]}, n_states=3, kinds=model.tie_kinds)
    assert model.set_params(ties=ties).fit(_X()).ties_.groups("means") == [[0, 1], [2]]


@pytest.mark.parametrize("flat", [[0, 1], (0, 1), np.array([0, 1])])
def test_a_flat_list_of_states_names_the_one_group_form(flat):
    with pytest.raises(TypeError, match=r"got the flat list \[0, 1\]; write \[\[0, 1\]\] for one"):
        GaussianHMM(3, ties={"means": flat}).fit(_X())
    assert _fit({"means": [[0, 1]]}).ties_.groups("means") == [[0, 1], [2]]


def test_a_statetie_of_another_size_names_the_dict_that_fits_and_it_works():
    fitted = _fit({"means": [[0, 1]]})
    bigger = GaussianHMM(4, ties=fitted.ties_, n_iter=3, tol=-np.inf, random_state=0)
    with pytest.raises(tying.TieError, match=r"to_spec\(\) \(\{'means': \[\[0, 1\]\]\}\)"):
        bigger.fit(_X())  # said only 'resolve the spec again for this model'
    bigger.set_params(ties=fitted.ties_.to_spec())
    assert bigger.fit(_X()).ties_.groups("means") == [[0, 1], [2], [3]]


def test_a_flat_list_of_labels_names_the_groups_it_labels():
    # [0, 0, 1] is no group (state 0 twice): read as labels, it is the group [0, 1]
    match = r"flat list \[0, 0, 1\]; write \[\[0, 1\]\] if these are one group label per state"
    with pytest.raises(TypeError, match=match):
        GaussianHMM(3, ties={"means": [0, 0, 1]}).fit(_X())


@pytest.mark.parametrize("n", [2.7, True, "3"])
def test_n_states_that_is_no_integer_is_refused_by_name(n):
    with pytest.raises(TypeError, match=r"StateTies: n_states must be an integer"):
        StateTies(n, {"means": [0, 0]})  # 2.7 was read as 2


def test_a_model_given_a_statetie_does_not_share_it():
    """A StateTies passed as ``ties`` (the user's, or another model's ``ties_``) was held
    as the model's ``ties_`` itself: an in-place edit of the object passed changed the
    fitted model's groups and scores with no error."""
    given = StateTies.resolve({"means": [[0, 1]]}, n_states=3, kinds=KINDS)
    first = _fit(given)
    second = _fit(first.ties_)
    assert second.ties_ == first.ties_ == given
    assert second.ties_ is not first.ties_ and first.ties_ is not given
    scores = first.score(_X()), second.score(_X())
    given.group_of["means"][:] = [0, 1, 1]  # the object passed, edited after the fit
    first.ties_.group_of["means"][:] = [0, 1, 1]  # one model's own ties_, edited
    assert second.score(_X()) == scores[1]
    assert second.ties_.groups("means") == [[0, 1], [2]]
