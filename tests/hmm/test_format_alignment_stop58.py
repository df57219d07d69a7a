"""format_alignment keeps every symbol over the one it is aligned with.

Before stop 58 integer symbols were joined as their numbers: symbol 11 took two
characters, so [0, 11, 3] over [0, 3] printed "0113" over "0-3" (3 over the gap, the
gap under a 1 that is no symbol), and an alphabet model given integer symbols printed
their indices instead of its letters.
"""

from __future__ import annotations

import numpy as np

from tying.hmm import PairHMM
from tying.hmm.pair_dp import X, Y


def _columns(text: str) -> list[tuple[str, str]]:
    top, bottom = text.split("\n")
    return list(zip(top.split(), bottom.split()))


def test_multi_digit_symbols_keep_their_columns_and_follow_the_viterbi_path():
    m = PairHMM.from_params(n_symbols=12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 12, rng.integers(1, 7)).tolist()
        y = rng.integers(0, 12, rng.integers(1, 7)).tolist()
        text = m.format_alignment(x, y)
        _, (path,) = m.viterbi([(x, y)])
        cols, i, j = [], 0, 0
        for k in path:  # the columns the path gives
            cols.append((str(x[i]) if k != Y else "-", str(y[j]) if k != X else "-"))
            i, j = i + (k != Y), j + (k != X)
        if any(max(len(a), len(b)) > 1 for a, b in cols):
            assert _columns(text) == cols
            top, bottom = text.split("\n")
            assert len(top) == len(bottom)  # every column padded to one width
        else:
            assert text == "".join(a for a, _ in cols) + "\n" + "".join(b for _, b in cols)
    assert m.format_alignment([0, 11, 3], [0, 3]) == "0 11 3\n0  - 3"


def test_one_character_symbols_stay_side_by_side_and_codes_print_as_letters():
    assert PairHMM.from_params(n_symbols=10).format_alignment([0, 1, 3], [0, 3]) == "013\n0-3"
    m = PairHMM.from_params("AC")
    assert m.format_alignment(np.array([0, 1]), "AC") == "AC\nAC"
    assert m.format_alignment("ACCA", [1, 0]) == m.format_alignment("ACCA", "CA")
