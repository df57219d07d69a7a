"""A PairHMM's alphabet refusals name a fix that works when followed (stop 62).

Tables set for "ACGT" on a model whose alphabet became "acgt" (or "ACGU") were told to
reindex with ``idx = ['ACGT'.index(c) for c in 'acgt']``, which raises "substring not
found"; an alphabet given as a list of letters was told only "must be a non-empty
string".
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import PairHMM

PAIR = ("GATTACA", "GATACA")


def _model():
    p = np.arange(1.0, 17.0).reshape(4, 4)
    p = (p + p.T) / (p + p.T).sum()
    return PairHMM.from_params(
        "ACGT", delta=0.05, epsilon=0.3, tau=0.01, match_probs=p, insert_probs=[0.1, 0.2, 0.3, 0.4]
    )


@pytest.mark.parametrize("renamed", ["acgt", "ACGU"])
def test_a_renamed_alphabet_is_told_to_keep_the_tables_and_that_works(renamed):
    m = _model()
    want = m.score_pairs([PAIR])[0]
    m.set_params(alphabet=renamed)
    pair = tuple(s.translate(str.maketrans("ACGT", renamed)) for s in PAIR)
    with pytest.raises(
        ValueError,
        match=r"assign the tables again as they are: m\.match_probs_ = m\.match_probs_; m\.insert_probs_ = m\.insert_probs_\), or fit$",
    ) as err:
        m.score_pairs([pair])
    assert ".index(c)" not in str(err.value)  # "ACGT".index("a") raised "substring not found"
    m.match_probs_ = m.match_probs_  # the advice, followed
    m.insert_probs_ = m.insert_probs_
    assert m.score_pairs([pair])[0] == want


def test_a_reordered_alphabet_keeps_the_reindexing_recipe_and_it_works():
    m = _model()
    want = m.score_pairs([PAIR])[0]
    p, q = np.asarray(m.match_probs_), np.asarray(m.insert_probs_)
    m.set_params(alphabet="TGCA")
    with pytest.raises(ValueError, match=r"idx = \['ACGT'\.index\(c\) for c in 'TGCA'\]"):
        m.score_pairs([PAIR])
    idx = ["ACGT".index(c) for c in "TGCA"]
    m.match_probs_ = p[np.ix_(idx, idx)]
    m.insert_probs_ = q[..., idx]
    assert m.score_pairs([PAIR])[0] == want


def test_an_alphabet_given_as_a_list_of_letters_names_the_join_that_works():
    with pytest.raises(
        ValueError,
        match=r"got \['A', 'C', 'G', 'T'\]; join one-letter symbols: alphabet=''\.join\(\['A', 'C', 'G', 'T'\]\) \(= 'ACGT'\)$",
    ):
        PairHMM(list("ACGT")).fit([PAIR])
    assert PairHMM.from_params("".join(list("ACGT"))).score_pairs([PAIR]).shape == (1,)


def test_an_alphabet_of_names_is_told_to_code_them_as_integers_and_that_works():
    names = ["Ala", "Gly", "Ser"]
    with pytest.raises(
        ValueError, match=r"\(here 'Ala'\) are coded as integers: alphabet=None, n_symbols=3"
    ):
        PairHMM.from_params(names)
    x, y = ["Ala", "Gly", "Gly"], ["Gly", "Ser"]
    m = PairHMM.from_params(None, n_symbols=3)
    got = m.score_pairs([([names.index(s) for s in x], [names.index(s) for s in y])])[0]
    assert got == PairHMM.from_params("AGS").score_pairs([("AGG", "GS")])[0]


def test_an_alphabet_given_as_an_array_of_letters_is_named_with_the_join_too():
    with pytest.raises(
        ValueError, match=r"join one-letter symbols: alphabet=''\.join\(\['A', 'C'\]\) \(= 'AC'\)$"
    ):
        PairHMM.from_params(np.array(["A", "C"]))
    m = PairHMM.from_params("AC")
    with pytest.raises(ValueError, match=r"join one-letter symbols"):
        m.set_params(alphabet=["A", "C"])
    assert m.alphabet == "AC"  # refused before anything changed
