"""Raw identifiers as CategoricalHMM symbols are refused before their table is made.

``CategoricalHMM(2).fit([[0], [1], [2**40], [1]])`` read an alphabet of 2**40 + 1
symbols from X's largest value and died in NumPy ("Unable to allocate 8.00 TiB"),
naming neither the symbol nor the fix; a fitted model refusing such an X advised "fit
again with n_symbols=1099511627777", which fails the same way (stop 60). Both now name
the recoding, and following it fits.
"""

import numpy as np
import pytest

from tying.hmm import CategoricalHMM
from tying.hmm.symbol_table import memory_bytes, table_fits

IDS = np.array([[7], [2**40], [7], [2**40], [7], [123456789012]])


def test_an_alphabet_no_table_could_hold_is_refused_naming_the_recoding():
    m = CategoricalHMM(2, n_iter=3, tol=-np.inf, random_state=0)
    with pytest.raises(
        ValueError, match=r"largest symbol is 1099511627776 at sequence 1, position 0, row 1 of X"
    ):
        m.fit(IDS, [1, 5])
    assert "n_symbols_" not in vars(m)  # nothing set by the refused fit
    with pytest.raises(ValueError, match=r"X holds 3 distinct symbols: code them as 0..2 first"):
        m.fit(IDS)
    labels, codes = np.unique(IDS, return_inverse=True)  # the advice, followed
    m.fit(codes)
    assert m.n_symbols_ == 3
    assert np.isfinite(m.score(np.searchsorted(labels, IDS)))


def test_a_fitted_model_does_not_advise_an_alphabet_no_table_could_hold():
    m = CategoricalHMM(2, n_iter=2, tol=-np.inf, random_state=0).fit([[0], [1], [2], [1]])
    with pytest.raises(ValueError, match=r"recode X: it holds 3 distinct symbols") as err:
        m.score(IDS)
    assert "fit again" not in str(err.value) and "n_symbols=1099511627777" not in str(err.value)
    with pytest.raises(ValueError, match=r"fit again with n_symbols=5"):  # a size that fits
        m.score([[4]])


def test_table_fits_reads_this_machines_memory():
    assert memory_bytes() > 2**20
    assert table_fits(3, 1000) and not table_fits(2, memory_bytes())
