"""Stop 37: property tests. Random models, tie layouts and sequence lengths, each
checked against hmmlearn (untied) or against hmmlearn's own sufficient statistics
pooled by hand over the tie groups (tied: one EM step of a tied model is exactly the
untied M-step on pooled statistics), or refused by name; never a third outcome.

Also the guards of this stop's fixes: ``lengths`` whose int64 sum wraps to ``len(X)``
(accepted, then the compiled kernels crashed the interpreter), non-finite or huge float
lengths (NumPy's cast warning, then a wrong value in the message), and the public
recursions given a ``log_emission`` that does not fit the batch or the states (read past
its end, silently).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import (
    CategoricalHMM,
    GaussianHMM,
    SequenceBatch,
    check_lengths,
    forward_backward,
    forward_log_likelihood,
    viterbi,
)

from .helpers import reference_forward_backward

hmm = pytest.importorskip("hmmlearn.hmm")

COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
SETTINGS = dict(deadline=None, derandomize=True)


# ------------------------------------------------------------------- random models
def _model_values(rng, K, D, covariance_type, *, zeros=False):
    """Start, transitions, means and hmmlearn-shaped covariances of a random model; with
    ``zeros``, some off-diagonal transitions are structural zeros (the diagonal stays)."""
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K) * 2, size=K)
    if zeros and K > 1:
        A = A * (rng.random((K, K)) < 0.6)
        A[np.arange(K), np.arange(K)] += 0.2
        A /= A.sum(1, keepdims=True)
    means = rng.normal(scale=2.0, size=(K, D))
    if covariance_type == "spherical":
        cv = rng.uniform(0.5, 2.0, size=K)
    elif covariance_type == "diag":
        cv = rng.uniform(0.5, 2.0, size=(K, D))
    elif covariance_type == "full":
        B = rng.normal(size=(K, D, D))
        cv = B @ B.transpose(0, 2, 1) + np.eye(D)
    else:
        B = rng.normal(size=(D, D))
        cv = B @ B.T + np.eye(D)
    return start, A, means, cv


def _draw_X(rng, means, lengths):
    n = int(np.sum(lengths))
    K = len(means)
    return means[rng.integers(0, K, n)] + rng.normal(scale=1.5, size=(n, means.shape[1]))


def _set(model, start, A, means, cv):
    model.startprob_, model.transmat_, model.means_, model.covars_ = start, A, means, cv
    return model


def _full_covars(h):
    """hmmlearn's covariances as ``(K, D, D)`` (its spherical getter breaks after fit)."""
    c, K, D = h._covars_, h.n_components, h.means_.shape[1]
    if h.covariance_type == "spherical":
        c = c if c.ndim == 1 else c[:, 0]
        return c[:, None, None] * np.eye(D)
    if h.covariance_type == "diag":
        return np.stack([np.diag(r) for r in c])
    if h.covariance_type == "tied":
        return np.repeat(c[None], K, axis=0)
    return c


def _close(got, want, rel, what):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    scale = np.maximum(np.abs(want), 1.0)
    err = np.max(np.abs(got - want) / scale) if want.size else 0.0
    assert err <= rel, f"{what}: {err:.3g} > {rel:g}\ngot  {got}\nwant {want}"


lengths_st = st.lists(st.integers(1, 25), min_size=1, max_size=4)


# --------------------------------------------------- untied: numbers equal hmmlearn's
@settings(max_examples=25, **SETTINGS)
@given(
    K=st.integers(1, 4),
    D=st.integers(1, 3),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    lengths=lengths_st,
    zeros=st.booleans(),
    priors=st.fixed_dictionaries(
        {},
        optional={
            "startprob_prior": st.sampled_from([0.5, 1.0, 2.5]),
            "transmat_prior": st.sampled_from([0.5, 1.0, 3.0]),
            "means_prior": st.sampled_from([-1.0, 0.0, 2.0]),
            "means_weight": st.sampled_from([0.0, 0.5, 3.0]),
            "covars_prior": st.sampled_from([1e-2, 0.5, 2.0]),
            "covars_weight": st.sampled_from([1.0, 2.0, 6.0]),
        },
    ),
    seed=st.integers(0, 2**16),
)
def test_untied_scores_posteriors_paths_and_one_em_step_equal_hmmlearn(
    K, D, covariance_type, lengths, zeros, priors, seed
):
    rng = np.random.default_rng(seed)
    values = _model_values(rng, K, D, covariance_type, zeros=zeros)
    X = _draw_X(rng, values[2], lengths)
    # hmmlearn's log implementation is exact where a zero transition drops a state
    ref = _set(hmm.GaussianHMM(K, covariance_type, implementation="log"), *values)
    ours = _set(GaussianHMM(K, covariance_type), *values)

    _close(ours.score(X, lengths), ref.score(X, lengths), 1e-10, "score")
    per_seq = [ref.score(x) for x in np.split(X, np.cumsum(lengths)[:-1])]
    _close(ours.score_sequences(X, lengths), per_seq, 1e-10, "score_sequences")
    _close(ours.predict_proba(X, lengths), ref.predict_proba(X, lengths), 1e-10, "posteriors")
    log_p, _ = ours.decode(X, lengths, algorithm="viterbi")
    _close(log_p, ref.decode(X, lengths, algorithm="viterbi")[0], 1e-10, "viterbi log-prob")

    # one EM step from the same start, hmmlearn-style on both sides (its priors)
    # (min_covar: ours floors every M-step, hmmlearn's only its start; one row gives a
    # singular covariance, where the floor binds: docs/hmm.md, "Where we differ")
    kw = dict(init_params="", n_iter=1, tol=-np.inf, implementation="log", min_covar=1e-12)
    kw.update(priors)  # MAP fits: the same priors on both sides
    ref_fit = _set(hmm.GaussianHMM(K, covariance_type, **kw), *values).fit(X, lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hmmlearn-style small fits may log "not converging"
        fit = _set(GaussianHMM(K, covariance_type, **kw), *values).fit(X, lengths)
    _close(fit.history_, ref_fit.monitor_.history, 1e-10, "EM history")
    _close(fit.startprob_, ref_fit.startprob_, 1e-8, "startprob_")
    # a row no transition leaves (one-row sequences only): hmmlearn zeroes it, we keep it
    left = ref_fit.transmat_.sum(1) > 0.5
    _close(fit.transmat_[left], ref_fit.transmat_[left], 1e-8, "transmat_")
    assert np.all(fit.transmat_[values[1] == 0] == 0), "a structural zero moved"
    # a state the data never visit keeps its values here (hmmlearn divides ~0 by ~0)
    visited = ref.predict_proba(X, lengths).sum(0) > 1e-6  # E-step of the same start
    _close(fit.means_[visited], ref_fit.means_[visited], 1e-8, "means_")
    cv_visited = visited if covariance_type != "tied" else slice(None)
    _close(np.asarray(fit.covars_)[cv_visited], _full_covars(ref_fit)[cv_visited], 1e-8, "covars_")


# ---------------------------------------------- tied: the pooled M-step, by hand
def _random_groups(draw, K):
    """A random partition of range(K) as a list of groups (singletons left out)."""
    labels = draw(st.lists(st.integers(0, K - 1), min_size=K, max_size=K))
    groups = {}
    for state, label in enumerate(labels):
        groups.setdefault(label, []).append(state)
    return [g for g in groups.values() if len(g) > 1]


def _labels(groups, K):
    lab = np.arange(K)
    for g in groups:
        lab[g] = g[0]
    return lab


def _equalise(values, lab):
    """Give tied states their group's first state's value (the model's start values)."""
    return values[lab]


@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_a_tied_em_step_is_the_m_step_of_pooled_hmmlearn_statistics(data):
    draw = data.draw
    K = draw(st.integers(2, 4), label="K")
    D = draw(st.integers(1, 3), label="D")
    covariance_type = draw(st.sampled_from(COVARIANCE_TYPES), label="covariance_type")
    lengths = draw(lengths_st, label="lengths")
    seed = draw(st.integers(0, 2**16), label="seed")
    ties = {
        "means": _random_groups(draw, K),
        "transitions": _random_groups(draw, K),
    }
    if covariance_type != "tied":  # one covariance already
        ties["covars"] = _random_groups(draw, K)
    zeros = draw(st.booleans(), label="zeros")
    rng = np.random.default_rng(seed)
    start, A, means, cv = _model_values(rng, K, D, covariance_type, zeros=zeros)
    lab = {kind: _labels(ties.get(kind, []), K) for kind in ("means", "covars", "transitions")}
    A, means = _equalise(A, lab["transitions"]), _equalise(means, lab["means"])
    if covariance_type != "tied":
        cv = _equalise(cv, lab["covars"])
    X = _draw_X(rng, means, lengths)

    # hmmlearn's E-step on the same (spread) parameters gives the statistics
    ref = _set(hmm.GaussianHMM(K, covariance_type, implementation="log"), start, A, means, cv)
    ref.n_features = D  # _do_estep reads what fit would have set
    stats, log_p = ref._do_estep(X, lengths)
    fit = GaussianHMM(
        K, covariance_type, ties=ties, n_iter=1, tol=-np.inf, min_covar=1e-12, init_params=""
    )
    fit.set_params(covars_prior=0.0)  # maximum likelihood, as the pooled reference
    fit = _set(fit, start, A, means, cv).fit(X, lengths)
    _close(fit.history_, [log_p], 1e-10, "log-likelihood")

    def pool(kind, per_state):  # sum over each tie group, spread back to its states
        out = np.zeros_like(per_state)
        np.add.at(out, lab[kind], per_state)
        return out[lab[kind]]

    _close(fit.startprob_, stats["start"] / stats["start"].sum(), 1e-9, "startprob_")
    trans = pool("transitions", stats["trans"])
    seen = trans.sum(1) > 0
    _close(fit.transmat_[seen], trans[seen] / trans[seen].sum(1, keepdims=True), 1e-9, "transmat_")
    assert np.all(fit.transmat_[A == 0] == 0), "a structural zero of a tied row moved"
    N = pool("means", stats["post"])
    ok = N > 1e-8
    mu = pool("means", stats["obs"]) / np.where(ok, N, 1.0)[:, None]
    # stop 50: a means group over unequal covariances takes the precision-weighted mean
    # (the exact M-step; pooling is exact only for equal covariances)
    C = _full_covars(_set(hmm.GaussianHMM(K, covariance_type), start, A, means, cv))
    for g in {int(k) for k in lab["means"]}:
        states = np.flatnonzero(lab["means"] == g)
        if ok[g] and any(not np.array_equal(C[states[0]], C[k]) for k in states):
            lam = np.linalg.inv(C[states])
            Nk, Sk = stats["post"][states], stats["obs"][states]
            mu[states] = np.linalg.solve(
                (Nk[:, None, None] * lam).sum(0), np.einsum("nij,nj->i", lam, Sk)
            )
    _close(fit.means_[ok], mu[ok], 1e-8, "means_")
    if not ok.all():
        return  # a group without data keeps its old mean: the covariances read that mean
    m = fit.means_
    post = stats["post"]
    if covariance_type in ("spherical", "diag"):
        S = stats["obs**2"] - 2 * m * stats["obs"] + post[:, None] * m**2  # (K, D)
        var = pool("covars", S) / pool("covars", post)[:, None]
        if covariance_type == "spherical":
            var = var.mean(1, keepdims=True) * np.ones(D)
        want = np.stack([np.diag(v) for v in var])
    else:
        S = (
            stats["obs*obs.T"]
            - stats["obs"][:, :, None] * m[:, None, :]
            - m[:, :, None] * stats["obs"][:, None, :]
            + post[:, None, None] * m[:, :, None] * m[:, None, :]
        )
        if covariance_type == "tied":
            want = np.repeat((S.sum(0) / post.sum())[None], K, axis=0)
        else:
            want = pool("covars", S) / pool("covars", post)[:, None, None]
    _close(fit.covars_, want, 1e-7, "covars_")
    for kind, attr in (("means", fit.means_), ("transitions", fit.transmat_)):
        assert np.array_equal(attr, attr[lab[kind]]), f"tie on {kind} no longer holds"


@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_tied_categorical_em_step_pools_hmmlearn_statistics(data):
    draw = data.draw
    K = draw(st.integers(2, 4), label="K")
    M = draw(st.integers(1, 4), label="n_symbols")
    lengths = draw(lengths_st, label="lengths")
    seed = draw(st.integers(0, 2**16), label="seed")
    ties = {"emissions": _random_groups(draw, K), "transitions": _random_groups(draw, K)}
    rng = np.random.default_rng(seed)
    lab = {kind: _labels(ties[kind], K) for kind in ties}
    start = rng.dirichlet(np.ones(K))
    A = _equalise(rng.dirichlet(np.ones(K) * 2, size=K), lab["transitions"])
    B = _equalise(rng.dirichlet(np.ones(M) * 2, size=K), lab["emissions"])
    X = rng.integers(0, M, size=(int(np.sum(lengths)), 1))

    ref = hmm.CategoricalHMM(K, n_features=M, implementation="log")
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, A, B
    stats, log_p = ref._do_estep(X, lengths)
    ours = CategoricalHMM.from_params(start, A, B, ties=ties)
    _close(ours.score(X, lengths), log_p, 1e-10, "score")
    _close(ours.predict_proba(X, lengths), ref.predict_proba(X, lengths), 1e-10, "posteriors")

    fit = CategoricalHMM(K, n_features=M, ties=ties, n_iter=1, tol=-np.inf, init_params="")
    fit.startprob_, fit.transmat_, fit.emissionprob_ = start, A, B
    fit.fit(X, lengths)
    for kind, counts, got in (
        ("transitions", stats["trans"], fit.transmat_),
        ("emissions", stats["obs"], fit.emissionprob_),
    ):
        pooled = np.zeros_like(counts)
        np.add.at(pooled, lab[kind], counts)
        pooled = pooled[lab[kind]]
        seen = pooled.sum(1) > 0
        _close(got[seen], pooled[seen] / pooled[seen].sum(1, keepdims=True), 1e-9, kind)


# ------------------------------------------------------ lengths: exact or refused
@settings(max_examples=60, **SETTINGS)
@given(
    values=st.lists(
        st.one_of(st.integers(-3, 40), st.sampled_from([2**62, 2**63 - 1, 2**61 + 3])),
        min_size=1,
        max_size=6,
    ),
    dtype=st.sampled_from(["int64", "uint64", "float64", "float32", "list"]),
    special=st.sampled_from([None, np.inf, -np.inf, np.nan, 1e30]),
    n=st.integers(1, 60),
)
def test_lengths_are_an_exact_partition_or_refused_by_name(values, dtype, special, n):
    """Accepted lengths are the given integers and their exact (Python) sum is n;
    anything else is a ValueError/TypeError that names lengths, without a NumPy warning.
    Before stop 37 four lengths of 2**62 (+5) wrapped to a sum of 5 and were accepted."""
    if dtype == "list":
        lengths = list(values)
    elif dtype == "uint64":
        lengths = np.array([v % 2**64 for v in values], dtype=np.uint64)
    else:
        lengths = np.array(values, dtype=np.float64 if dtype.startswith("float") else dtype)
        lengths = lengths.astype(dtype)
    if special is not None and dtype in ("float64", "float32", "list"):
        lengths = np.append(np.asarray(lengths, dtype=np.float64), special)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's cast warning is a defect too
        try:
            got = check_lengths(lengths, n)
        except (TypeError, ValueError) as err:
            assert "lengths" in str(err)
            return
    exact = [int(v) for v in np.asarray(lengths).tolist()]
    assert got.tolist() == exact and sum(exact) == n and min(exact) >= 1


def test_wrapping_lengths_are_refused_before_any_kernel_runs():
    m = GaussianHMM.from_params(
        [0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]], [[0.0], [2.0]], [[1.0], [1.0]]
    )
    X = np.arange(5.0)[:, None]
    for lengths in ([2**62, 2**62, 2**62, 2**62 + 5], [3, 2**63 - 1, 2**63 - 1, 4]):
        for method in (m.score, m.predict, m.predict_proba, GaussianHMM(2, n_iter=1).fit):
            with pytest.raises(ValueError, match=r"lengths sum to \d{19,} but X has 5 rows"):
                method(X, lengths)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, 1e30, 2.0**63])
def test_float_lengths_that_do_not_cast_are_refused_by_name(bad):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"lengths\[1\] = .* is not a sequence length"):
            check_lengths([2.0, bad], 5)


# ------------------------------- the public recursions: shapes fit, or refused
@settings(max_examples=40, **SETTINGS)
@given(
    K=st.integers(1, 4),
    K_start=st.integers(1, 4),
    K_emission=st.integers(1, 4),
    lengths=lengths_st,
    row_delta=st.sampled_from([0, 0, 0, -1, 1, 5]),
    seed=st.integers(0, 2**16),
)
def test_recursions_equal_a_plain_forward_backward_or_refuse_mismatched_shapes(
    K, K_start, K_emission, lengths, row_delta, seed
):
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(K_start))
    A = rng.dirichlet(np.ones(K), size=K)
    n = int(np.sum(lengths))
    log_b = rng.normal(size=(max(n + row_delta, 1), K_emission))
    batch = SequenceBatch.from_lengths(lengths)
    fits = K_start == K == K_emission and len(log_b) == n
    for who, call in (
        ("forward_log_likelihood", forward_log_likelihood),
        ("forward_backward", forward_backward),
        ("viterbi", viterbi),
    ):
        if not fits:
            with pytest.raises(ValueError, match=rf"{who}: (startprob|log_emission) has shape"):
                call(start, A, log_b, batch)
            continue
        got = call(start, A, log_b, batch)
        if who == "viterbi":
            continue  # its paths are checked against brute force in test_viterbi.py
        ends = np.cumsum(lengths)
        refs = [
            reference_forward_backward(start, A, log_b[e - t : e]) for t, e in zip(lengths, ends)
        ]
        ll = got if who == "forward_log_likelihood" else got.log_likelihood
        _close(ll, [r[0] for r in refs], 1e-12, who)
        if who == "forward_backward":
            _close(got.gamma, np.concatenate([r[1] for r in refs]), 1e-12, "gamma")
            _close(got.xi_sum, sum(r[2] for r in refs), 1e-12, "xi_sum")


def test_a_batch_with_a_non_positive_length_is_refused_by_the_recursions():
    batch = SequenceBatch(np.array([5, -2]))  # built without from_lengths' checks
    with pytest.raises(ValueError, match=r"forward_backward: the batch's lengths must be positive"):
        forward_backward(np.ones(1), np.ones((1, 1)), np.zeros((3, 1)), batch)
