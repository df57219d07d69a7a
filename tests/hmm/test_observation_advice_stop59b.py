"""Stop 59 (second pass): advice on a wrongly laid out or non-finite X works when followed.

A CategoricalHMM given a list of equal-length symbol sequences (NumPy stacks it to
``(n_seqs, T)``) was told only "one symbol per row", with no way out; the Gaussian
models already named the concatenation. A NaN in X passed to ``score`` was told to
remove it "before fitting".
"""

import numpy as np
import pytest

from tying.hmm import CategoricalHMM, GaussianHMM


def _categorical():
    return CategoricalHMM.from_params(
        startprob=[0.5, 0.5],
        transmat=[[0.9, 0.1], [0.1, 0.9]],
        emissionprob=[[0.5, 0.4, 0.1], [0.1, 0.4, 0.5]],
    )


def test_equal_length_symbol_sequences_name_the_concatenation_that_works():
    m = _categorical()
    seqs = [np.array([0, 1, 2]), np.array([1, 2, 0])]
    with pytest.raises(ValueError, match=r"got shape \(2, 3\); for several sequences, concat"):
        m.score(seqs)
    # the advice, followed, scores the two sequences separately
    got = m.score(np.concatenate(seqs), lengths=[len(s) for s in seqs])
    assert got == pytest.approx(m.score(seqs[0]) + m.score(seqs[1]), rel=1e-12)
    # and the same for column sequences, which stack to 3-d
    cols = [s.reshape(-1, 1) for s in seqs]
    with pytest.raises(ValueError, match=r"np.concatenate\(seqs\), lengths="):
        CategoricalHMM(n_components=2, n_iter=1, random_state=0).fit(cols)
    assert m.score(np.concatenate(cols), lengths=[3, 3]) == pytest.approx(got, rel=1e-12)


def test_one_symbol_sequence_given_as_a_row_names_reshape():
    m = _categorical()
    row = np.array([[0, 1, 2, 2]])
    with pytest.raises(ValueError, match=r"as a row, X.reshape\(-1, 1\)"):
        m.predict(row)
    assert m.predict(row.reshape(-1, 1)).tolist() == m.predict(row.ravel()).tolist()


@pytest.mark.parametrize("method", ["score", "predict", "predict_proba"])
def test_non_finite_x_outside_fit_is_not_told_about_fitting(method):
    g = GaussianHMM.from_params(
        [0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]], [[0.0], [3.0]], [[1.0], [1.0]]
    )
    with pytest.raises(
        ValueError, match=r"row 1 of X\); remove or impute non-finite values first$"
    ):
        getattr(g, method)(np.array([[0.0], [np.nan]]))


def test_symbol_labels_are_told_to_code_them_and_the_codes_score():
    """Text labels ("H", "T") were told np.asarray(X, dtype=float), which raises."""
    m = _categorical()
    X = np.array([["H"], ["T"], ["H"], ["X"]], dtype=object)
    with pytest.raises(ValueError, match=r"X\[0\] = 'H' is not a number: .*np\.unique\(X, retu"):
        m.score(X)
    with pytest.raises(ValueError, match="could not convert"):  # the old advice, followed
        np.asarray(X, dtype=float)
    labels, codes = np.unique(X.astype(str), return_inverse=True)  # the new one
    assert m.score(codes) == pytest.approx(m.score([0, 1, 0, 2]), rel=1e-12)
    new = np.searchsorted(labels, np.array(["T", "X"]))
    assert m.score(new) == pytest.approx(m.score([1, 2]), rel=1e-12)


def test_text_features_name_the_label_and_numeric_text_keeps_the_float_cast():
    g = GaussianHMM.from_params([1.0], [[1.0]], [[0.0, 0.0]], [[1.0, 1.0]])
    with pytest.raises(ValueError, match=r"X\[1\] holds 'n/a', which is not a number"):
        g.score(np.array([["0.5", "1"], ["n/a", "2"]]))
    numeric = np.array([["0.5", "1"], ["0.25", "2"]])
    with pytest.raises(ValueError, match=r"np\.asarray\(X, dtype=float\)"):
        g.score(numeric)
    assert g.score(np.asarray(numeric, dtype=float)) == g.score([[0.5, 1.0], [0.25, 2.0]])
