"""A tie group written as a set, ``ties={"means": {0, 1}}``, is named as a set with the
spec it means (stop 62): it said "group 0: a group is a list of states like [0, 1], got
0", blaming an integer the user never wrote as a group."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import CategoricalHMM, GaussianHMM


@pytest.mark.parametrize("group", [{0, 1}, frozenset({1, 0})])
def test_a_set_as_the_groups_names_the_set_and_the_nested_fix(group):
    X = np.random.default_rng(0).normal(size=(30, 2))
    m = GaussianHMM(3, ties={"means": group}, n_iter=2, tol=-np.inf, random_state=0)
    with pytest.raises(
        TypeError,
        match=r"got the set \{0, 1\}; write \[\[0, 1\]\] for one group of those states, or write",
    ):
        m.fit(X)
    assert not hasattr(m, "ties_")  # refused before anything was set
    m.set_params(ties={"means": [[0, 1]]})  # the advice, followed
    assert m.fit(X).ties_.groups("means") == [[0, 1], [2]]


def test_a_set_of_emission_states_is_named_too():
    with pytest.raises(
        TypeError, match=r"ties\['emissions'\] .* got the set \{1, 2\}; write \[\[1, 2\]\]"
    ):
        CategoricalHMM(3, ties={"emissions": {1, 2}}, random_state=0).fit([[0], [1], [2], [1]])


def test_a_pandas_series_or_index_of_states_is_named_as_the_flat_list_it_holds():
    # it said "group 0: a group is a list of states like [0, 1], got 0", as a set did
    pd = pytest.importorskip("pandas")
    X = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(TypeError, match=r"got the flat list \[0, 0, 1\]; write \[\[0, 1\]\] if"):
        GaussianHMM(3, ties={"means": pd.Series([0, 0, 1])}, n_iter=2, random_state=0).fit(X)
    with pytest.raises(TypeError, match=r"got the flat list \[0, 1\]; write \[\[0, 1\]\] for one"):
        GaussianHMM(3, ties={"means": pd.Index([0, 1])}, n_iter=2, random_state=0).fit(X)
