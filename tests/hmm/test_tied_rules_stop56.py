"""covariance_type='tied' with ties written as tying.share / tying.free rules (stop 56).

A tied covariance is one matrix, so means and transitions tied by rule are as well
defined as they are given as a dict; the rules were all refused before ("takes its ties
as a dict"). The fit must equal constrained EM computed by enumerating every state path;
a rule on ``covars.*`` that splits the one covariance contradicts the type and is refused.
"""

import itertools

import numpy as np
import pytest

import tying
from tying.hmm import GaussianHMM

K, D = 3, 2
_rng = np.random.default_rng(1)
SP = np.array([0.5, 0.3, 0.2])
A = _rng.dirichlet(np.ones(K), size=K)
MU = _rng.normal(size=(K, D)) * 2
MU[1] = MU[0]  # states 0 and 1 tied
S = np.array([[1.0, 0.3], [0.3, 0.8]])
X = _rng.normal(size=(8, D)) * 1.5
L = [3, 5]
KW = dict(n_iter=1, tol=-np.inf, init_params="", means_weight=0.0, covars_prior=0.0)


def _brute_em(groups):
    """One EM step from SP, A, MU, S by enumerating every state path of each sequence."""
    P = np.linalg.inv(S)
    norm = 1.0 / (2 * np.pi * np.sqrt(np.linalg.det(S)))
    gammas, start, xi, r = [], np.zeros(K), np.zeros((K, K)), 0
    for n in L:
        x = X[r : r + n]
        r += n
        d = x[:, None, :] - MU[None]  # (n, K, D)
        b = norm * np.exp(-0.5 * np.einsum("tki,ij,tkj->tk", d, P, d))
        paths = list(itertools.product(range(K), repeat=n))
        w = np.array(
            [
                SP[p[0]]
                * b[0, p[0]]
                * np.prod([A[p[t - 1], p[t]] * b[t, p[t]] for t in range(1, n)])
                for p in paths
            ]
        )
        w /= w.sum()
        g = np.zeros((n, K))
        for p, wp in zip(paths, w):
            g[np.arange(n), list(p)] += wp
            start[p[0]] += wp
            for t in range(1, n):
                xi[p[t - 1], p[t]] += wp
        gammas.append(g)
    G = np.vstack(gammas)
    mu = np.zeros((K, D))
    for grp in groups:
        mu[grp] = G[:, grp].sum(1) @ X / G[:, grp].sum()
    C = sum(G[t, k] * np.outer(X[t] - mu[k], X[t] - mu[k]) for t in range(len(X)) for k in range(K))
    return start / start.sum(), xi / xi.sum(1, keepdims=True), mu, C / G.sum()


def _fit(ties):
    m = GaussianHMM(K, "tied", ties=ties, **KW)
    m.startprob_, m.transmat_, m.means_, m.covars_ = SP, A, MU, S
    return m.fit(X, L)


@pytest.mark.parametrize(
    "rules",
    [
        [tying.share("means.1", like="means.0")],
        # a rule that ties every covariance says what the type does: accepted
        [tying.share("means.1", like="means.0"), tying.share("covars.*", like="covars.0")],
    ],
)
def test_rules_fit_a_tied_model_as_brute_force_constrained_em(rules):
    m = _fit(rules)
    assert m.ties_.groups("means") == [[0, 1], [2]]
    assert m.ties_.groups("covars") == [[0, 1, 2]]
    sp, a, mu, c = _brute_em([[0, 1], [2]])
    np.testing.assert_allclose(m.startprob_, sp, atol=1e-13)
    np.testing.assert_allclose(m.transmat_, a, atol=1e-13)
    np.testing.assert_allclose(m.means_, mu, atol=1e-13)
    np.testing.assert_allclose(m.covars_, np.broadcast_to(c, (K, D, D)), atol=1e-13)
    as_dict = _fit({"means": [[0, 1]]})
    assert np.array_equal(m.means_, as_dict.means_)
    assert np.array_equal(m.covars_, as_dict.covars_)
    # 2 start + 3·2 transitions + 2 mean groups · 2 + one covariance D(D+1)/2 = 3
    assert m.n_free_parameters() == 2 + 6 + 4 + 3


@pytest.mark.parametrize(
    "rules, named",
    [
        (
            [tying.free("covars.1")],
            r"rule 0 \(free 'covars.1'\) leave covars grouped as \[\[0\], \[1\], \[2\]\]",
        ),
        (
            [tying.share("covars.*", like="covars.0"), tying.free("covars.2")],
            r"rule 0 \(share 'covars.\*'\), rule 1 \(free 'covars.2'\) leave covars grouped",
        ),
    ],
)
def test_rules_that_split_the_one_covariance_are_refused_by_index(rules, named):
    m = GaussianHMM(K, "tied", **KW)
    with pytest.raises(ValueError, match=r"covariance_type='tied' shares one covariance.*" + named):
        m.set_params(ties=rules)
    assert m.ties is None  # set_params changed nothing
    m.ties = rules
    with pytest.raises(ValueError, match=r"use covariance_type='full' with those covariance"):
        m.fit(X, L)
    assert not hasattr(m, "means_")


@pytest.mark.parametrize("groups", [[[0, 1, 2]], np.array([[2, 0, 1]])])
def test_a_dict_grouping_every_covariance_in_one_fits_as_the_type_alone(groups):
    # the rules form of one covariance group was accepted at stop 56, the dict form
    # refused as a contradiction of the type it states
    Y = np.random.default_rng(3).normal(size=(80, 2))
    a = GaussianHMM(3, "tied", n_iter=3, tol=-np.inf, random_state=0, ties={"covars": groups})
    b = GaussianHMM(3, "tied", n_iter=3, tol=-np.inf, random_state=0)
    a.fit(Y)
    b.fit(Y)
    np.testing.assert_array_equal(a.covars_, b.covars_)
    np.testing.assert_array_equal(a.means_, b.means_)
