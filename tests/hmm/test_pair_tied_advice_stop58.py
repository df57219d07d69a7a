"""Stop 58: a PairHMM with tied=True (the default) given the untied form of a gap
probability (an (x, y) pair) or of the insert distribution ((2, n_symbols)) says that
form is for tied=False (it said only 'must be a probability' / the expected shape)."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import PairHMM

PAIRS = [("ACGTAC", "ACGAC"), ("GGTAC", "GGTTAC"), ("ACCA", "ACA")]
INSERT = [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"delta": (0.1, 0.2)},
            r"delta must be a probability, got \(0.1, 0.2\) \(an \(x, y\) pair is for tied=False\)",
        ),
        (
            {"epsilon": [0.3, 0.4]},
            r"epsilon must be a probability, got \[0.3, 0.4\] \(an \(x, y\) pair is for tied",
        ),
        ({"insert_probs": INSERT}, r"got \(2, 4\) \(\(2, n_symbols\) is for tied=False\)"),
    ],
)
def test_the_untied_form_under_tied_names_tied_false_and_that_fits(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairHMM("ACGT", n_iter=2, tol=-np.inf, **kwargs).fit(PAIRS)
    fitted = PairHMM("ACGT", tied=False, n_iter=2, tol=-np.inf, **kwargs).fit(PAIRS)
    assert np.shape(fitted.delta_) == (2,)


def test_other_wrong_forms_keep_their_plain_message():
    with pytest.raises(ValueError, match=r"delta must be a probability, got \(0.1, 0.2, 0.3\)$"):
        PairHMM("ACGT", delta=(0.1, 0.2, 0.3)).fit(PAIRS)
    bad = np.full((2, 4, 4), 1 / 32)
    with pytest.raises(ValueError, match=r"got \(2, 4, 4\)$"):
        PairHMM("ACGT", match_probs=bad).fit(PAIRS)
