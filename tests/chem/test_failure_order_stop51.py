"""The first failure (lowest index) and the skipped molecules of ``assign_many`` do not
depend on ``n_jobs`` or on which process labelled the chunk (stop 51's guard, kept when
the parent-labels-too design was tried and not shipped: docs/chem-performance.md)."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import SmilesError, SmirksAssigner  # noqa: E402
from tying.chem.generate import drug_like_smiles  # noqa: E402

MOLECULES = drug_like_smiles(48)


@pytest.fixture(scope="module")
def sage():
    return SmirksAssigner("openff-2.3.0")


def _state(assigner, out):
    return (
        [{s: a.ids(s) for s in a.terms} for a in out],
        [(a.name, a.smiles) for a in out],
        (assigner.hits, assigner.misses),
        sorted(assigner._by_canonical),
        sorted(assigner._by_text),
    )


def test_the_lowest_failing_index_wins_whoever_labels_it(sage):
    bad = list(MOLECULES)
    bad[1], bad[-2] = "C1CC", ("[CH3]", "methyl")  # the first chunk and the last
    for n_jobs in (1, 2):
        sage.clear_cache()
        with pytest.raises(SmilesError, match=r"molecule 1 \('C1CC'\): cannot parse SMILES"):
            sage.assign_many(bad, n_jobs=n_jobs, chunksize=4)
    assert (sage.hits, sage.misses) == (0, 0)  # over processes a failing call counts nothing
    sage.clear_cache()
    with pytest.raises(SmilesError, match=r"molecule 46 \('\[CH3\]', 'methyl'\): .* radical"):
        sage.assign_many([*MOLECULES[:46], bad[-2]], n_jobs=2, chunksize=4)
    skipped = {}
    for n_jobs in (1, 2):
        sage.clear_cache()
        with pytest.warns(UserWarning, match="2 of 48"):
            out = sage.assign_many(bad, n_jobs=n_jobs, chunksize=4, errors="skip")
        skipped[n_jobs] = (_state(sage, [a for a in out if a is not None]), sorted(out.skipped))
    assert skipped[2] == skipped[1] and skipped[1][1] == [1, 46]
