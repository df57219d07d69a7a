"""lengths given as a generator, set, dict or scalar are named as such (stop 57).

They were refused as "got shape ()", which named neither what was given nor the fix
(a set's order is not the sequences' order, so it is refused, not read).
"""

import numpy as np
import pytest

from tying.hmm import GaussianHMM, check_lengths

M = GaussianHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.0], [2.0]], [[1.0], [1.0]])
X = np.linspace(-1, 3, 5).reshape(-1, 1)


@pytest.mark.parametrize(
    ("lengths", "kind"),
    [((n for n in [3, 2]), "generator"), ({3, 2}, "set"), ({3: 0, 2: 1}, "dict")],
)
def test_non_sequences_are_named(lengths, kind):
    with pytest.raises(
        TypeError, match=rf"lengths must be a list or 1-d array .*got a {kind}; pass a list"
    ):
        M.score(X, lengths)


def test_a_scalar_is_named_with_the_one_sequence_fix():
    with pytest.raises(ValueError, match=r"got the scalar 5; for one sequence pass lengths=None"):
        check_lengths(5, 5)
    assert M.score(X, [5]) == M.score(X)
