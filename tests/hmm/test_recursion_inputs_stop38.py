"""The public recursions refuse parameters that are not probabilities (stop 38).

``forward_backward``, ``forward_log_likelihood`` and ``viterbi`` read ``startprob`` and
``transmat`` as probabilities. Before stop 38 they took any numbers: a transition row
summing to 0.9, a negative entry or a NaN gave a "log-likelihood" with no error. They
now refuse what hmmlearn's own check refuses (rows summing to 1 within ``np.allclose``),
and negative or non-finite entries, naming the row.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import forward_backward, forward_log_likelihood, viterbi
from tying.hmm.sequences import SequenceBatch

RECURSIONS = {
    "forward_log_likelihood": forward_log_likelihood,
    "forward_backward": forward_backward,
    "viterbi": viterbi,
}
GOOD_START, GOOD_A = np.array([0.6, 0.4]), np.array([[0.7, 0.3], [0.2, 0.8]])


@pytest.mark.parametrize("name", sorted(RECURSIONS))
@pytest.mark.parametrize(
    "start, A, match",
    [
        (GOOD_START, np.array([[0.7, 0.3], [0.2, 0.7]]), r"transmat row 1 sums to 0\.9"),
        (np.array([0.6, 0.6]), GOOD_A, r"startprob sums to 1\.2"),
        (GOOD_START, np.array([[1.2, -0.2], [0.2, 0.8]]), r"transmat row 0 holds -0\.2, below 0"),
        (GOOD_START, np.array([[0.7, 0.3], [np.nan, 1.0]]), r"transmat row 1 holds nan"),
        (np.array([np.inf, 0.0]), GOOD_A, r"startprob holds inf"),
    ],
)
def test_a_parameter_that_is_no_distribution_is_refused_by_row(name, start, A, match):
    batch = SequenceBatch.from_lengths([3, 2])
    with pytest.raises(ValueError, match=rf"{name}: {match}, so it is not a probability"):
        RECURSIONS[name](start, A, np.zeros((5, 2)), batch)


def _brute_log_likelihood(start, A, log_b):
    """log sum over every state path (tiny K and T)."""
    K, T = A.shape[0], log_b.shape[0]
    total = 0.0
    for path in itertools.product(range(K), repeat=T):
        p = start[path[0]] * np.exp(log_b[0, path[0]])
        for t in range(1, T):
            p *= A[path[t - 1], path[t]] * np.exp(log_b[t, path[t]])
        total += p
    return np.log(total)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    K=st.integers(1, 3),
    T=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1.0, 1.0 + 1e-9, 1.0 + 1e-3, 0.5, 2.0]),
    row=st.integers(0, 2),
)
def test_property_accepted_exactly_when_rows_are_distributions(K, T, seed, scale, row):
    """Rows scaled by ``scale``: accepted when hmmlearn's tolerance accepts the sum, and
    then equal to brute-force enumeration; refused otherwise."""
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    A[row % K] *= scale
    log_b = rng.normal(0.0, 1.0, (T, K))
    batch = SequenceBatch.from_lengths([T])
    ok = np.allclose(A.sum(1), 1.0)
    if not ok:
        with pytest.raises(ValueError, match=rf"transmat row {row % K} sums to"):
            forward_log_likelihood(start, A, log_b, batch)
        return
    got = forward_log_likelihood(start, A, log_b, batch)
    np.testing.assert_allclose(got, [_brute_log_likelihood(start, A, log_b)], rtol=1e-5)
