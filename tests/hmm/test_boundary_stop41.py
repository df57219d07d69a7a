"""Inputs at the user boundary that gave wrong numbers with no error (stop 41).

- **A NaN or +inf in ``log_emission``** given to the public recursions is no
  log-density. ``forward_log_likelihood`` and ``forward_backward`` read a NaN as a
  state of probability 0 (their log-space fallback), so a sequence holding one scored
  -inf, "no path can emit it"; Viterbi returned a path with a NaN score. They now refuse
  the entry by row, sequence, position and state; -inf (probability 0) stays valid.
- **Values given one per tie group** are read in the order of ``ties_.groups(kind)``
  (by each group's smallest state). A spec listing its groups in another order,
  ``ties={"means": [[2], [0, 1]]}`` with ``means_init=[[10.0], [20.0]]``, gave state 2
  the mean 20 and states 0 and 1 the mean 10, with no error. Such rows are now refused
  by name, with the order they would be read in; one row per state still works.
"""

import itertools

import numpy as np
import pytest
from hmmlearn import hmm as hl
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import (
    GMMHMM,
    CategoricalHMM,
    GaussianHMM,
    SequenceBatch,
    forward_backward,
    forward_log_likelihood,
    viterbi,
)

START, A = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]])
LOG_B = np.random.default_rng(0).normal(size=(6, 2))  # (n_samples, K)
BATCH = SequenceBatch.from_lengths([2, 4])
RECURSIONS = {
    "forward_log_likelihood": lambda lb, b=BATCH: forward_log_likelihood(START, A, lb, b),
    "forward_backward": lambda lb, b=BATCH: forward_backward(START, A, lb, b).log_likelihood,
    "viterbi": lambda lb, b=BATCH: viterbi(START, A, lb, b)[0],
}


def brute_force_log_likelihood(start, A, log_b):
    """log p(x) of one sequence by enumerating every state path (small K and T)."""
    T, K = log_b.shape
    terms = []
    for path in itertools.product(range(K), repeat=T):
        with np.errstate(divide="ignore"):
            lp = np.log(start[path[0]]) + log_b[0, path[0]]
            lp += sum(
                np.log(A[a, b]) + log_b[t, b] for t, (a, b) in enumerate(zip(path, path[1:]), 1)
            )
        terms.append(lp)
    terms = np.array(terms)
    top = terms.max()
    return top if np.isneginf(top) else top + np.log(np.exp(terms - top).sum())


# ----------------------------------------------------- NaN / +inf log-densities
@pytest.mark.parametrize("name", sorted(RECURSIONS))
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_an_undefined_log_density_is_refused_by_entry_not_read_as_probability_zero(name, value):
    lb = LOG_B.copy()
    lb[3, 0] = value  # sequence 1, position 1 (its ll was -inf or NaN, with no error)
    with pytest.raises(
        ValueError,
        match=rf"{name}: log_emission\[3, 0\] is {value} \(sequence 1, position 1, state 0\), "
        r"which is no log-density.*a log-density is a number or -inf",
    ):
        RECURSIONS[name](lb)


@pytest.mark.parametrize("name", sorted(RECURSIONS))
def test_guard_minus_inf_is_still_probability_zero_and_scores_as_brute_force(name):
    lb = LOG_B.copy()
    lb[3, :] = -np.inf  # sequence 1 cannot be emitted: a valid -inf, no error
    lb[0, 1] = -np.inf  # state 1 cannot emit row 0: sequence 0 stays possible
    got = RECURSIONS[name](lb)
    assert np.isneginf(got[1])
    if name != "viterbi":
        assert got[0] == pytest.approx(brute_force_log_likelihood(START, A, lb[:2]), abs=1e-12)


@pytest.mark.parametrize("name", sorted(RECURSIONS))
@pytest.mark.parametrize("batch", [None, [2, 4], np.array([2, 4])])
def test_a_batch_that_is_no_sequence_batch_is_refused_by_type(name, batch):
    with pytest.raises(TypeError, match=rf"{name}: batch must be a SequenceBatch, got "):
        RECURSIONS[name](LOG_B, batch)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    lengths=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    K=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    specials=st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3),
)
def test_property_every_log_density_scores_as_brute_force_or_is_refused(lengths, K, seed, specials):
    """Any mix of NaN, +inf and -inf log-densities: refused naming the first NaN or +inf
    (row-major), else each sequence's log p(x) is the sum over all its state paths."""
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    n = sum(lengths)
    lb = rng.normal(size=(n, K))
    for value in specials:
        lb[rng.integers(n), rng.integers(K)] = value
    batch = SequenceBatch.from_lengths(lengths)
    undefined = np.argwhere(np.isnan(lb) | (lb == np.inf))
    calls = {
        "forward_log_likelihood": lambda: forward_log_likelihood(start, A, lb, batch),
        "forward_backward": lambda: forward_backward(start, A, lb, batch).log_likelihood,
        "viterbi": lambda: viterbi(start, A, lb, batch)[0],
    }
    for name, call in calls.items():
        if undefined.size:
            row, k = undefined[0]
            with pytest.raises(ValueError, match=rf"{name}: log_emission\[{row}, {k}\] is "):
                call()
            continue
        got = call()
        if name == "viterbi":
            assert not np.isnan(got).any() and (got < np.inf).all()
            continue
        ends = np.cumsum(lengths)
        for s, (r0, r1) in enumerate(zip(ends - lengths, ends)):
            want = brute_force_log_likelihood(start, A, lb[r0:r1])
            if np.isneginf(want):
                assert np.isneginf(got[s])
            else:
                assert got[s] == pytest.approx(want, rel=1e-10, abs=1e-10)


# ------------------------------------------------- values given one per tie group
SP3, A3 = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)


def test_gaussian_means_per_group_with_groups_listed_out_of_order_are_refused():
    """The rows would go to group [0, 1] then [2], the reverse of the listed order."""
    with pytest.raises(
        ValueError,
        match=r"means has one row per tie group of 'means' \(2 rows\), read in order of "
        r"each group's smallest state, \[\[0, 1\], \[2\]\], but ties\['means'\] lists the "
        r"groups \(then the states it leaves untied\) as \[\[2\], \[0, 1\]\].*give one row "
        r"per state \(3 rows.*ties=\{'means': \[\[0, 1\], \[2\]\]\}",
    ):
        GaussianHMM.from_params(
            SP3, A3, [[10.0], [20.0]], np.ones((3, 1)), ties={"means": [[2], [0, 1]]}
        )


def test_a_group_listed_before_states_it_leaves_untied_is_refused_too():
    """{"covars": [[1, 2]]}: group [1, 2] is listed, but state 0 (untied) reads row 0."""
    X = np.random.default_rng(1).normal(size=(30, 1))
    m = GaussianHMM(3, "spherical", ties={"covars": [[1, 2]]}, covars_init=[4.0, 1.0], n_iter=2)
    with pytest.raises(ValueError, match=r"covars_init has one row per tie group of 'covars'"):
        m.fit(X)
    assert not hasattr(m, "ties_")  # a refused fit leaves nothing behind


def test_categorical_and_gmm_per_group_rows_out_of_order_are_refused():
    X = np.array([[0], [1], [1], [0], [1]])
    cat = CategoricalHMM(
        3, ties={"emissions": [[1, 2], [0]]}, emissionprob_init=[[0.9, 0.1], [0.2, 0.8]], n_iter=1
    )
    with pytest.raises(ValueError, match=r"emissionprob_init has one row per tie group of "):
        cat.fit(X)
    assert not hasattr(cat, "ties_")
    with pytest.raises(ValueError, match=r"weights has one row per tie group of 'weights'"):
        GMMHMM.from_params(
            SP3,
            A3,
            [[0.9, 0.1], [0.5, 0.5]],
            np.zeros((2, 2, 1)),
            np.ones((2, 2, 1)),
            ties={"weights": [[2], [0, 1]], "means": [[0, 1], [2]], "covars": [[0, 1], [2]]},
        )


def test_guard_groups_listed_in_order_and_per_state_rows_keep_working():
    spread = GaussianHMM.from_params(
        SP3, A3, [[20.0], [20.0], [10.0]], np.ones((3, 1)), ties={"means": [[2], [0, 1]]}
    )
    ordered = GaussianHMM.from_params(
        SP3, A3, [[20.0], [10.0]], np.ones((3, 1)), ties={"means": [[0, 1], [2]]}
    )
    implicit = GaussianHMM.from_params(
        SP3, A3, [[20.0], [10.0]], np.ones((3, 1)), ties={"means": [[0, 1]]}
    )
    for m in (spread, ordered, implicit):
        assert m.means_.ravel().tolist() == [20.0, 20.0, 10.0]


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    labels=st.lists(st.integers(0, 2), min_size=2, max_size=4),
    perm_seed=st.integers(0, 2**16),
    implicit=st.booleans(),
)
def test_property_per_group_values_reach_the_groups_as_listed_or_are_refused(
    labels, perm_seed, implicit
):
    """Means given one per listed group (then one per state left untied, in state order):
    refused, or every state gets its own group's value and the model scores as hmmlearn's
    with those per-state means."""
    K = len(labels)
    rng = np.random.default_rng(perm_seed)
    groups = [list(np.flatnonzero(np.array(labels) == g)) for g in sorted(set(labels))]
    groups = [groups[i] for i in rng.permutation(len(groups))]
    listed = [[int(s) for s in g] for g in groups if not implicit or len(g) > 1]
    named = {s for g in listed for s in g}
    reading = listed + [[s] for s in range(K) if s not in named]  # the user's reading
    if len(reading) == K:  # no tie: per-state and per-group shapes are the same
        return
    values = 10.0 * np.arange(1, len(reading) + 1)[:, None]  # (G, 1), distinct per group
    want = np.empty((K, 1))
    for g, states in enumerate(reading):
        want[states] = values[g]
    start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K)
    try:
        m = GaussianHMM.from_params(start, A, values, np.ones((K, 1)), ties={"means": listed})
    except ValueError as err:
        assert "one row per tie group of 'means'" in str(err)
        return
    assert np.array_equal(m.means_, want)
    ref = hl.GaussianHMM(K, "diag")
    ref.n_features, ref.startprob_, ref.transmat_ = 1, start, A
    ref.means_, ref.covars_ = want, np.ones((K, 1))
    X = rng.normal(scale=20.0, size=(5, 1))
    assert m.score(X) == pytest.approx(ref.score(X), rel=1e-12)


# ------------------------------------------------------- bools as numeric settings
@pytest.mark.parametrize(
    "cls, name",
    [
        (GaussianHMM, "min_covar"),
        (GMMHMM, "min_covar"),
        (GaussianHMM, "means_weight"),
        (GaussianHMM, "covars_prior"),
        (GaussianHMM, "startprob_prior"),
        (GaussianHMM, "transmat_prior"),
        (CategoricalHMM, "emissionprob_prior"),
    ],
)
@pytest.mark.parametrize("value", [True, np.bool_(True), [True, False]])
def test_a_bool_setting_is_refused_not_read_as_one(cls, name, value):
    """True was read as 1.0 (a floor of 1 on every variance, a prior of 1) with no error."""
    if name == "min_covar" and not np.isscalar(value):
        value = True
    m = cls(2, n_iter=1)
    with pytest.raises(TypeError, match=rf"{name} must be a .*number.*\(bool\)"):
        m.set_params(**{name: value})
    assert getattr(m, name) is not value  # nothing was set
    with pytest.raises(TypeError, match=rf"{name} must be a .*\(bool\)"):
        cls(2, n_iter=1, **{name: value}).fit(np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]))


# --------------------------------------------------------- a list of sequences as X
@pytest.mark.parametrize("cls", [GaussianHMM, GMMHMM, CategoricalHMM])
def test_a_list_of_sequences_of_different_lengths_names_the_concatenation(cls):
    """NumPy's "inhomogeneous shape" error named no fix; hmmlearn users pass seqs so."""
    seqs = [np.zeros((5, 1), dtype=int), np.ones((7, 1), dtype=int)]
    m = cls(2, n_iter=1, tol=-np.inf)
    with pytest.raises(
        ValueError,
        match=r"X is a list of 2 sequences of different lengths; .*"
        r"fit\(np\.concatenate\(seqs\), lengths=\[len\(s\) for s in seqs\]\)",
    ):
        m.fit(seqs)
    assert not hasattr(m, "ties_")
    m.fit(np.concatenate(seqs), lengths=[len(s) for s in seqs])  # the fix works
    with pytest.raises(ValueError, match=r"X is a list of 2 sequences"):
        m.score(seqs)


def test_equal_length_sequences_stacked_into_3d_name_the_concatenation():
    with pytest.raises(ValueError, match=r"got shape \(2, 5, 1\); for several sequences, conc"):
        GaussianHMM(2, n_iter=1).fit([np.zeros((5, 1)), np.ones((5, 1))])
