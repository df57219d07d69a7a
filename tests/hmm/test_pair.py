"""Pair HMM: forward = brute force over all alignments; tied X/Y makes (x, y) and (y, x) score alike."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import NotFittedError, PairHMM, mirror
from tying.hmm.pair_dp import M, X, Y

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

S = 3


def _model(rng, tied=True, **kw):
    if tied:
        p = rng.random((S, S))
        p = (p + p.T) / (p + p.T).sum()
        return PairHMM.from_params(
            n_symbols=S,
            tied=True,
            delta=0.15,
            epsilon=0.35,
            tau=0.07,
            match_probs=p,
            insert_probs=rng.dirichlet(np.ones(S)),
            **kw,
        )
    return PairHMM.from_params(
        n_symbols=S,
        tied=False,
        delta=(0.1, 0.2),
        epsilon=(0.3, 0.45),
        tau=0.07,
        match_probs=rng.dirichlet(np.ones(S * S)).reshape(S, S),
        insert_probs=rng.dirichlet(np.ones(S), size=2),
        **kw,
    )


def _alignments(n, m):
    """Every state path that consumes x (length n) and y (length m)."""
    if n == 0 and m == 0:
        yield []
        return
    if n and m:
        for rest in _alignments(n - 1, m - 1):
            yield [M] + rest
    if n:
        for rest in _alignments(n - 1, m):
            yield [X] + rest
    if m:
        for rest in _alignments(n, m - 1):
            yield [Y] + rest


def _brute_force(model, x, y):
    """log Σ over all alignments of P(alignment, x, y), in plain probabilities."""
    return np.log(
        sum(np.exp(model.path_log_prob(x, y, path)) for path in _alignments(len(x), len(y)))
    )


def _pairs(rng, k=25, max_len=5):
    out = [
        (
            rng.integers(0, S, rng.integers(0, max_len + 1)),
            rng.integers(0, S, rng.integers(0, max_len + 1)),
        )
        for _ in range(k)
    ]
    return [p for p in out if len(p[0]) + len(p[1]) > 0] + [(np.array([], int), np.array([], int))]


@pytest.mark.parametrize("tied", [True, False])
def test_forward_equals_brute_force_enumeration(tied):
    rng = np.random.default_rng(0 if tied else 1)
    model = _model(rng, tied, chunk_size=7)  # several chunks of mixed lengths
    pairs = _pairs(rng)
    ll = model.score_pairs(pairs)
    brute = np.array([_brute_force(model, x, y) for x, y in pairs])
    np.testing.assert_allclose(ll, brute, rtol=1e-12)
    assert np.isclose(ll[-1], np.log(0.07))  # two empty sequences: begin -> end


def test_swapping_x_and_y_gives_the_same_log_likelihood_when_tied():
    rng = np.random.default_rng(2)
    pairs = [
        (rng.integers(0, S, rng.integers(1, 30)), rng.integers(0, S, rng.integers(1, 30)))
        for _ in range(40)
    ]
    swapped = [(y, x) for x, y in pairs]
    tied = _model(rng, tied=True)
    assert np.array_equal(tied.score_pairs(pairs), tied.score_pairs(swapped))  # bit for bit
    untied = _model(rng, tied=False)
    assert np.abs(untied.score_pairs(pairs) - untied.score_pairs(swapped)).max() > 1e-3


def test_viterbi_is_the_best_enumerated_alignment_and_mirrors_under_swap():
    rng = np.random.default_rng(3)
    model = _model(rng, tied=True)
    pairs = [p for p in _pairs(rng, k=12) if len(p[0]) and len(p[1])]
    log_p, paths = model.viterbi(pairs)
    log_p_sw, paths_sw = model.viterbi([(y, x) for x, y in pairs])
    for (x, y), lp, path, lp_sw, path_sw in zip(pairs, log_p, paths, log_p_sw, paths_sw):
        best = max(model.path_log_prob(x, y, a) for a in _alignments(len(x), len(y)))
        np.testing.assert_allclose(lp, best, rtol=1e-12)
        np.testing.assert_allclose(model.path_log_prob(x, y, path), lp, rtol=1e-12)
        assert lp_sw == lp
        # the mirrored alignment is a best alignment of the swapped pair
        np.testing.assert_allclose(model.path_log_prob(y, x, mirror(path)), lp_sw, rtol=1e-12)
        assert len(path_sw) == len(path)


def test_match_posteriors_are_probabilities_that_sum_with_gaps_to_one():
    rng = np.random.default_rng(4)
    model = _model(rng, tied=False)
    x, y = rng.integers(0, S, 6), rng.integers(0, S, 4)
    post = model.match_posteriors(x, y)
    assert post.shape == (6, 4) and np.all((post >= 0) & (post <= 1 + 1e-12))
    # P(x_i matched) by enumeration
    logz = _brute_force(model, x, y)
    want = np.zeros((6, 4))
    for a in _alignments(6, 4):
        w = np.exp(model.path_log_prob(x, y, a) - logz)
        i = j = 0
        for k in a:
            if k == M:
                want[i, j] += w
            i, j = i + (k != Y), j + (k != X)
    np.testing.assert_allclose(post, want, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("tied", [True, False])
def test_baum_welch_is_monotone_and_keeps_the_tie(tied):
    rng = np.random.default_rng(5)
    truth = _model(rng, tied)
    pairs, _ = truth.sample(40, random_state=6)
    fit = PairHMM(n_symbols=S, tied=tied, n_iter=12, tol=-np.inf, chunk_size=16).fit(pairs)
    h = np.array(fit.history_)
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:])) and h[-1] > h[0] + 1.0
    if tied:
        assert np.array_equal(fit.match_probs_, fit.match_probs_.T)
        assert np.ndim(fit.delta_) == 0 and fit.insert_probs_.shape == (S,)
        assert np.array_equal(fit.score_pairs(pairs), fit.score_pairs([(y, x) for x, y in pairs]))
    else:
        assert fit.delta_.shape == (2,) and fit.insert_probs_.shape == (2, S)


def test_alphabet_strings_and_alignment_text():
    hmm = PairHMM.from_params("ACGT")
    assert hmm.format_alignment("GATTACA", "GATACA").splitlines()[1].count("-") == 1
    with pytest.raises(ValueError, match=r"pair 0, y\[2\] = 'N' is not in the alphabet 'ACGT'"):
        hmm.score_pairs([("ACGT", "ACNT")])
    c = hmm.n_parameters()
    assert (c.logical, c.physical) == (1 + 16 + 2 * 6, 1 + 10 + 6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"match_probs": np.array([[0.5, 0.3], [0.1, 0.1]])},
            r"tied=True needs a symmetric match distribution",
        ),
        ({"delta": 0.5, "tau": 0.1}, r"2·delta \+ tau = 1.1 must be < 1"),
        ({"epsilon": 0.95, "tau": 0.1}, r"epsilon \+ tau = 1.05 must be < 1"),
        ({"delta": 0.0}, "delta must lie strictly between 0 and 1"),
        ({"insert_probs": [0.2, 0.2]}, r"insert_probs must sum to 1"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairHMM.from_params("AB", **kwargs)


def test_unfitted_pair_hmm_and_bad_symbols():
    with pytest.raises(NotFittedError, match=r"call fit\(pairs\) or PairHMM.from_params"):
        PairHMM("AB").score_pairs([("A", "B")])
    with pytest.raises(ValueError, match=r"pair 0, x\[1\] = 5 is not a symbol \(0..2\)"):
        PairHMM.from_params(n_symbols=3).score_pairs([([0, 5], [1])])


def test_fit_on_pairs_that_are_all_empty_is_refused_and_changes_nothing():
    model = PairHMM.from_params("ACGT", tau=0.05)
    before = (model.tau_, model.delta_, model.match_probs_)
    with pytest.raises(ValueError, match="all 3 pairs are empty: there is nothing to learn tau"):
        model.fit([("", "")] * 3)
    assert (model.tau_, model.delta_) == before[:2]
    assert np.array_equal(model.match_probs_, before[2])
    assert np.isfinite(model.score([("ACG", "AG")]))


def test_fit_whose_update_breaks_the_model_constraints_is_refused():
    # one symbol per pair: the EM update would give 2·delta + tau = 1 (no room to match)
    with pytest.raises(ValueError, match=r"cannot support a valid model.*2·delta \+ tau = 1"):
        PairHMM("AC", n_iter=3).fit([("A", "")] * 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alphabet": ""}, "alphabet must be a non-empty string"),
        ({"n_symbols": 0}, "n_symbols must be a positive integer, got 0"),
    ],
)
def test_from_params_with_an_empty_alphabet_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairHMM.from_params(**kwargs)


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("tau_", 1.0, "tau_ must lie strictly between 0 and 1"),
        ("tau_", 0.95, r"2·delta \+ tau = 1.05 must be < 1"),
        ("delta_", (0.1, 0.2), "delta_ must be a probability"),
        ("match_probs_", np.full((4, 4), 1 / 8), "match_probs_ must sum to 1"),
        (
            "match_probs_",
            np.triu(np.ones((4, 4))) / 10,
            "match_probs_: tied=True needs a symmetric",
        ),
        ("insert_probs_", [0.5, 0.6, -0.1, 0.0], "insert_probs_ must hold non-negative"),
    ],
)
def test_assigned_fitted_attributes_are_validated_and_a_refusal_changes_nothing(name, value, match):
    model = PairHMM.from_params("ACGT")
    before = model.score([("GATTACA", "GATACA")])
    with pytest.raises(ValueError, match=match):
        setattr(model, name, value)
    assert model.score([("GATTACA", "GATACA")]) == before


def test_a_valid_assignment_takes_effect():
    model = PairHMM.from_params("ACGT")
    model.tau_ = 0.2
    assert model.tau_ == 0.2
    assert model.score([("GA", "GA")]) == PairHMM.from_params("ACGT", tau=0.2).score([("GA", "GA")])


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("pseudocount", [0.5, 5.0])
def test_fit_raises_the_map_objective_at_every_iteration(tied, pseudocount):
    """With a pseudocount EM maximises log-likelihood + log-prior; that sum never falls
    (the likelihood alone may), so it is what the stop test and converged_ read."""
    for seed in range(4):
        pairs, _ = PairHMM.from_params("ACGT", tau=0.1).sample(20, random_state=seed)
        f = PairHMM("ACGT", n_iter=15, pseudocount=pseudocount, tied=tied, tol=-np.inf)
        f.fit(pairs)
        obj = np.array(f.objective_)
        assert len(obj) == len(f.history_) == 15
        assert np.all(np.diff(obj) >= -1e-12 * np.abs(obj[1:])), (seed, np.diff(obj).min())
        assert not np.allclose(obj, f.history_)  # the prior term is really there


def test_a_falling_likelihood_under_a_pseudocount_is_not_taken_for_convergence():
    """Stop 25's leftover: this fit's likelihood falls 0.0033 nats at iteration 5 (the
    pseudocount's MAP step). The old fit stopped there and reported converged_=True;
    now it goes on while the MAP objective still rises."""
    pairs, _ = PairHMM.from_params("ACGT", tau=0.1).sample(30, random_state=0)
    f = PairHMM("ACGT", n_iter=30, pseudocount=1.0).fit(pairs)
    assert np.diff(f.history_).min() < -1e-3  # the likelihood did fall
    assert f.n_iter_ > 5 and f.converged_
    assert np.diff(f.objective_)[-1] < f.tol and np.diff(f.objective_).min() > 0


def test_a_falling_objective_is_not_convergence(monkeypatch, caplog):
    pairs, _ = PairHMM.from_params("ACGT", tau=0.1).sample(20, random_state=1)
    real = PairHMM._mstep
    calls = []

    def worse_after_two(self, counts):  # a broken M-step: the third update spoils delta
        real(self, counts)
        calls.append(1)
        if len(calls) == 2:
            self._delta = 0.4 if self.tied else np.array([0.4, 0.4])

    monkeypatch.setattr(PairHMM, "_mstep", worse_after_two)
    f = PairHMM("ACGT", n_iter=10, tol=1e-3).fit(pairs)
    assert f.n_iter_ == 3 and not f.converged_
    assert "not converging" in caplog.text


# ---- stop 30: a pair of probability 0 is -inf everywhere, and fit refuses it
def _model_with_zeros(rng):
    """Tied match table and insert probabilities with zeros: some symbols cannot be
    emitted by some states, and a symbol neither matches nor inserts at all."""
    p = rng.random((S, S)) * (rng.random((S, S)) < 0.6)
    p[0, :] = p[:, 0] = 0.0  # symbol 0 never matches ...
    p = p + p.T
    if p.sum() == 0:
        p[1, 1] = 1.0
    q = rng.dirichlet(np.ones(S))
    q[0] = 0.0  # ... nor inserts: a pair with a 0 has probability 0
    q[rng.integers(1, S)] *= rng.random() < 0.5  # sometimes another insert is 0 too
    if q.sum() == 0:
        q[1] = 1.0
    return PairHMM.from_params(n_symbols=S, tied=True, delta=0.15, epsilon=0.35, tau=0.07,
                               match_probs=p / p.sum(), insert_probs=q / q.sum())  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_a_pair_of_probability_zero_is_minus_inf_on_every_path(seed):
    """Before stop 30 such a pair scored -1e200 (finite: a zero parameter's log is kept
    at -1e200 so that sums stay finite) and had a Viterbi path, posteriors and an
    alignment. Brute force over every alignment decides which pairs are possible."""
    rng = np.random.default_rng(seed)
    model = _model_with_zeros(rng)
    pairs = _pairs(rng, k=30, max_len=4)
    with np.errstate(divide="ignore"):
        brute = np.array([_brute_force(model, x, y) for x, y in pairs])
    impossible = ~np.isfinite(brute)
    assert impossible.any() and (~impossible).any()
    ll = model.score_pairs(pairs)
    np.testing.assert_array_equal(np.isneginf(ll), impossible)
    np.testing.assert_allclose(ll[~impossible], brute[~impossible], rtol=1e-12)
    lp, paths = model.viterbi(pairs)
    np.testing.assert_array_equal(np.isneginf(lp), impossible)
    assert [p is None for p in paths] == impossible.tolist()
    for (x, y), path, v in zip(pairs, paths, lp, strict=True):
        if path is not None:
            assert model.path_log_prob(x, y, path) == pytest.approx(v, rel=1e-12)
    for (x, y), bad in zip(pairs, impossible, strict=True):
        if len(x) == 0 or len(y) == 0:
            continue
        post = model.match_posteriors(x, y)
        assert np.isnan(post).all() == bad and (bad or np.isfinite(post).all())
        if bad:
            with pytest.raises(ValueError, match="probability 0"):
                model.format_alignment(x, y)


def test_an_impossible_pair_adds_no_counts_to_its_chunk():
    """posterior_counts over a chunk with a pair of probability 0: the others' counts
    are what they are without it (before stop 30 its weights exp(f - log p) were near 1
    and its counts went into the sums)."""
    from tying.hmm.pair_dp import PairChunk, posterior_counts

    match = np.array([[0.0, 0.0, 0.0], [0.0, 0.3, 0.2], [0.0, 0.2, 0.3]])
    model = PairHMM.from_params(n_symbols=S, delta=0.15, epsilon=0.35, tau=0.07,
                                match_probs=match, insert_probs=[0.0, 0.5, 0.5])  # fmt: skip
    good = [(np.array([1, 2]), np.array([2, 1, 2])), (np.array([2]), np.array([2]))]
    bad = (np.array([0, 1]), np.array([1]))
    p = model.log_params()
    with_bad = posterior_counts(p, PairChunk.pack([good[0], bad, good[1]]))
    without = posterior_counts(p, PairChunk.pack(good))
    assert np.isneginf(with_bad.log_p[1]) and np.isfinite(without.log_p).all()
    for name in ("trans", "end", "match", "insert"):
        np.testing.assert_allclose(getattr(with_bad, name), getattr(without, name),
                                   rtol=1e-12, atol=1e-15, err_msg=name)  # fmt: skip


def test_fit_refuses_a_pair_of_probability_zero_by_its_index_and_changes_nothing():
    model = PairHMM("AB", match_probs=[[0.0, 0.0], [0.0, 1.0]], insert_probs=[0.0, 1.0],
                    n_iter=3)  # fmt: skip
    pairs = [("B", "B"), ("BB", "B"), ("AB", "B")]
    with pytest.raises(ValueError, match=r"pair 2 \(lengths 2, 1\) has probability 0"):
        model.fit(pairs)
    assert not hasattr(model, "history_")
    fitted = PairHMM.from_params("AB", match_probs=[[0.0, 0.0], [0.0, 1.0]],
                                 insert_probs=[0.0, 1.0])  # fmt: skip
    before = fitted.match_probs_.copy()
    with pytest.raises(ValueError, match="pair 0"):
        fitted.fit([("A", "A")])
    np.testing.assert_array_equal(fitted.match_probs_, before)  # the zero stays 0
    assert fitted.path_log_prob("A", "A", [M]) == -np.inf


# --------------------------- stop 32, fourth round: a relabelled alphabet, n_iter=0
def _acgt_model():
    p = np.diag([0.4, 0.3, 0.2, 0.1])
    return PairHMM.from_params("ACGT", match_probs=p, insert_probs=[0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.score_pairs([("AAG", "AG")]),
        lambda m: m.viterbi([("AAG", "AG")]),
        lambda m: m.match_posteriors("AAG", "AG"),
        lambda m: m.format_alignment("AAG", "AG"),
        lambda m: m.path_log_prob("A", "A", [M]),
        lambda m: m.sample(1, random_state=0),
        lambda m: m.log_params(),
    ],
    ids=["score", "viterbi", "posteriors", "format", "path", "sample", "log_params"],
)
def test_tables_set_for_another_alphabet_of_the_same_size_are_refused(call):
    # was: "ACGT" -> "TGCA" read the tables by position, T as A and A as T: ("AAG", "AG")
    # scored -11.82 instead of -12.22, no error
    m = _acgt_model()
    m.alphabet = "TGCA"
    with pytest.raises(ValueError, match=r"match_probs_ and insert_probs_ were set for the "
                       r"alphabet 'ACGT', but alphabet is now 'TGCA'.*'T' as 'A'"):  # fmt: skip
        call(m)
    m.alphabet = "ACGU"  # one symbol renamed is a relabelling too
    with pytest.raises(ValueError, match=r"now 'ACGU'.*\('U' as 'T'\)"):
        call(m)
    m.alphabet = "ACGT"  # set back: scores as before
    assert m.score_pairs([("AAG", "AG")])[0] == _acgt_model().score_pairs([("AAG", "AG")])[0]


def test_tables_reordered_for_the_new_alphabet_score_as_the_old_model():
    old = _acgt_model()
    m = _acgt_model()
    m.alphabet = "TGCA"
    idx = ["ACGT".index(c) for c in "TGCA"]
    m.match_probs_ = old.match_probs_[np.ix_(idx, idx)]
    with pytest.raises(ValueError, match=r"insert_probs_ were set for the alphabet 'ACGT'"):
        m.score_pairs([("A", "A")])  # one table still holds the old order
    m.insert_probs_ = old.insert_probs_[idx]
    pairs = [("GATTACA", "GATACA"), ("CC", "G"), ("", "T")]
    np.testing.assert_array_equal(m.score_pairs(pairs), old.score_pairs(pairs))


def test_integer_symbols_or_a_new_fit_are_not_a_relabelling():
    m = _acgt_model()
    ll = m.score_pairs([("AG", "AG")])[0]
    m.alphabet, m.n_symbols = None, 4  # the codes keep their positions
    assert m.score_pairs([([0, 2], [0, 2])])[0] == ll
    # short pairs and 3 iterations: 20 on 6 pairs of ~200 took 16 s (stop 51)
    pairs = PairHMM.from_params("ACGT", tau=0.1).sample(6, random_state=1)[0]
    m.alphabet, m.n_iter, m.tol = "TGCA", 3, -np.inf
    m.fit(pairs)  # a fit starts from the constructor's values: tables for "TGCA"
    assert np.isfinite(m.score(pairs))


def test_fit_refuses_to_start_from_a_table_assigned_for_another_alphabet():
    pairs = PairHMM.from_params("ACGT").sample(6, random_state=1)[0]
    m = PairHMM("ACGT", n_iter=2)
    m.match_probs_ = np.diag([0.4, 0.3, 0.2, 0.1])
    m.alphabet = "TGCA"
    with pytest.raises(ValueError, match=r"match_probs_ were set for the alphabet 'ACGT'"):
        m.fit(pairs)
    assert not hasattr(m, "history_")
    m.alphabet = "ACGT"
    assert m.fit(pairs).n_iter_ == 2


def test_n_iter_zero_initialises_only_as_in_the_other_hmms():
    # was: PairHMM(n_iter=0) was refused ("n_iter must be a positive integer")
    from tying.hmm import GaussianHMM

    pairs = PairHMM.from_params("ACGT").sample(6, random_state=1)[0]
    m = PairHMM("ACGT", n_iter=0, delta=0.2, tau=0.05)
    m.epsilon_ = 0.25  # an assigned start value is kept, as with n_iter > 0
    m.fit(pairs)
    start = PairHMM.from_params("ACGT", delta=0.2, epsilon=0.25, tau=0.05)
    for name in ("delta_", "epsilon_", "tau_", "match_probs_", "insert_probs_"):
        np.testing.assert_array_equal(getattr(m, name), getattr(start, name))
    g = GaussianHMM(2, n_iter=0, random_state=0).fit(np.zeros((5, 1)) + np.arange(5)[:, None])
    assert (m.history_, m.n_iter_, m.converged_) == (g.history_, g.n_iter_, g.converged_)
    assert np.isnan(m.log_likelihood_) and np.isnan(g.log_likelihood_) and m.objective_ == []
    np.testing.assert_array_equal(m.score_pairs(pairs), start.score_pairs(pairs))
    with pytest.raises(ValueError, match=r"n_iter must be a non-negative integer .*got -1"):
        PairHMM("ACGT", n_iter=-1).fit(pairs)
    with pytest.raises(ValueError, match="n_iter must be a non-negative integer"):
        PairHMM("ACGT", n_iter=True).fit(pairs)
