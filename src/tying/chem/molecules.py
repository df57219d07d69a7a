"""Molecules as the OpenFF toolkit sees them: explicit hydrogens, MDL aromaticity.

SMIRKS matching depends on how the molecule graph is perceived. The OpenFF
toolkit (RDKit backend) parses a SMILES without sanitising, sanitises everything
except aromaticity and hydrogen adjustment, applies the **MDL aromaticity
model** (``OEAroModel_MDL``: furan and thiophene are *not* aromatic, benzene
and pyridine are), assigns stereochemistry, then adds every hydrogen as an
explicit atom, appended after the heavy atoms. :func:`prepare_molecule` does the
same, so atom indices and matches agree with ``ForceField.label_molecules``.

The shipped molecule set (:func:`load_molecule_set`) is a hand-written list of
real, well-known compounds: small organics, heterocycles, drugs, amino acids,
charged groups, halogenated, sulfur and phosphorus compounds.
"""

from __future__ import annotations

import codecs
import importlib.resources
import os
import pathlib
import re
from typing import Any

from tying.chem._rdkit import Chem, quiet, rdqueries
from tying.chem.errors import SmilesError
from tying.chem.offxml import SUPPORTED_AROMATICITY
from tying.chem.stale import _SAVED_H, refuse_stale_perception

_SANITIZE = Chem.SANITIZE_ALL ^ Chem.SANITIZE_ADJUSTHS ^ Chem.SANITIZE_SETAROMATICITY
# Atom queries _prepare runs in C++: dummy atoms (*) or radicals, refused; hydrogens.
_DUMMY_OR_RADICAL = rdqueries.AtomNumEqualsQueryAtom(0)
_DUMMY_OR_RADICAL.ExpandQuery(
    rdqueries.NumRadicalElectronsGreaterQueryAtom(0), Chem.CompositeQueryType.COMPOSITE_OR
)
# Elements whose radicals the OpenFF toolkit reads (from_rdkit's d- and f-block set):
# a transition-metal or lanthanide ion such as [Fe+3] or [Cu+2] has unpaired electrons
# in RDKit; refusing it said, wrongly, that the toolkit refuses it too.
_D_AND_F_BLOCK = frozenset([*range(21, 31), *range(39, 49), *range(57, 81), *range(89, 113)])
_HYDROGEN = rdqueries.AtomNumEqualsQueryAtom(1)
_AROMATIC_BOND = Chem.BondType.AROMATIC
# RDKit bond types without a bond order (GetBondTypeAsDouble gives 0 or fails on them),
# and those of a fractional order outside an aromatic ring (the toolkit truncates them).
_ORDERLESS = frozenset(
    getattr(Chem.BondType, name)
    for name in (
        "UNSPECIFIED",
        "ZERO",
        "IONIC",
        "HYDROGEN",
        "THREECENTER",
        "DATIVEL",
        "DATIVER",
        "OTHER",
    )
    if hasattr(Chem.BondType, name)
)
_FRACTIONAL = frozenset(
    getattr(Chem.BondType, f"{n}ANDAHALF")
    for n in ("ONE", "TWO", "THREE", "FOUR", "FIVE")
    if hasattr(Chem.BondType, f"{n}ANDAHALF")
)
_REFUSED_BONDS = _ORDERLESS | _FRACTIONAL
_SPACE = re.compile(r"\s")
# Control characters that are not whitespace (those are _SPACE's); with non-ASCII ones,
# what RDKit drops at either end of a SMILES without a word (stop 35).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
_UNSPECIFIED = Chem.ChiralType.CHI_UNSPECIFIED
# A text file's line ends (Python's universal newlines), and no other character.
_NEWLINE = re.compile("\r\n|\r|\n")
# Set by _prepare when the SSSR keeps fewer rings than the symmetrized SSSR (cages).
_SSSR_AMBIGUOUS = "_tying_sssr_ambiguous"


def molecule_from_smiles(
    smiles: str, *, name: str | None = None, aromaticity_model: str = "OEAroModel_MDL"
) -> Any:
    """Parse a SMILES into an RDKit molecule with explicit hydrogens and MDL aromaticity.

    Args:
        smiles: the SMILES string.
        name: a name for error messages (and the molecule's ``_Name``).
        aromaticity_model: the force field's model; only ``"OEAroModel_MDL"``.

    Returns:
        An ``rdkit.Chem.Mol`` whose hydrogens are all explicit atoms after the heavy atoms.

    Raises:
        TypeError: when ``smiles`` is not a ``str`` (or ``name`` not a str or None).
        SmilesError: when the SMILES is empty, contains whitespace (RDKit would
            silently drop what follows) or a character outside printable ASCII (RDKit
            drops one at either end: a byte-order mark, a zero-width space), cannot be
            parsed or sanitised, or has a radical (d- and f-block metals excepted, as
            in the OpenFF toolkit) or a dummy atom ``*`` (names it and the atom).
        ValueError: on an unsupported aromaticity model.

    Example:
        >>> mol = molecule_from_smiles("c1ccoc1", name="furan")
        >>> mol.GetNumAtoms(), any(a.GetIsAromatic() for a in mol.GetAtoms())
        (9, False)
    """
    return parse_smiles(smiles, name=name, aromaticity_model=aromaticity_model)[0]


def parse_smiles(
    smiles: str, *, name: str | None = None, aromaticity_model: str = "OEAroModel_MDL"
) -> tuple[Any, int | None]:
    """:func:`molecule_from_smiles`, plus how many atoms came before the added hydrogens.

    The second value is the number of atoms the SMILES wrote (all heavy) when none of
    them is a hydrogen, so that atoms from that index on are exactly the hydrogens
    :func:`~rdkit.Chem.AddHs` appended; None when the SMILES wrote a hydrogen atom
    (``[H]``, ``[2H]``) or a dative bond (``->``). The assigner's fast path reads it.

    Args:
        smiles, name, aromaticity_model: as :func:`molecule_from_smiles`.

    Returns:
        ``(molecule, n_written)``: the molecule as :func:`molecule_from_smiles` gives
        it, and the number of atoms the SMILES wrote, or None (see above).

    Raises:
        TypeError, SmilesError, ValueError: as :func:`molecule_from_smiles`.

    Example:
        >>> mol, n = parse_smiles("CCO")
        >>> mol.GetNumAtoms(), n, parse_smiles("[H]OC")[1]
        (9, 3, None)
    """
    if not isinstance(smiles, str):
        hint = "; decode it first (smiles.decode())" if isinstance(smiles, bytes) else ""
        raise TypeError(f"expected a SMILES string, got {type(smiles).__name__}: {smiles!r}{hint}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, got {type(name).__name__}: {name!r}")
    label = f"{smiles!r}" + (f" ({name})" if name else "")
    if not smiles.strip():
        raise SmilesError(f"empty SMILES {label}: a molecule needs at least one atom")
    found = _SPACE.search(smiles)  # str.isspace's characters, in C (one call per molecule)
    space = None if found is None else found.start()
    if space is not None and smiles.strip() == smiles.strip().split()[0]:
        raise SmilesError(f"SMILES {label} has leading or trailing whitespace; pass smiles.strip()")
    if space is not None:
        # RDKit reads up to the first blank and takes the rest as a title: "CC O" would be ethane.
        raise SmilesError(
            f"SMILES {label} contains whitespace at position {space}; RDKit would read only "
            f"{smiles[:space]!r} and drop the rest; remove the whitespace (strip() a line read "
            f"from a file, and join components with '.')"
        )
    if not smiles.isascii() or _CONTROL.search(smiles) is not None:
        raise _not_printable(smiles, label)
    with quiet():
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        raise SmilesError(f"cannot parse SMILES {label}: RDKit rejected it; check its syntax")
    if name:
        mol.SetProp("_Name", name)
    if "~" in smiles:  # RDKit reads SMARTS' any-bond into a SMILES: a query, not a bond
        _refuse_query_bonds(mol, label)
    if ":" in smiles and "[" in smiles:  # an atom map may be written ([CH3:1])
        _strip_atom_maps(mol)
    mol, n_written = _prepare(
        mol, label, aromaticity_model, chiral="@" in smiles, aromatic_bonds=":" in smiles
    )
    if "<" in smiles or ">" in smiles:  # a dative bond: of order 1 like a single bond
        n_written = None
    return mol, n_written


def _strip_atom_maps(mol: Any) -> None:
    """Set every atom map number to 0 before stereo perception, as the OpenFF toolkit does.

    RDKit ranks mapped atoms apart, so the ring atoms of ``[CH3:1][C@H:2]1...`` (cis/trans
    1,4-dimethylcyclohexane) got R/S labels that the same SMILES without a map does not
    give; those atoms stayed chiral and a chiral SMIRKS atom (``[#6@:1]``) matched them,
    where ``Molecule.from_smiles`` and ``from_mapped_smiles`` (which strip the map first)
    see no chirality: other labels, silently (stop 39). The map order itself is read from
    the SMILES text (:func:`tying.chem.mapped.map_order`), not from the molecule.
    """
    for atom in mol.GetAtoms():
        if atom.GetAtomMapNum():
            atom.SetAtomMapNum(0)


def _not_printable(smiles: str, label: str) -> SmilesError:
    """The error for a SMILES holding a character outside printable ASCII.

    SMILES are printable ASCII. RDKit drops any other character at either end without
    a word: ``"\\ufeffCCO"`` (a file's byte-order mark), ``"CCO\\u200b"`` (a zero-width
    space pasted along) and ``"CCO\\x00"`` were read as ethanol, and the text, with the
    invisible character, was kept as the molecule's name, cache key and record
    (``label_lines``), so it no longer matched its own SMILES elsewhere.
    """
    at = next(i for i, c in enumerate(smiles) if not " " < c < "\x7f")
    char = smiles[at]
    hint = (
        "a byte-order mark: read the file with encoding='utf-8-sig'"
        if char == "\ufeff"
        else "remove it (SMILES are printable ASCII)"
    )
    return SmilesError(
        f"SMILES {label} contains {char!r} (U+{ord(char):04X}) at position {at}, which is "
        f"not printable ASCII; RDKit drops such a character at either end of a SMILES "
        f"without a word; {hint}"
    )


def input_hint(molecule: Any) -> str:
    """How to pass ``molecule`` (not a SMILES or RDKit molecule) instead; ``""`` if unknown.

    Example:
        >>> input_hint(b"CCO"), input_hint(3.5)
        ('; decode bytes first (smiles.decode())', '')
    """
    if isinstance(molecule, bytes):
        return "; decode bytes first (smiles.decode())"
    from tying.chem.tables import MISSING_FIX, is_missing, row_hint

    if hint := row_hint(molecule, "assign"):  # a data frame's row (stop 62)
        return hint
    if is_missing(molecule):  # a table's empty cell, NaN (stop 62)
        return f"; {MISSING_FIX}"
    if isinstance(molecule, list) or type(molecule).__name__ == "ndarray":
        # a row of a table (df.values, a list of lists): stop 61, the error named no fix;
        # or several molecules given to assign (review of stop 61: assign(['CCO', 'O']) was
        # told to pass [tuple(row) for row in rows], which splits each SMILES into letters)
        return (
            "; several molecules go to assign_many(molecules), one Assignment each; a "
            "(SMILES, name) pair is a tuple: pass assign_many([tuple(row) for row in rows]), "
            "or assign(smiles, name=name) for one molecule"
        )
    if molecule is None:
        return (
            "; RDKit's readers (Chem.SDMolSupplier, Chem.SmilesMolSupplier) yield None for a "
            "record they cannot read: leave it out, or pass errors='skip' to assign_many"
        )
    if type(molecule).__module__.startswith("openff.") and type(molecule).__name__ == "Topology":
        # stop 57: it was told to pass "an OpenFF Molecule as molecule.to_rdkit()"
        return (
            "; an OpenFF Topology holds several molecules: label them with "
            "assign_many([m.to_rdkit() for m in topology.molecules]), one result per molecule "
            "with its own atom indices, as label_molecules(topology) gives one dict per molecule"
        )
    if type(molecule).__module__.startswith("openff."):
        return (
            "; pass an OpenFF Molecule as molecule.to_rdkit() (same atom order), or its "
            "molecule.to_smiles(mapped=True) with mapped=True"
        )
    return ""


def molecule_name(molecule: Any, name: str | None) -> str | None:
    """``name``, or for an RDKit molecule given no name its ``_Name`` (None if empty).

    The OpenFF toolkit's ``Molecule.from_rdkit`` names a molecule by its ``_Name`` (an
    SD file's title line); before stop 62 an RDKit molecule given to ``assign`` or
    ``assign_many`` without ``name=`` came back named None, its title lost.

    Example:
        >>> mol = Chem.MolFromSmiles("CCO")
        >>> mol.SetProp("_Name", "ethanol")
        >>> molecule_name(mol, None), molecule_name(mol, "EtOH"), molecule_name("CCO", None)
        ('ethanol', 'EtOH', None)
    """
    if name is not None or not isinstance(molecule, Chem.Mol):
        return name
    return (molecule.GetProp("_Name") or None) if molecule.HasProp("_Name") else None


def prepare_molecule(mol: Any, *, aromaticity_model: str = "OEAroModel_MDL") -> Any:
    """Copy an RDKit molecule and perceive it the OpenFF way (MDL aromaticity, explicit H).

    Atoms already in the graph keep their indices; missing hydrogens are appended.

    Args:
        mol: an ``rdkit.Chem.Mol``.
        aromaticity_model: only ``"OEAroModel_MDL"``.

    Returns:
        A new ``rdkit.Chem.Mol``.

    Raises:
        TypeError: when ``mol`` is not an RDKit molecule.
        SmilesError: when it has no atoms, cannot be sanitised, or has a radical
            (outside the d and f blocks) or a dummy atom.

    Example:
        >>> from rdkit import Chem
        >>> prepare_molecule(Chem.MolFromSmiles("c1ccsc1")).GetAtomWithIdx(0).GetIsAromatic()
        False
    """
    if not isinstance(mol, Chem.Mol):
        raise TypeError(f"expected an rdkit.Chem.Mol, got {type(mol).__name__}")
    if mol.GetNumAtoms() == 0:
        raise SmilesError("the molecule has no atoms; pass a molecule with at least one atom")
    # A query molecule (Chem.MolFromSmarts, a mol file's atom lists) is a pattern, not a
    # molecule: its atoms carry no hydrogen counts, so "[#6][#6][#8]" was labelled as a
    # bare C-C-O without hydrogens, and "C-C" as ethane, without an error.
    for atom in mol.GetAtoms():
        if atom.HasQuery():
            raise SmilesError(
                f"molecule {Chem.MolToSmarts(mol)!r}: atom {atom.GetIdx()} "
                f"({atom.GetSmarts()}) is a query atom (a SMARTS pattern, not a molecule); "
                f"build the molecule from a SMILES (Chem.MolFromSmiles) or a mol file without "
                f"queries"
            )
    try:
        smarts = repr(Chem.MolToSmarts(mol))
    except RuntimeError:  # RDKit cannot write some bond types (OTHER, DATIVEL): refused below
        smarts = f"of {mol.GetNumAtoms()} atoms"
    _refuse_query_bonds(mol, smarts, orderless=True)
    label = Chem.MolToSmiles(mol)
    # Perception left from before an edit (stereo labels, hydrogen counts): the toolkit
    # reads it, RDKit re-perceives (stop 56: labels differed from the toolkit's)
    refuse_stale_perception(mol, repr(label))
    mol = Chem.RWMol(mol)
    if ":" in label:  # a map written ([CH3:1]): our copy without it (stop 62), as a SMILES
        # is read; its canonical SMILES (the cache key, .smiles) carried the maps, so one
        # molecule mapped twice was two cache entries and two .smiles. The stereo labels
        # stay as the stale check passed them.
        _strip_atom_maps(mol)
    if mol.HasProp(_SAVED_H):
        # A worker's copy of a molecule never sanitized (stop 59): the pickle brought its
        # never-perceived hydrogen counts back as 0, perceived, and Kekulize read them, so
        # an aromatic ring came out saturated ('OCc1ccc2ccccc2n1' labelled as
        # OCC1CCC2CCCCC2N1, 31 atoms, b1 on its ring bonds) or was refused, where the same
        # molecule in one process labels as the SMILES says. Perceived again here as one
        # process perceives it (the stale check above has passed: no count was stale).
        mol.UpdatePropertyCache(strict=False)
    # Drop the aromaticity that RDKit's own model may have set: MDL is perceived anew.
    with quiet():
        try:
            Chem.Kekulize(mol, clearAromaticFlags=True)
        except Exception as err:
            raise SmilesError(f"molecule {label!r} cannot be kekulized: {err}") from err
    return _prepare(mol.GetMol(), repr(label), aromaticity_model)[0]


def _refuse_query_bonds(mol: Any, label: str, orderless: bool = False) -> None:
    """Refuse a query bond (``~``, SMARTS' any-bond, which RDKit also reads in a SMILES).

    Such a bond has no order: ``"C~C"`` was labelled as two carbons with four hydrogens
    each and a bond no parameter matches (with ``strict=False``, no error at all), where
    the OpenFF toolkit refuses the SMILES. With ``orderless`` (an RDKit molecule), a bond
    of a type without order too (:func:`_refuse_orderless_bond`), in the same pass.
    """
    for bond in mol.GetBonds():
        if bond.HasQuery():
            raise SmilesError(
                f"molecule {label}: bond {bond.GetIdx()} "
                f"({bond.GetBeginAtomIdx()}-{bond.GetEndAtomIdx()}, {bond.GetSmarts()!r}) is a "
                f"query bond (a SMARTS pattern, not a molecule); write it as a bond of the "
                f"molecule ('-', '=', '#'), or build the molecule from a SMILES "
                f"(Chem.MolFromSmiles) or a mol file without queries"
            )
        if orderless and bond.GetBondType() in _REFUSED_BONDS:  # after: a query's has none
            _refuse_orderless_bond(mol, bond)


def _refuse_orderless_bond(mol: Any, bond: Any) -> None:
    """Refuse a bond of an RDKit molecule without an integral order (zero-order, ionic, 1.5).

    A zero-order bond (mol files of metal complexes, ``Chem.BondType.ZERO``), an ionic,
    hydrogen or unspecified one counts as a neighbour (``X``) but adds no valence: each
    of its atoms was read with one connection too many, so with ``strict=False`` most of
    their terms silently lost their parameters (``C.C`` joined by a zero-order bond:
    no bond, angle or torsion left), and with ``strict=True`` the force field was blamed
    for not covering the atoms. The OpenFF toolkit reads such a bond as order 0 and then
    cannot label the molecule. A fractional type (``ONEANDAHALF``) the toolkit truncates
    (to 1) while RDKit counts 1.5 of valence: the labels differed.
    """
    begin, end = bond.GetBeginAtom(), bond.GetEndAtom()
    kind = bond.GetBondType()
    try:
        label = repr(Chem.MolToSmiles(mol))
    except Exception:  # an unsanitized molecule RDKit cannot write
        label = f"of {mol.GetNumAtoms()} atoms"
    if kind in _FRACTIONAL:
        why = (
            f"which has a fractional bond order outside an aromatic ring (RDKit counts "
            f"{bond.GetBondTypeAsDouble()} of valence, the OpenFF toolkit truncates it to "
            f"{int(bond.GetBondTypeAsDouble())})"
        )
    else:
        why = "which has no bond order"
    raise SmilesError(
        f"molecule {label}: bond {bond.GetIdx()} ({begin.GetIdx()}-{end.GetIdx()}, "
        f"{begin.GetSymbol()}-{end.GetSymbol()}) is of type {kind.name}, {why}; a force "
        f"field assigns bonds of order 1, 2, 3 (or aromatic, or dative) only: remove the "
        f"bond (Chem.RWMol.RemoveBond, e.g. to label a metal and its ligands as separate "
        f"components) or give it an integral order"
    )


def _refuse_aromatic_bonds(mol: Any, label: str) -> None:
    """Refuse a bond still aromatic after kekulization: one outside any aromatic ring.

    ``"C:C"`` or ``"CC:OCC"`` write an aromatic bond ``:`` between atoms that are in no
    aromatic ring, so kekulization leaves it aromatic: it was matched as an aromatic bond
    (``b5``, ``[#6X3:1]:[#6X3:2]``) or left without parameter, where the OpenFF toolkit
    reads it as a single bond (``b4``, ``b17``) and leaves its atoms a hydrogen short. The
    molecule is not defined; the user meant ``-``, ``=`` or an aromatic ring.
    """
    for bond in mol.GetBonds():
        if bond.GetBondType() == _AROMATIC_BOND:
            begin, end = bond.GetBeginAtom(), bond.GetEndAtom()
            raise SmilesError(
                f"molecule {label}: bond {bond.GetIdx()} ({begin.GetIdx()}-{end.GetIdx()}, "
                f"{begin.GetSymbol()}:{end.GetSymbol()}) is aromatic but in no aromatic ring, "
                f"so it has no bond order (the OpenFF toolkit reads it as single and leaves "
                f"its atoms a hydrogen short); write it as '-' or '=', or write the ring's "
                f"atoms in lower case"
            )


def _prepare(
    mol: Any,
    label: str,
    aromaticity_model: str,
    chiral: bool = True,
    aromatic_bonds: bool = True,
) -> tuple[Any, int | None]:
    if aromaticity_model not in SUPPORTED_AROMATICITY:
        raise ValueError(
            f"aromaticity model {aromaticity_model!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_AROMATICITY)}"
        )
    with quiet():
        try:
            Chem.SanitizeMol(mol, _SANITIZE)
        except Exception as err:  # RDKit raises several sanitisation exception types
            raise SmilesError(f"cannot sanitise SMILES {label}: {err}") from err
    if aromatic_bonds:  # a SMILES that wrote ':' (always checked for an RDKit molecule)
        _refuse_aromatic_bonds(mol, label)
    n_written = mol.GetNumAtoms()
    # Found by RDKit in C++ (two calls instead of a Python loop over every atom); the
    # lowest-index offending atom is named, a dummy before a radical, as atom by atom.
    # Read by index: iterating RDKit's sequence costs ~10 us even when it is empty.
    offending = mol.GetAtomsMatchingQuery(_DUMMY_OR_RADICAL)
    for k in range(len(offending)):
        atom = offending[k]
        if atom.GetAtomicNum() in _D_AND_F_BLOCK:
            continue  # an open-shell metal ([Fe+3], [Cu+2]) is read, as by the toolkit
        if atom.GetAtomicNum() == 0:
            raise SmilesError(
                f"molecule {label}: atom {atom.GetIdx()} is a wildcard/dummy atom "
                f"({atom.GetSmarts()}); force fields parameterise real elements only; "
                f"replace it with an element (e.g. a capping hydrogen or methyl)"
            )
        raise SmilesError(
            f"molecule {label}: atom {atom.GetIdx()} ({atom.GetSymbol()}) is a radical; "
            f"SMIRNOFF force fields (and the OpenFF toolkit) need closed-shell molecules; "
            f"add the missing hydrogens (e.g. [CH3] -> C) or charges"
        )
    has_h = len(mol.GetAtomsMatchingQuery(_HYDROGEN)) > 0
    Chem.SetAromaticity(mol, Chem.AromaticityModel.AROMATICITY_MDL)
    Chem.AssignStereochemistry(mol)
    if chiral:  # the SMILES wrote an @ (always checked for an RDKit molecule)
        _drop_unlabelled_chirality(mol)
    mol = Chem.AddHs(mol)
    Chem.SetHybridization(mol)
    # The toolkit matches on the plain SSSR (its to_rdkit ends with Chem.GetSSSR), not on
    # the symmetrized SSSR that sanitising leaves: for cage molecules (cubane: 6 rings
    # symmetrized, 5 in the SSSR) the ring counts R<n> differ, and [#6;R2] would match in
    # the toolkit and not here. Which rings the SSSR keeps then depends on the atom order,
    # so canonical_order keys such a molecule by its ring counts too.
    # The symmetrized set only adds rings to the SSSR, whose size is the cycle rank
    # (bonds - atoms + fragments): no more rings than bonds - atoms + 1, nothing to redo
    # (the common case; GetSSSR on every molecule cost ~15% of assign_many's time).
    symmetrized = mol.GetRingInfo().NumRings()
    if symmetrized > mol.GetNumBonds() - mol.GetNumAtoms() + 1:
        Chem.GetSSSR(mol)
        if mol.GetRingInfo().NumRings() != symmetrized:
            mol.SetBoolProp(_SSSR_AMBIGUOUS, True)
    return mol, None if has_h else n_written


def _drop_unlabelled_chirality(mol: Any) -> None:
    """Forget the chirality of atoms that have no CIP label (R or S), as the toolkit does.

    The OpenFF toolkit stores an atom's chirality only as its CIP label and rebuilds
    the RDKit molecule it matches on from that: a stereo atom RDKit gives no label
    (the ring atoms of ``C[C@H]1CC[C@@H](C)CC1``, cis/trans rather than R/S) has no
    chirality there, so a chiral SMIRKS atom (``[#6@:1]``) does not match it. Kept
    here, such a pattern matched: labels that differed from the toolkit's, silently.
    """
    for atom in mol.GetAtoms():
        if atom.GetChiralTag() != _UNSPECIFIED and not atom.HasProp("_CIPCode"):
            atom.SetChiralTag(_UNSPECIFIED)


def canonical_order(mol: Any) -> tuple[str, tuple[int, ...]]:
    """The canonical SMILES of a prepared molecule and its atoms in canonical order.

    Two inputs of the same molecule give the same SMILES, and ``order[k]`` is the
    index of the k-th canonical atom in each: that is the map between them.

    Example:
        >>> a = canonical_order(molecule_from_smiles("OCC"))
        >>> b = canonical_order(molecule_from_smiles("CCO"))
        >>> a[0] == b[0], len(a[1])
        (True, 9)
    """
    smiles = Chem.MolToSmiles(mol)
    order = tuple(map(int, mol.GetProp("_smilesAtomOutputOrder").strip("[],").split(",")))
    if mol.HasProp(_SSSR_AMBIGUOUS):  # ring counts depend on the atom order (see _prepare)
        info = mol.GetRingInfo()
        smiles += " |rings:" + ",".join(str(info.NumAtomRings(i)) for i in order)
    return smiles, order


def data_path(filename: str = "molecules.smi") -> pathlib.Path:
    """Path of a file shipped in ``tying/chem/data``."""
    return pathlib.Path(str(importlib.resources.files("tying.chem") / "data" / filename))


def load_molecule_set(path: str | pathlib.Path | None = None) -> list[tuple[str, str]]:
    """Read a SMILES list: one ``SMILES<TAB>name`` a line, ``#`` comments.

    The file is read as UTF-8 whatever the locale (a name may be ``α-pinene``; under
    ``LC_ALL=C`` or a Windows code page it was read in the locale's encoding, so the
    same file gave other names, or failed with a bare ``UnicodeDecodeError``), and a
    byte-order mark at its start is dropped (it was read into the first SMILES, or
    hid a first ``#`` comment). Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` only, so line
    numbers are an editor's (``str.splitlines`` also split at form feeds, ``\\x1c``-``\\x1e``,
    U+0085 and U+2028: one line of the file read as two, and later lines misnumbered).

    Args:
        path: a file; by default the shipped set of real molecules.

    Returns:
        ``[(smiles, name), ...]`` in file order.

    Raises:
        TypeError: when ``path`` is not a path or string.
        ValueError: on bytes that are not UTF-8 (names the file, line and column and
            the bytes), a line without a tab-separated name, or a SMILES field holding
            a space or a character outside printable ASCII (names the line).

    Example:
        >>> mols = load_molecule_set()
        >>> len(mols) >= 200, mols[1]
        (True, ('CC', 'ethane'))
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"load_molecule_set: path must be a str or os.PathLike, got "
            f"{type(path).__name__}: {path!r:.80}; pass the file's path (an open file's .name)"
        )
    path = data_path() if path is None else pathlib.Path(path)
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _undecodable(path, data, err) from None
    out = []
    for lineno, line in enumerate(_NEWLINE.split(text), 1):
        if not line.strip() or line.startswith("#"):
            continue
        smiles, tab, name = line.partition("\t")
        if not tab or not smiles.strip() or not name.strip():
            raise ValueError(f"{path.name}:{lineno}: expected 'SMILES<TAB>name', got {line!r}")
        smiles = smiles.strip()
        # Refused here, where the line is known: assign would refuse it too, naming only
        # the SMILES ("CCO ethanol\tx" is a space-separated line with a stray tab).
        bad = next((i for i, c in enumerate(smiles) if not " " < c < "\x7f"), None)
        if bad is not None:
            raise ValueError(
                f"{path.name}:{lineno}: the SMILES field {smiles!r} holds {smiles[bad]!r} "
                f"(U+{ord(smiles[bad]):04X}) at position {bad}, and a SMILES is printable "
                f"ASCII without spaces; separate the SMILES from its name with one tab"
                + (" (the line looks space-separated)" if smiles[bad] == " " else "")
            )
        out.append((smiles, name.strip()))
    return out


def _undecodable(path: pathlib.Path, data: bytes, err: UnicodeDecodeError) -> ValueError:
    """:func:`load_molecule_set`'s error for bytes that are not UTF-8: file, line, column."""
    before = _NEWLINE.split(data[: err.start].decode("utf-8"))  # valid up to err.start
    lineno, column = len(before), len(before[-1]) + 1
    line_start = err.start - len(before[-1].encode("utf-8"))
    line = re.split(rb"\r|\n", data[line_start:], maxsplit=1)[0]
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    return ValueError(
        f"{path}:{lineno}:{column}: {data[err.start : err.end]!r} is not UTF-8 ({err.reason}) "
        f"in line {line!r:.120}"
        + ("; the file starts with a UTF-16 byte-order mark" if utf16 else "")
        + "; SMILES files are read as UTF-8: re-save the file as UTF-8 (e.g. iconv -f "
        + ("utf-16" if utf16 else "latin1")
        + " -t utf-8)"
    )
