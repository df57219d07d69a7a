"""Generated drug-like molecules: one list per (n, seed), and bad arguments refused."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")

from tying.chem.generate import drug_like_smiles  # noqa: E402


def test_the_same_n_and_seed_give_the_same_list():
    assert drug_like_smiles(4, seed=1) == drug_like_smiles(4, seed=1)
    assert drug_like_smiles(4, seed=np.int64(1)) == drug_like_smiles(4, seed=1)
    assert drug_like_smiles(4, seed=1) != drug_like_smiles(4, seed=2)


@pytest.mark.parametrize(
    "seed",
    [None, True, 1.0, "1", [1, 2], np.random.default_rng(0)],
    # a Generator's repr holds its address: ids must not differ between processes
    ids=lambda s: type(s).__name__ if isinstance(s, np.random.Generator) else repr(s),
)
def test_a_seed_that_is_not_an_int_is_refused(seed):
    # NumPy took None as fresh entropy: another list on every call (a benchmark that
    # could not be re-run), True as 1 and a Generator as itself, without a word.
    with pytest.raises(TypeError, match=r"seed must be an int \(the same \(n, seed\) gives the "
                       r"same list\), got \w+: .*; pass e.g. seed=0"):  # fmt: skip
        drug_like_smiles(3, seed=seed)


def test_a_negative_seed_is_refused():
    with pytest.raises(ValueError, match=r"seed must be 0 or above, got -1; pass e.g. seed=0"):
        drug_like_smiles(3, seed=-1)


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_n_must_be_a_positive_int(n):
    with pytest.raises(ValueError, match=r"n must be a positive int, got"):
        drug_like_smiles(n)
