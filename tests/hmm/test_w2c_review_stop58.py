"""Review of stop 58 (1b95d89): a hand-built StateTies is renumbered, so rows given one
per group in its label order went to other states with no error; advice that failed when
followed (tau as an (x, y) pair, to_spec() for a 'tied' model's ties_ or a smaller model)."""

from __future__ import annotations

import numpy as np
import pytest

import tying
from tying.hmm import GaussianHMM, PairHMM, StateTies

PAIRS = [("ACGTAC", "ACGAC"), ("GGTAC", "GGTTAC"), ("ACCA", "ACA")]


def _X():
    rng = np.random.default_rng(1)
    return rng.normal(size=(90, 1)) + rng.integers(0, 3, 90)[:, None] * 3.0


def _hand(means):
    return StateTies(3, {"transitions": [0, 1, 2], "means": means, "covars": [0, 1, 2]})


def test_rows_per_group_in_a_statetie_label_order_are_refused_not_swapped():
    # labels [1, 1, 0]: label 0 is state 2, label 1 states 0 and 1; before stop 58 the
    # first row went to state 2, after it silently to states 0 and 1
    rows = [[5.0], [-2.0]]
    model = GaussianHMM(
        3, ties=_hand(np.array([1, 1, 0])), init_params="stc", means_init=rows, n_iter=0
    )
    with pytest.raises(
        ValueError,
        match=r"the labels of ties \(a StateTies\) numbered the "
        r"groups as \[\[2\], \[0, 1\]\]",
    ):
        model.fit(_X())
    sp, A = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"numbered the groups as \[\[2\], \[0, 1\]\]"):
        GaussianHMM.from_params(sp, A, rows, np.ones((3, 1)), ties=_hand([1, 1, 0]))
    # the advice, one row per state, gives what the labels meant
    model.set_params(means_init=[[-2.0], [-2.0], [5.0]])
    assert model.fit(_X()).means_.ravel().tolist() == [-2.0, -2.0, 5.0]
    # labels already in order: rows per group still taken
    ok = GaussianHMM(3, ties=_hand([0, 0, 1]), init_params="stc", means_init=rows, n_iter=0)
    assert ok.fit(_X()).means_.ravel().tolist() == [5.0, 5.0, -2.0]


def test_tau_as_a_pair_is_not_told_to_use_tied_false():
    for tied in (True, False):
        with pytest.raises(ValueError, match=r"tau must be a probability, got \(0.1, 0.2\)$"):
            PairHMM("ACGT", tied=tied, tau=(0.1, 0.2)).fit(PAIRS)


def test_a_tied_models_ties_in_a_bigger_tied_model_names_a_dict_that_works():
    X = _X()
    small = GaussianHMM(
        3, "tied", ties={"means": [[0, 1]]}, n_iter=2, tol=-np.inf, random_state=0
    ).fit(X)
    big = GaussianHMM(4, "tied", ties=small.ties_, n_iter=3, tol=-np.inf, random_state=0)
    with pytest.raises(tying.TieError, match=r"ties=\{'means': \[\[0, 1\]\]\}$"):
        big.fit(X)
    big.set_params(ties={"means": [[0, 1]]})
    want = GaussianHMM(
        4, "tied", ties={"means": [[0, 1]]}, n_iter=3, tol=-np.inf, random_state=0
    ).fit(X)
    assert big.fit(X).history_ == want.history_


def test_to_spec_is_not_advised_to_a_model_without_its_states():
    X = _X()
    four = (
        GaussianHMM(4, ties={"means": [[2, 3]]}, n_iter=2, tol=-np.inf, random_state=0).fit(X).ties_
    )
    with pytest.raises(tying.TieError, match=r"resolve a spec for this model") as info:
        GaussianHMM(3, ties=four).fit(X)
    assert "to_spec()" not in str(info.value)  # {'means': [[2, 3]]}: no state 3 here
