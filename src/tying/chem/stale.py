"""What an RDKit molecule perceived before it was edited: refused, as two readings of it.

An RDKit molecule caches what was perceived from its graph, and an edit in place
(``RWMol.RemoveAtom``, ``atom.InvertChirality()``, ``bond.SetStereo(...)``) leaves the
cache as it was. The OpenFF toolkit's ``Molecule.from_rdkit`` reads the cache; tying
perceives the molecule anew: two readings, and labels that differed without a word.

**Hydrogen counts.** The toolkit adds hydrogens from each atom's cached implicit-H
count, before it sanitizes; tying sanitizes first. After an explicit hydrogen is
removed from ``Chem.AddHs(Chem.MolFromSmiles("C1CC1"))``, the toolkit read a carbon
with three neighbours and no hydrogen in its place (``[C]1``, bond ``b2`` where the
molecule's C-C bonds are ``b1``), tying a cyclopropane with the hydrogen put back.
:func:`refuse_stale_perception` compares each atom's cached count with a fresh one.

**Stereo.** An RDKit molecule keeps its stereo twice: as chiral tags and bond directions (what
RDKit's substructure matching reads), and as the labels perceived from them once
(``_CIPCode`` R/S on atoms, E/Z on double bonds). Edit a tag after the molecule was
read (``atom.InvertChirality()``, ``bond.SetStereo(...)``) and the labels are left
from before: ``Chem.AssignStereochemistry`` without ``force=True`` does not redo them.
The OpenFF toolkit's ``Molecule.from_rdkit`` reads the labels, and rebuilds the
molecule it matches on from them; tying matched on the tags. A chiral SMIRKS then
labelled the inverted atom with the other parameter than ``label_molecules`` gave, and
a bond set ``STEREOE`` with no bond directions was matched as cis here, trans there,
without a word. The toolkit also refuses ``STEREOCIS`` / ``STEREOTRANS`` bonds
(``ValueError: Expected RDKit bond stereochemistry of E or Z``).

:func:`refuse_stale_stereo` compares the labels the toolkit would read with the ones
perceived afresh from the tags and directions, and refuses a molecule where they differ,
naming the atom or bond and the fix (``Chem.AssignStereochemistry(mol, cleanIt=True,
force=True)`` after editing tags). SMILES are perceived afresh, so never refused here.
"""

from __future__ import annotations

from typing import Any

from tying.chem._rdkit import Chem, quiet, rdqueries
from tying.chem.errors import SmilesError

_UNSPECIFIED = Chem.ChiralType.CHI_UNSPECIFIED
_CHIRAL = rdqueries.HasChiralTagQueryAtom()
_NONE = (Chem.BondStereo.STEREONONE, Chem.BondStereo.STEREOANY)
_CIS_TRANS = (Chem.BondStereo.STEREOCIS, Chem.BondStereo.STEREOTRANS)
_FIX = (
    "if the tags are what you mean, perceive the labels again with "
    "Chem.AssignStereochemistry(mol, cleanIt=True, force=True) before passing the molecule"
)

# A molecule with atom maps: RDKit ranks by the map numbers, the toolkit's labels must not be
_MAPPED_FIX = (
    "atom map numbers change RDKit's CIP ranking (the labels may have been perceived with "
    "them, as Chem.MolFromSmiles of a mapped SMILES does), and the toolkit rebuilds the "
    "molecule from the labels without them; perceive the labels with the maps cleared, then "
    "set them back: maps = [a.GetAtomMapNum() for a in mol.GetAtoms()]; "
    "[a.SetAtomMapNum(0) for a in mol.GetAtoms()]; "
    "Chem.AssignStereochemistry(mol, cleanIt=True, force=True); "
    "[a.SetAtomMapNum(n) for a, n in zip(mol.GetAtoms(), maps)]"
)

# An atom that is no stereocenter without maps, labelled by the toolkit ranking the maps
# (it perceives any atom left unlabelled anew): only clearing the maps reads it as meant
_MAPS_RANKED_FIX = (
    "the toolkit's from_rdkit perceives an atom left without a label anew, ranked by the "
    "atom map numbers, so no label set with the maps on is read as meant; clear the maps "
    "before passing the molecule (assign keeps its atom indices): "
    "[a.SetAtomMapNum(0) for a in mol.GetAtoms()]"
)

# Set by _revive on a molecule a worker process receives: each atom's implicit-H count
# as the parent's molecule had it cached (-1: never perceived), since pickling loses
# which counts were never perceived (an unsanitized molecule comes back with 0 implicit
# hydrogens on every atom, as if stale). Everything else the check reads (chiral tags,
# bond stereo and directions, the R/S labels, _StereochemDone) the pickle keeps.
_SAVED_H = "_tying_saved_implicit_hs"


class CheckedMol:
    """An RDKit molecule on its way to a worker process, with the hydrogen counts it had cached.

    Pickled as the molecule with all its properties and, where some atom's count was
    never perceived, each atom's cached implicit-H count (:func:`_saved_counts`), so that the worker's :func:`refuse_stale_perception`
    reaches the verdict one process reaches: ``assign_many(n_jobs=2)`` refused a
    molecule never sanitized (its counts came back as 0) and read a stale chiral tag
    (its labels were dropped) otherwise. Until stop 57 the parent ran the whole check
    here, serially, before any worker started (up to 3x the labelling's wall time on
    large molecules with stereo); now the workers run it, and the parent only reads
    the counts.

    Example:
        >>> import pickle
        >>> raw = Chem.MolFromSmiles("CCO", sanitize=False)
        >>> back = pickle.loads(pickle.dumps(CheckedMol(raw)))
        >>> refuse_stale_perception(back, "'CCO'")  # read, as in the parent
    """

    __slots__ = ("binary", "counts")

    def __init__(self, mol: Any) -> None:
        self.counts = _saved_counts(mol)
        self.binary = mol.ToBinary(Chem.PropertyPickleOptions.AllProps)

    def __reduce__(self) -> tuple:
        return (_revive, (self.binary, self.counts))


def _saved_counts(mol: Any) -> str | None:
    """Each atom's cached implicit-H count, -1 where none was perceived, as text; None
    when every atom's count was perceived (the pickle keeps those as they are, stale
    ones included: the worker reads them from its copy)."""
    if not mol.NeedsUpdatePropertyCache():  # one call, where reading 40 counts cost ~0.6 ms
        return None
    out = []
    with quiet():  # an atom never perceived (unsanitized, just added) raises
        for atom in _atoms(mol):
            try:
                out.append(atom.GetNumImplicitHs())
            except RuntimeError:
                out.append(-1)
    return " ".join(map(str, out))


def _revive(binary: bytes, counts: str | None) -> Any:
    mol = Chem.Mol(binary)
    if counts is not None:
        mol.SetProp(_SAVED_H, counts)
    return mol


def refuse_stale_perception(mol: Any, label: str) -> None:
    """Refuse an RDKit molecule whose cached hydrogen counts or stereo labels are stale.

    Args:
        mol: an RDKit molecule, as given (before it is sanitized here).
        label: how to name the molecule in the error (its SMILES, quoted).

    Raises:
        SmilesError: naming the atom and both hydrogen counts, or (:func:`refuse_stale_stereo`)
            the atom or bond whose stereo label disagrees with its tag, and the fix.

    Example:
        >>> m = Chem.RWMol(Chem.AddHs(Chem.MolFromSmiles("C1CC1")))
        >>> refuse_stale_perception(m, "'C1CC1'")  # as perceived: read
        >>> m.RemoveAtom(3)  # a hydrogen of atom 0; its count of implicit ones is stale
        >>> refuse_stale_perception(m, "'C1CC1'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tying.chem.errors.SmilesError: molecule 'C1CC1': atom 0 (C) has 0 implicit hydrogens cached, ...
    """
    # In a worker process: the counts the parent's molecule had cached (CheckedMol)
    saved = mol.GetProp(_SAVED_H).split() if mol.HasProp(_SAVED_H) else None
    fresh = Chem.Mol(mol)
    fresh.UpdatePropertyCache(strict=False)
    with quiet():  # an atom never perceived (unsanitized, just added) has no count to be stale
        for atom, new in zip(_atoms(mol), _atoms(fresh)):
            if saved is not None:
                was = int(saved[atom.GetIdx()])
                if was < 0:
                    continue
            else:
                try:
                    was = atom.GetNumImplicitHs()
                except RuntimeError:
                    continue
            now = new.GetNumImplicitHs()
            if was != now:
                raise SmilesError(
                    f"molecule {label}: atom {atom.GetIdx()} ({atom.GetSymbol()}) has {was} "
                    f"implicit hydrogens cached, but its bonds and charge now give {now} (the "
                    f"molecule was edited after it was perceived); the OpenFF toolkit adds "
                    f"the cached number and tying.chem the fresh one, so they would label two "
                    f"different molecules; call Chem.SanitizeMol(mol) (or "
                    f"mol.UpdatePropertyCache()) after editing, or set the atom's hydrogens "
                    f"(atom.SetNumExplicitHs, atom.SetNoImplicit) to the ones you mean"
                )
    refuse_stale_stereo(mol, label)


def refuse_stale_stereo(mol: Any, label: str) -> None:
    """Refuse an RDKit molecule whose stereo labels disagree with its tags and directions.

    Args:
        mol: an RDKit molecule, before hydrogens are added.
        label: how to name the molecule in the error (its SMILES, quoted).

    Raises:
        SmilesError: naming the atom (stored vs perceived R/S) or bond (stored vs
            perceived E/Z, or a ``STEREOCIS``/``STEREOTRANS`` bond), and the fix.

    Example:
        >>> m = Chem.MolFromSmiles("F[C@H](Cl)Br")
        >>> refuse_stale_stereo(m, "'F[C@H](Cl)Br'")  # labels as perceived: read
        >>> _ = m.GetAtomWithIdx(1).InvertChirality()  # the tag edited, the label left as R
        >>> refuse_stale_stereo(m, "'F[C@H](Cl)Br'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tying.chem.errors.SmilesError: molecule 'F[C@H](Cl)Br': atom 1 (C) is labelled R, ...
    """
    if not mol.GetAtomsMatchingQuery(_CHIRAL) and all(b.GetStereo() in _NONE for b in _bonds(mol)):
        return  # no stereo stated: nothing to disagree (the common case, one pass)
    stored = mol  # what the toolkit's from_rdkit reads (labels kept if present)
    has_maps = any(a.GetAtomMapNum() for a in _atoms(mol))
    if has_maps or not mol.HasProp("_StereochemDone"):
        # The toolkit's from_rdkit sanitizes first, which clears _StereochemDone, then
        # perceives with cleanIt=False: labels kept, an atom or bond without one labelled
        # anew, ranked by the maps (review of stop 62: cis-1,4-dimethylcyclohexane with
        # maps set after reading was read by the toolkit with R/S ring atoms, here as
        # achiral, no error); without maps that perception changes nothing
        stored = Chem.Mol(mol)
        Chem.AssignStereochemistry(stored, cleanIt=False, force=has_maps)
    fresh = Chem.Mol(mol)  # what the tags and bond directions say now
    # ... ranked without atom maps (stop 62): RDKit's legacy CIP ranking reads map numbers,
    # while the toolkit rebuilds the molecule from the labels without them. Maps set after
    # reading (labels from before) were refused as stale, and the advice, to perceive
    # again with the maps on, made the toolkit read another stereoisomer; labels perceived
    # with maps (Chem.MolFromSmiles of a mapped SMILES) passed where it read one.
    if has_maps:
        for atom in _atoms(fresh):
            atom.SetAtomMapNum(0)
    Chem.AssignStereochemistry(fresh, cleanIt=True, force=True)
    fix = _MAPPED_FIX if has_maps else _FIX
    for old, new in zip(_atoms(stored), _atoms(fresh)):
        was, now = _cip(old), _cip(new)
        if was != now:
            if has_maps and now is None:
                fix = _MAPS_RANKED_FIX  # no label set survives: the toolkit ranks by the maps
            raise SmilesError(
                f"molecule {label}: atom {old.GetIdx()} ({old.GetSymbol()}) is labelled "
                f"{was or 'without stereo'}, but its chiral tag gives {now or 'no stereo'} "
                f"(the label was perceived before the tag was last set, or by another "
                f"labeller: rdCIPLabeler.AssignCIPLabels writes r/s, which the toolkit "
                f"refuses, and may disagree with RDKit's legacy labels); the OpenFF toolkit "
                f"reads the label and RDKit's matching the tag, so a chiral pattern would "
                f"label two different molecules; {fix}"
            )
    for old, new in zip(_bonds(stored), _bonds(fresh)):
        was, now = old.GetStereo(), new.GetStereo()
        where = (
            f"molecule {label}: bond {old.GetIdx()} ({old.GetBeginAtomIdx()}-"
            f"{old.GetEndAtomIdx()}, {old.GetBeginAtom().GetSymbol()}="
            f"{old.GetEndAtom().GetSymbol()})"
        )
        if was in _CIS_TRANS:
            raise SmilesError(
                f"{where} has stereo {was.name}, relative to its stereo atoms (as "
                f"rdCIPLabeler.AssignCIPLabels or Chem.SetBondStereoFromDirections leave it); the OpenFF "
                f"toolkit refuses it (it reads E or Z only); write the double bond's "
                f"directions (a SMILES with '/' and '\\', or Chem.SetDoubleBondNeighborDirections) "
                f"and perceive it with Chem.AssignStereochemistry(mol, cleanIt=True, force=True)"
            )
        if (was in _NONE) != (now in _NONE) or (was not in _NONE and was != now):
            raise SmilesError(
                f"{where} is marked {_bond_text(was)}, but its bond directions give "
                f"{_bond_text(now)}; the OpenFF toolkit reads the mark and RDKit's matching "
                f"the directions, so a pattern with '/' or '\\' would label two different "
                f"molecules; set the directions to the stereo you mean, then {fix}"
            )


def _atoms(mol: Any) -> list:
    # by index: iterating mol.GetAtoms() asks the sequence's length at every step (2x slower)
    return [mol.GetAtomWithIdx(i) for i in range(mol.GetNumAtoms())]


def _bonds(mol: Any) -> list:
    return [mol.GetBondWithIdx(i) for i in range(mol.GetNumBonds())]


def _cip(atom: Any) -> str | None:
    return atom.GetProp("_CIPCode") if atom.HasProp("_CIPCode") else None


def _bond_text(stereo: Any) -> str:
    return "no stereo" if stereo in _NONE else stereo.name.removeprefix("STEREO")
