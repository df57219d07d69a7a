"""Check our assignment against the OpenFF toolkit's ``ForceField.label_molecules``.

The anchor of claim C9 (STYLE rule 9): for every molecule, every bond, angle,
proper and improper torsion and atom must carry the same parameter id as the
OpenFF toolkit (RDKit backend) gives it. The toolkit is needed only here, for
tests and the benchmark (``pip install 'tying[bench]'``); this module is not
imported by :mod:`tying.chem` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tying.chem.assign import KEYS, SECTIONS, Assignment
from tying.chem.errors import MissingExtraError

try:
    from openff.toolkit import ForceField as _OpenFFForceField
    from openff.toolkit import Molecule as _OpenFFMolecule
except ImportError as _err:
    raise MissingExtraError(
        f"tying.chem.validate needs the OpenFF toolkit ({_err}); "
        f"install it with: pip install 'tying[bench]'"
    ) from _err


def openff_force_field(name: str) -> Any:
    """Load a force field with the OpenFF toolkit (from the same installed ``.offxml``).

    Example:
        >>> openff_force_field("openff-2.3.0").get_parameter_handler("Bonds").parameters[0].id
        'b1'
    """
    return _OpenFFForceField(name if name.endswith(".offxml") else f"{name}.offxml")


def openff_labels(
    smiles: str, force_field: Any, sections: Sequence[str] = SECTIONS, *, mapped: bool = False
) -> dict[str, dict[tuple[int, ...], str]]:
    """Label one molecule with ``ForceField.label_molecules``: section -> {key: parameter id}.

    Keys are put in our canonical form (the toolkit's own keys for bonds and
    angles may start with either end).

    Args:
        smiles: the molecule (undefined stereo allowed).
        force_field: an OpenFF toolkit ``ForceField`` (:func:`openff_force_field`).
        sections: which sections to keep.
        mapped: read ``smiles`` with ``Molecule.from_mapped_smiles`` (atoms in map
            order), as ``assign(smiles, mapped=True)``.

    Example:
        >>> labels = openff_labels("CCO", openff_force_field("openff-2.3.0"))
        >>> labels["Bonds"][(0, 1)], labels["vdW"][(8,)]
        ('b1', 'n12')
    """
    read = _OpenFFMolecule.from_mapped_smiles if mapped else _OpenFFMolecule.from_smiles
    mol = read(smiles, allow_undefined_stereo=True)
    labels = force_field.label_molecules(mol.to_topology())[0]
    return {s: {KEYS[s](k): p.id for k, p in labels[s].items()} for s in sections}


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One term whose parameter differs (or that only one side assigned)."""

    molecule: str
    section: str
    atoms: tuple[int, ...]
    ours: str | None
    openff: str | None


def compare(
    ours: Assignment, theirs: Mapping[str, Mapping[tuple[int, ...], str]], label: str = ""
) -> list[Mismatch]:
    """Every term where our parameter id differs from the toolkit's.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> ff = openff_force_field("openff-2.3.0")
        >>> compare(SmirksAssigner("openff-2.3.0").assign("CCO"), openff_labels("CCO", ff))
        []
    """
    out = []
    for section, their_ids in theirs.items():
        our_ids = ours.ids(section)
        for key in sorted(our_ids.keys() | their_ids.keys()):
            a, b = our_ids.get(key), their_ids.get(key)
            if a != b:
                out.append(Mismatch(label or ours.smiles, section, key, a, b))
    return out


def compare_set(
    molecules: Iterable[tuple[str, str]], force_field: str = "openff-2.3.0"
) -> tuple[int, list[Mismatch]]:
    """Compare on a set of ``(smiles, name)``; returns (terms compared, mismatches).

    Terms without any parameter are compared too (both sides must leave them out),
    so this runs with ``strict=False``. Ours are labelled by ``assign_many`` (batches,
    packed from arrays): the path the benchmarks time.

    Example:
        >>> n, bad = compare_set([("c1ccccc1O", "phenol"), ("CS(C)=O", "DMSO")])
        >>> n > 50, bad
        (True, [])
    """
    from tying.chem.assign import SmirksAssigner

    assigner = SmirksAssigner(force_field, strict=False)
    ff = openff_force_field(force_field)
    molecules = list(molecules)
    compared, mismatches = 0, []
    for (smiles, name), ours in zip(molecules, assigner.assign_many(molecules), strict=True):
        theirs = openff_labels(smiles, ff)
        compared += sum(len(v) for v in theirs.values())
        mismatches += compare(ours, theirs, label=name)
    return compared, mismatches


def toolkit_drug_like_smiles() -> list[tuple[str, str]]:
    """The drug-like molecules of the OpenFF toolkit's own ``MiniDrugBank.sdf``, as SMILES.

    A second drug-like set, not built by :mod:`tying.chem.generate`: every molecule of
    the file that RDKit reads, in one piece, with as many heavy atoms as the generated
    set allows (:data:`~tying.chem.generate.MIN_HEAVY` to
    :data:`~tying.chem.generate.MAX_HEAVY`), written without hydrogens (stereo kept),
    in file order. Nothing is left out for being hard to label.

    Returns:
        ``[(smiles, DrugBank name), ...]``.

    Raises:
        FileNotFoundError: when the installed toolkit does not ship the file.

    Example:
        >>> mols = toolkit_drug_like_smiles()
        >>> len(mols) > 200, mols[0][1].startswith("DrugBank")
        (True, True)
    """
    import pathlib

    import openff.toolkit

    from tying.chem._rdkit import Chem, quiet
    from tying.chem.generate import MAX_HEAVY, MIN_HEAVY

    path = pathlib.Path(openff.toolkit.__file__).parent / "data/molecules/MiniDrugBank.sdf"
    if not path.exists():
        raise FileNotFoundError(f"{path} is not in this OpenFF toolkit installation")
    out = []
    with quiet():
        for mol in Chem.SDMolSupplier(str(path), removeHs=False):
            if mol is None:  # a record RDKit cannot read (the file has a few)
                continue
            heavy = Chem.RemoveHs(mol)
            if (
                len(Chem.GetMolFrags(heavy)) == 1
                and MIN_HEAVY <= heavy.GetNumHeavyAtoms() <= MAX_HEAVY
            ):
                out.append((Chem.MolToSmiles(heavy), mol.GetProp("_Name")))
    return out
