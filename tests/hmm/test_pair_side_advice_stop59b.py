"""Stop 59 (second pass): a pair side that is not a sequence of symbols is named with
the conversion that works (it was "expected a 1-d integer sequence" for all of them,
also for ``list("GA")`` on a model with ``alphabet="ACGT"``)."""

import numpy as np
import pytest

from tying.hmm import PairHMM


@pytest.fixture(scope="module")
def dna():
    return PairHMM.from_params("ACGT")


@pytest.mark.parametrize("x", [list("GA"), np.array(list("GA")), ("G", "A")])
def test_a_list_of_letters_is_told_to_join_and_the_join_works(dna, x):
    with pytest.raises(ValueError, match=r"pair 0, x: .*sequence of strings; .*''\.join\(x\)"):
        dna.score_pairs([(x, "A")])
    assert dna.score_pairs([("".join(x), "A")])[0] == dna.score_pairs([("GA", "A")])[0]


def test_bytes_are_told_to_decode_and_the_decode_works(dna):
    y = b"GA"
    with pytest.raises(ValueError, match=r"pair 1, y: .*got bytes b'GA'; decode it: y\.decode"):
        dna.viterbi([("G", "G"), ("GA", y)])
    assert dna.score_pairs([("GA", y.decode())])[0] == pytest.approx(
        dna.score_pairs([("GA", "GA")])[0], rel=0
    )


def test_integer_models_name_the_cast_and_the_shape():
    m = PairHMM.from_params(n_symbols=3)
    with pytest.raises(ValueError, match=r"got dtype float64; .*np\.asarray\(x\)\.astype\(int\)"):
        m.score_pairs([([0.0, 2.0], [1])])
    assert m.score_pairs([(np.asarray([0.0, 2.0]).astype(int), [1])])[0] == pytest.approx(
        m.score_pairs([([0, 2], [1])])[0], rel=0
    )
    with pytest.raises(ValueError, match=r"got shape \(1, 2\).*np\.ravel\(y\)"):
        m.score_pairs([([0], np.array([[0, 2]]))])
    with pytest.raises(ValueError, match=r"integer symbols: give alphabet="):
        m.score_pairs([(list("AB"), [1])])


def test_non_whole_floats_and_mixed_lists_get_no_advice_that_fails(dna):
    m = PairHMM.from_params(n_symbols=3)
    with pytest.raises(ValueError, match=r"got dtype float64$"):
        m.score_pairs([([0.5], [1])])
    with pytest.raises(ValueError, match=r"got dtype <U21$"):  # "".join(["A", 3]) fails
        dna.score_pairs([(["A", 3], "A")])
