"""Stop 34: convergence, sampling and the other emissions, against hmmlearn.

Each test is a wrong result the review found, and failed on the code before its fix
(the guards at the end pin what must keep working).
"""

from __future__ import annotations

import numpy as np

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM
from tying.hmm.draws import last_possible

#: probabilities given to 9 digits, as validation accepts them (sum 1 - 1e-9)
THIRD = 0.333333333


class _InTheGap(np.random.Generator):
    """A generator whose uniforms all fall in [sum of a rounded row, 1)."""

    def random(self, size=None, dtype=np.float64, out=None):
        return np.full(size, 1 - 5e-10)


def _gap_rng():
    return _InTheGap(np.random.PCG64(0))


# ------------------------------------- sample: a u past a row's rounded sum
def test_sample_never_moves_to_a_state_of_transition_probability_0():
    # was: states [0, 3, 3]: a left-right model jumped from state 0 to its final state,
    # whose transition probability from 0 is 0 (the fallback was the last state, K - 1)
    A = [[THIRD, THIRD, THIRD, 0.0], [0, 0.5, 0.5, 0], [0, 0, 0.5, 0.5], [0, 0, 0, 1.0]]
    m = GaussianHMM.from_params([1.0, 0, 0, 0], A, [[0.0], [1.0], [2.0], [3.0]], np.ones((4, 1)))
    _, states = m.sample(3, random_state=_gap_rng())
    assert states.tolist() == [0, 2, 3]
    assert all(np.array(A)[a, b] > 0 for a, b in zip(states[:-1], states[1:]))


def test_sample_never_starts_in_a_state_of_start_probability_0():
    start = [THIRD, THIRD, THIRD, 0.0]
    m = GaussianHMM.from_params(start, np.full((4, 4), 0.25), np.zeros((4, 1)), np.ones((4, 1)))
    assert m.sample(1, random_state=_gap_rng())[1].tolist() == [2]


def test_sample_never_emits_a_symbol_of_probability_0():
    # was: symbols [3, 3, 3], which state 0 emits with probability 0
    E = [[THIRD, THIRD, THIRD, 0.0], [0.25, 0.25, 0.25, 0.25]]
    m = CategoricalHMM.from_params([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], E)
    X, _ = m.sample(3, random_state=_gap_rng())
    assert X.ravel().tolist() == [2, 2, 2]


def test_sample_never_draws_a_mixture_component_of_weight_0():
    # components far apart with tiny variances: the sample says which one was drawn
    w = [[THIRD, THIRD, THIRD, 0.0]]
    means = np.array([[[0.0], [10.0], [20.0], [1000.0]]])
    m = GMMHMM.from_params([1.0], [[1.0]], w, means, np.full((1, 4, 1), 1e-6))
    X, _ = m.sample(4, random_state=_gap_rng())
    assert np.abs(X - 20.0).max() < 0.1  # was: 1000, the component of weight 0


def test_last_possible_is_the_last_positive_entry_of_each_row():
    assert last_possible([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]]).tolist() == [1, 1, 2]
    assert last_possible([0.0, 1.0]).tolist() == 1


# ------------------------------------------ float16 symbols: no RuntimeWarning
def test_float16_symbols_score_without_an_overflow_warning():
    # was: "RuntimeWarning: overflow encountered in cast" (2**63 compared as float16),
    # an error under -W error; the numbers were right
    m = CategoricalHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.1, 0.9]])
    X = np.array([[0], [1], [1]])
    assert m.score(X.astype(np.float16)) == m.score(X)


# ---------------------------------------------------------------- guards
def test_sample_draws_outside_the_gap_are_unchanged():
    # the cap only binds past a row's sum; a seeded sample repeats the same draws
    rng = np.random.default_rng(3)
    A = rng.dirichlet(np.ones(3), 3)
    E = rng.dirichlet(np.ones(4), 3)
    m = CategoricalHMM.from_params(np.full(3, 1 / 3), A, E)
    X, Z = m.sample(5000, random_state=7)
    cdf_a, cdf_e = np.cumsum(A, axis=1), np.cumsum(E, axis=1)
    u = np.random.default_rng(7).random(5000)  # the draws of the states, in order
    assert Z[0] == np.searchsorted(np.cumsum(np.full(3, 1 / 3)), u[0], side="right")
    assert (
        Z[1:] == [np.searchsorted(cdf_a[a], x, side="right") for a, x in zip(Z[:-1], u[1:])]
    ).all()
    assert ((X[:, 0] < 4) & (cdf_e[Z, X[:, 0]] > 0)).all()


def test_currstate_is_the_first_samples_state_and_drop_first_continues_the_chain():
    # hmmlearn's meaning: the first sample is drawn in currstate (not one step after it)
    m = GaussianHMM.from_params(
        [1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]], [[0.0], [5.0]], [[1.0], [1.0]]
    )
    _, Z = m.sample(3, random_state=0)
    assert Z.tolist() == [0, 1, 0]
    _, again = m.sample(3, currstate=Z[-1], random_state=1)
    assert again.tolist() == [0, 1, 0]  # Z[-1] repeated: not a continuation
    _, nxt = m.sample(4, currstate=Z[-1], random_state=1)
    assert np.concatenate([Z, nxt[1:]]).tolist() == [0, 1, 0, 1, 0, 1]
