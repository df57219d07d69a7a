"""The stale-perception check runs in the worker processes, not serially in the parent (stop 57).

``assign_many(n_jobs>1)`` wrapped every RDKit molecule in ``CheckedMol``, which ran the
whole check (a copy of the molecule, its SMILES, stereo perception twice) in the parent,
one molecule after another, before the workers got it: ~4-5 ms a molecule on drug-like
molecules with stereo (AddHs), against ~0.5 ms now. The parent now only records what a
pickle loses (the atoms whose hydrogen counts were never perceived) and each worker
runs the check. Guarded here: the parent runs no check, and every verdict after the
trip to a worker equals the verdict in one process, on edited, unsanitized and
relabelled molecules.
"""

from __future__ import annotations

import pickle
import random

import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import rdCIPLabeler  # noqa: E402

from tying.chem import SmilesError, stale  # noqa: E402

BASE = [
    "F[C@H](Cl)Br",
    "C[C@@H](O)[C@H](N)C(=O)O",
    "F/C=C/F",
    "C/C=C\\C[C@H](O)C",
    "OCC(=O)[O-]",
    "C1CC1",
    "C[C@H]1CC[C@@H](C)CC1",
    "CC/C=C/C=C/C",
]


def _verdict(mol) -> str:
    try:
        stale.refuse_stale_perception(mol, "'x'")
    except SmilesError as err:
        return str(err)
    return ""


def _edited(smiles: str, variant: int, rng: random.Random):
    """A molecule edited in one of the ways whose perception goes stale (or left as read)."""
    mol = Chem.MolFromSmiles(smiles)
    if variant % 2:
        mol = Chem.AddHs(mol)
    rw = Chem.RWMol(mol)
    kind = variant // 2
    if kind == 0:
        chiral = [a for a in rw.GetAtoms() if a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED]
        if chiral:
            rng.choice(chiral).InvertChirality()
    elif kind == 1:
        double = [b for b in rw.GetBonds() if b.GetStereo() != Chem.BondStereo.STEREONONE]
        if double:
            stereo = [Chem.BondStereo.STEREOE, Chem.BondStereo.STEREOZ, Chem.BondStereo.STEREOCIS]
            rng.choice(double).SetStereo(rng.choice(stereo))
        else:
            rdCIPLabeler.AssignCIPLabels(rw)
    elif kind == 2:
        hydrogens = [a.GetIdx() for a in rw.GetAtoms() if a.GetAtomicNum() == 1]
        if hydrogens:
            rw.RemoveAtom(rng.choice(hydrogens))
        else:
            rw.GetAtomWithIdx(0).SetFormalCharge(1)
    elif kind == 3:  # never sanitized, then an atom added: no counts to go stale
        rw = Chem.RWMol(Chem.MolFromSmiles(Chem.MolToSmiles(mol), sanitize=False))
        rw.AddAtom(Chem.Atom(6))
    return rw if variant % 3 else rw.GetMol()


def test_a_worker_reaches_the_verdict_one_process_reaches():
    rng = random.Random(57)
    verdicts = []
    for smiles in BASE:
        for variant in range(10):
            mol = _edited(smiles, variant, rng)
            here = _verdict(mol)
            there = _verdict(pickle.loads(pickle.dumps(stale.CheckedMol(mol))))
            assert there == here, (smiles, variant)
            verdicts.append(here)
    refused = [v for v in verdicts if v]
    assert 20 <= len(refused) <= len(verdicts) - 20  # both kinds, so the test can fail
    kinds = ("implicit hydrogens cached", "is labelled", "is marked", "STEREOCIS")
    assert all(any(kind in v for v in refused) for kind in kinds)


def test_the_parent_runs_no_check_on_a_molecule_it_sends(monkeypatch):
    calls = []

    def count(*args):
        calls.append(args)

    monkeypatch.setattr(stale, "refuse_stale_perception", count)
    monkeypatch.setattr(stale, "refuse_stale_stereo", count)
    mol = Chem.RWMol(Chem.AddHs(Chem.MolFromSmiles("F[C@H](Cl)Br")))
    mol.GetAtomWithIdx(1).InvertChirality()
    sent = stale.CheckedMol(mol)
    assert calls == []  # before stop 57, the whole check ran here, serially
    monkeypatch.undo()
    with pytest.raises(SmilesError, match=r"atom 1 \(C\) is labelled R, but its chiral tag"):
        stale.refuse_stale_perception(pickle.loads(pickle.dumps(sent)), "'x'")
