"""Review of stop 61: a sparse prior is named with its conversion (it was named by its
multi-line repr), and a sparse row given for a vector parameter is told the conversion
that gives a vector (S.toarray() gave shape (1, K), refused again)."""

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

from tying.hmm import GaussianHMM  # noqa: E402


@pytest.mark.parametrize("prior", ["transmat_prior", "means_prior", "startprob_prior"])
def test_sparse_prior_named_with_toarray(prior):
    S = sp.csr_matrix(np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"SciPy sparse csr_matrix.*toarray\(\)"):
        GaussianHMM(2, **{prior: S}).fit(np.random.default_rng(0).normal(size=(30, 2)))


def test_sparse_startprob_advice_works_when_followed():
    S = sp.csr_matrix(np.array([[0.5, 0.5]]))
    m = GaussianHMM(2)
    with pytest.raises(TypeError, match=r"S\.toarray\(\)\.ravel\(\)") as err:
        m.startprob_ = S
    assert "ravel" in str(err.value)
    m.startprob_ = S.toarray().ravel()  # the advice, followed
    np.testing.assert_array_equal(m.startprob_, [0.5, 0.5])
