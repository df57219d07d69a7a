"""A molecule never sanitized labels in a worker as in one process (stop 59).

``assign_many(n_jobs=2)`` sends an RDKit molecule pickled (``stale.CheckedMol``). A
molecule never sanitized (``Chem.MolFromSmiles(s, sanitize=False)``) came back with its
never-perceived hydrogen counts as 0, marked perceived, and Kekulize read them: an
aromatic ring came out saturated (``OCc1ccc2ccccc2n1`` labelled as OCC1CCC2CCCCC2N1,
31 atoms instead of 21, ring bonds ``b1`` where one process gives ``b5``/``b2``), or
the molecule was refused as "cannot be kekulized", with no error for the rest: 70 of
120 such molecules (60 shipped, 60 drug-like) labelled differently (60) or were refused
(10) with ``n_jobs=2`` against ``n_jobs=1``; 0 now (checked by hand over two processes; here the
worker's path, a pickled ``CheckedMol`` labelled, without a pool: 10 s on 2 cores).
"""

from __future__ import annotations

import pickle

import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402

from tying.chem import SmirksAssigner, stale  # noqa: E402

SAGE = SmirksAssigner("openff-2.3.0", cache=False)
UNSANITIZED = [
    "OCc1ccc2ccccc2n1",
    "CCC(=O)c1ccc2c(c1)CCCC2",
    "CCN(CC)C(=O)c1c[nH+]ccc1-c1cc[n+](CC(C)N)cc1",  # refused in the worker before
    "COCCn1c(=O)[nH]c2nc(CCO)[nH]c2c1=O",
    "c1ccsc1",
    "CC(=O)[O-]",
]


def _ids(assignment) -> dict:
    return {s: {k: p.id for k, p in t.items()} for s, t in assignment.terms.items()}


@pytest.mark.parametrize("smiles", UNSANITIZED)
def test_a_workers_copy_labels_as_one_process(smiles):
    raw = Chem.MolFromSmiles(smiles, sanitize=False)
    here = SAGE.assign(Chem.Mol(raw))
    there = SAGE.assign(pickle.loads(pickle.dumps(stale.CheckedMol(Chem.Mol(raw)))))
    assert there.elements == here.elements  # was 31 atoms for 21 (a saturated ring)
    assert _ids(there) == _ids(here)
    assert _ids(here) == _ids(SAGE.assign(smiles))  # and both as the SMILES read afresh
