"""A k-means start over fewer rows than means is refused, as hmmlearn refuses it
(it drew rows with replacement: two states started on one row and EM never separated
them), before anything changes, with fixes that work when followed."""

import numpy as np
import pytest

from tying.hmm import GMMHMM, GaussianHMM
from tying.hmm.kmeans_start import kmeans_centres

X = np.random.default_rng(0).normal(size=(20, 2))
MEANS = np.random.default_rng(1).normal(size=(5, 2))


def test_fewer_rows_than_states_is_refused_naming_the_counts():
    with pytest.raises(
        ValueError,
        match=r"GaussianHMM starts its 5 means \(n_components=5\) from k-means .* X has 3 "
        r"rows \(hmmlearn: n_samples=3 should be >= n_clusters=5\).*Give means_init "
        r"\(shape \(5, 2\)\); or assign m.means_ \(shape \(5, 2\)\) before fit: "
        r"init_params=None keeps it; or fit fewer means \(n_components=3\); or tie means "
        r"into at most 3 groups \(ties=\{'means': \[\[0, 1, 2\]\]\}\)",
    ):
        GaussianHMM(5, random_state=0).fit(X[:3])


@pytest.mark.parametrize(
    "fix",
    [
        lambda: GaussianHMM(5, means_init=MEANS, random_state=0),
        lambda: GaussianHMM(3, random_state=0),
        lambda: GaussianHMM(5, ties={"means": [[0, 1, 2]]}, random_state=0),
        lambda: _assigned(GaussianHMM(5, random_state=0)),
        lambda: _assigned(GaussianHMM(5, init_params="stc", random_state=0)),
        lambda: GaussianHMM(5, ties={"means": [[0, 1], [2, 3, 4]]}, random_state=0),
    ],
    ids=["means_init", "fewer", "tied", "assigned", "init_params", "tied-more"],
)
def test_each_fix_named_fits(fix):
    m = fix().set_params(n_iter=0).fit(X[:3])  # the start values
    assert np.isfinite(m.means_).all()
    n_means = m.ties_.n_groups("means")  # no two mean groups start on one row
    assert len(np.unique(m.means_, axis=0)) == n_means


def _assigned(m):
    m.means_ = MEANS
    return m


def test_hmmlearn_init_params_are_named_without_m():
    m = GaussianHMM(5, init_params="stmc", random_state=0)
    with pytest.raises(ValueError, match=r"set init_params='stc', without means"):
        m.fit(X[:3])
    m2 = GaussianHMM(5, init_params=["startprob", "transmat", "means", "covars"])
    with pytest.raises(ValueError, match=r"init_params=\['startprob', 'transmat', 'covars'\]"):
        m2.fit(X[:3])


def test_tied_means_count_once_and_the_advice_says_so():
    m = GaussianHMM(5, ties={"means": [[0, 1]]}, random_state=0)
    m.fit(X[:4])  # 4 mean groups: enough
    with pytest.raises(
        ValueError,
        match=r"starts its 4 means \(4 groups of tied means\).*X has 2 rows.*"
        r"tied states given one value.*tie means into at most 2 groups$",
    ):
        GaussianHMM(5, ties={"means": [[0, 1]]}, random_state=0).fit(X[:2])


def test_a_refused_fit_changes_nothing():
    rs = np.random.RandomState(3)
    m = GaussianHMM(5, init_params="stmc", random_state=rs, n_iter=2, tol=-np.inf).fit(X)
    before = {k: np.array(getattr(m, k)) for k in ("means_", "covars_", "transmat_")}
    draw = np.random.RandomState(3)
    draw.set_state(rs.get_state())
    with pytest.raises(ValueError, match="n_samples=3 should be >= n_clusters=5"):
        m.fit(X[:3])  # init_params="stmc": k-means starts the means afresh
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(m, k), v)
    assert rs.randint(10**9) == draw.randint(10**9)  # the caller's generator not drawn from


def test_gmmhmm_counts_states_times_components():
    with pytest.raises(
        ValueError,
        match=r"GMMHMM starts its 6 means \(n_components=3 x n_mix=2\).*X has 5 rows.*"
        r"Give means_init \(shape \(3, 2, 2\)\).*fit fewer means \(n_components=2 or "
        r"n_mix=1\); or tie means into at most 2 groups \(ties=\{'means': \[\[0, 1\]\]\}\)",
    ):
        GMMHMM(3, n_mix=2, random_state=0).fit(X[:5])
    GMMHMM(3, n_mix=2, ties={"means": [[0, 1]]}, random_state=0).fit(X[:5])
    GMMHMM(3, n_mix=1, random_state=0).fit(X[:5])
    GMMHMM(3, n_mix=2, means_init=np.zeros((3, 2, 2)) + np.arange(2.0)[:, None]).fit(X[:5])


def test_kmeans_centres_refuses_fewer_rows_than_centres():
    with pytest.raises(ValueError, match="n_samples=3 should be >= n_clusters=5"):
        kmeans_centres(X[:3], 5, np.random.default_rng(0))
    same = np.repeat(X[:2], 3, axis=0)  # enough rows, 2 distinct: random rows, as before
    assert kmeans_centres(same, 5, np.random.default_rng(0)).shape == (5, 2)
