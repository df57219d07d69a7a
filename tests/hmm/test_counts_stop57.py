"""GMMHMM's free-parameter count (aic/bic) against hmmlearn's and by hand (stop 57).

hmmlearn's ``_get_n_fit_scalars_per_param`` counts ``n_mix - 1`` mixture weights for
the whole model; every other entry must equal ours on an untied model. Ours counts
the weights per state (each tie group once): docs/hmm.md, Where we differ by design.
"""

import numpy as np
import pytest

from tying.hmm import GMMHMM


def _gmm(K, M, D, covariance_type, ties=None):
    rng = np.random.default_rng(K * 100 + M * 10 + D)
    full = covariance_type == "full"
    covars = np.broadcast_to(np.eye(D), (K, M, D, D)) if full else np.ones((K, M, D))
    return GMMHMM.from_params(
        np.full(K, 1 / K), np.full((K, K), 1 / K), np.full((K, M), 1 / M),
        np.broadcast_to(rng.normal(size=(M, D)), (K, M, D)), covars,
        covariance_type=covariance_type, ties=ties,
    )  # fmt: skip


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
@pytest.mark.parametrize(("K", "M", "D"), [(2, 3, 1), (3, 2, 3), (4, 1, 2)])
def test_untied_count_is_hmmlearns_with_weights_per_state(K, M, D, covariance_type):
    hmm = pytest.importorskip("hmmlearn.hmm")
    ref = hmm.GMMHMM(K, n_mix=M, covariance_type=covariance_type)
    ref.n_features = D
    theirs = ref._get_n_fit_scalars_per_param()
    m = _gmm(K, M, D, covariance_type)
    ours = m._free_per_param()
    names = {"s": "startprob", "t": "transmat", "m": "means", "c": "covars"}
    assert {names[k]: theirs[k] for k in names} == {v: ours[v] for v in names.values()}
    assert theirs["w"] == M - 1 and ours["weights"] == K * (M - 1)
    assert m.n_free_parameters() == sum(theirs.values()) + (K - 1) * (M - 1)
    X = np.random.default_rng(0).normal(size=(7, D))
    assert m.aic(X) == pytest.approx(-2 * m.score(X) + 2 * m.n_free_parameters(), rel=1e-15)


@pytest.mark.parametrize(
    ("ties", "groups"),  # groups: (transitions, weights, means, covars) tie groups of K=4
    [
        ({"means": "all"}, (4, 4, 1, 4)),
        ({"means": "all", "covars": "all"}, (4, 4, 1, 1)),
        ({"weights": [[0, 1], [2, 3]]}, (4, 2, 4, 4)),
        ({"transitions": [[0, 1]], "covars": [[1, 2, 3]]}, (3, 4, 4, 2)),
    ],
)
@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_tied_count_by_hand(ties, groups, covariance_type):
    K, M, D = 4, 3, 2
    n_t, n_w, n_m, n_c = groups
    per_cov = M * D * (D + 1) // 2 if covariance_type == "full" else M * D
    want = (K - 1) + n_t * (K - 1) + n_w * (M - 1) + n_m * M * D + n_c * per_cov
    assert _gmm(K, M, D, covariance_type, ties).n_free_parameters() == want
