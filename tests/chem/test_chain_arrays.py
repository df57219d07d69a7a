"""tying.chem.chain_arrays: the NumPy word arrays that label many molecules at once."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**63]),
                 min_size=1, max_size=4),
        min_size=1, max_size=6,
    ).filter(lambda rows: len({len(r) for r in rows}) == 1)
)  # fmt: skip
def test_highest_bit_of_words_equals_the_ints_bit_length(rows):
    # label_arrays reads a term's last matching pattern as the highest set bit of its
    # mask words: exactly int.bit_length of the words joined (0 when none is set).
    import numpy as np

    from tying.chem.chain_arrays import _highest

    got = _highest(np.array(rows, dtype=np.uint64)).tolist()
    assert got == [sum(w << (64 * k) for k, w in enumerate(r)).bit_length() for r in rows]
