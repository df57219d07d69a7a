"""Compiled SMIRKS: each pattern of a force field parsed by RDKit once, with a cheap pre-filter.

A SMIRKS is a SMARTS pattern whose tagged atoms (``[#6X4:1]``) say which atoms
form the matched term. :func:`compile_section` parses every pattern of a
section once per force field (the result is kept on the
:class:`~tying.chem.offxml.ForceField`), checks the tags, and keeps each query
atom's and query bond's SMARTS for a *pre-filter*: a molecule none of whose
atoms (bonds) can satisfy some query atom (bond) cannot match the pattern, so
the RDKit search is skipped. Atoms are judged on a signature (element,
connections, H count, charge, aromaticity, ring membership) in three-valued
logic, where anything the signature cannot decide (recursive SMARTS, ring
sizes) counts as "maybe": the filter never drops a real match, and
``tests/chem/test_smirks.py`` checks that exhaustively on the shipped molecules.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tying.chem._rdkit import Chem, quiet, rdqueries
from tying.chem.errors import SmirksError, a_or_an
from tying.chem.offxml import ForceField, Parameter

# Number of tagged atoms that each section's patterns must have.
VALENCE = {
    "Constraints": 2,
    "Bonds": 2,
    "Angles": 3,
    "ProperTorsions": 4,
    "ImproperTorsions": 4,
    "vdW": 1,
}
# Tags that must be bonded in the pattern itself, so that every match is a real term.
_CHAIN = {2: ((1, 2),), 3: ((1, 2), (2, 3)), 4: ((1, 2), (2, 3), (3, 4))}
_IMPROPER = ((1, 2), (2, 3), (2, 4))


@dataclasses.dataclass(frozen=True, eq=False)
class CompiledSmirks:
    """One parameter's SMIRKS, parsed.

    Args:
        parameter: the force-field parameter.
        query: the RDKit query molecule.
        tagged: the query-atom index of tag 1, tag 2, ... (the matched term's order).
        atoms: each query atom's SMARTS, tag removed (for the pre-filter).
        bonds: each query bond as (atom SMARTS, bond SMARTS, atom SMARTS).
    """

    parameter: Parameter
    query: Any
    tagged: tuple[int, ...]
    atoms: tuple[str, ...]
    bonds: tuple[tuple[str, str, str], ...]


def compile_section(force_field: ForceField, section: str) -> tuple[CompiledSmirks, ...]:
    """Compile every SMIRKS of ``section`` once per force field (later calls reuse it).

    Args:
        force_field: a loaded force field.
        section: e.g. ``"Bonds"``.

    Returns:
        One :class:`CompiledSmirks` per parameter, in file order.

    Raises:
        SmirksError: naming the force field, section and parameter id of a pattern
            that RDKit cannot parse or whose tags are wrong.
        KeyError: when the force field has no such section.

    Example:
        >>> from tying.chem.offxml import load_force_field
        >>> compiled = compile_section(load_force_field("openff-2.3.0"), "Bonds")
        >>> compiled[0].parameter.id, compiled[0].tagged
        ('b1', (0, 1))
    """
    cache = force_field._compiled
    if section not in cache:
        sec = force_field[section]
        valence = VALENCE.get(section)
        cache[section] = tuple(
            compile_smirks(p, valence=valence, force_field=force_field.name) for p in sec
        )
    return cache[section]


def compile_smirks(
    parameter: Parameter, *, valence: int | None = None, force_field: str = "?"
) -> CompiledSmirks:
    """Parse one parameter's SMIRKS with RDKit and check its tags.

    Args:
        parameter: the parameter whose ``smirks`` to compile.
        valence: the number of tags the section needs (2 for bonds, ...), or None.
        force_field: the force field's name, for error messages.

    Returns:
        The :class:`CompiledSmirks`.

    Raises:
        SmirksError: when RDKit cannot parse the pattern, its tags are not
            ``1..valence``, or it tests an isotope (which the OpenFF toolkit ignores);
            the message names the parameter id.

    Example:
        >>> from tying.chem.offxml import Parameter
        >>> c = compile_smirks(Parameter("Bonds", "x1", "[#6X4:1]-[#8:2]", 0, {}), valence=2)
        >>> c.tagged, c.atoms, c.bonds
        ((0, 1), ('[#6&X4]', '[#8]'), (('[#6&X4]', '-', '[#8]'),))
    """
    where = f"{force_field} {parameter.section} parameter {parameter.id!r}"
    query = _parsed(parameter, where, "fix the pattern in the .offxml file")
    tags = {}
    for atom in query.GetAtoms():
        n = atom.GetAtomMapNum()
        if n:
            if n in tags:
                raise SmirksError(f"{where}: tag :{n} appears twice in {parameter.smirks!r}")
            tags[n] = atom.GetIdx()
    expected = list(range(1, (valence or len(tags)) + 1))
    if sorted(tags) != expected:
        raise SmirksError(
            f"{where}: SMIRKS {parameter.smirks!r} has tags {sorted(tags)}, expected "
            f"{expected} for {a_or_an(parameter.section)} parameter; renumber its tagged atoms"
        )
    pairs = _IMPROPER if parameter.section == "ImproperTorsions" else _CHAIN.get(len(expected), ())
    if parameter.section == "Constraints":  # water's H-H: a constrained pair need not be bonded
        pairs = ()
    for a, b in pairs:
        if query.GetBondBetweenAtoms(tags[a], tags[b]) is None:
            raise SmirksError(
                f"{where}: in SMIRKS {parameter.smirks!r} tags :{a} and :{b} are not bonded, so "
                f"a match would not be {a_or_an(parameter.section)} term; fix the pattern"
            )
    isotope = _isotope_atom(query)
    if isotope is not None:
        # The toolkit's molecules carry no isotopes (from_rdkit keeps element, charge,
        # aromaticity and stereo only), so [2#1] matches no atom there and deuterium
        # here: labels that differed from label_molecules', silently.
        # A negated mass reads the other way round: the toolkit takes [!1:1] (not mass 1)
        # as any atom, where RDKit here would skip a [1H] (stop 56).
        raise SmirksError(
            f"{where}: SMIRKS {parameter.smirks!r} tests an isotope mass (query atom {isotope}); the "
            f"OpenFF toolkit ignores isotopes (its molecules carry none: there [2#1] matches no "
            f"atom and a negated mass such as [!1] every atom), so this pattern would label "
            f"differently there and here; write the element without a mass (e.g. [#1] for "
            f"[2#1], * for [!1])"
        )
    atoms = tuple(re.sub(r":\d+\]$", "]", a.GetSmarts()) for a in query.GetAtoms())
    bonds = tuple(
        (atoms[b.GetBeginAtomIdx()], b.GetSmarts(), atoms[b.GetEndAtomIdx()])
        for b in query.GetBonds()
    )
    return CompiledSmirks(parameter, query, tuple(tags[n] for n in expected), atoms, bonds)


def _parsed(parameter, where: str, fix: str):
    """RDKit's query of ``parameter``'s SMIRKS; a :class:`SmirksError` naming ``where``, the
    pattern and ``fix`` where RDKit cannot parse it."""
    with quiet():
        query = Chem.MolFromSmarts(parameter.smirks)
    if query is None:
        raise SmirksError(f"{where}: RDKit cannot parse its SMIRKS {parameter.smirks!r}; {fix}")
    return query


def check_unlabelled_patterns(force_field: ForceField, labelled: Iterable[str]) -> None:
    """Refuse a force field with a SMIRKS RDKit cannot parse in a section left unlabelled.

    ``tying.chem`` compiles only the sections it labels; a malformed pattern in another
    one (``LibraryCharges``, ``GBSA``, ``VirtualSites``, ``ChargeIncrementModel``, or a
    valence section left out by ``sections=``) went unread, and the force field labelled
    molecules, where the OpenFF toolkit refuses the file (``SMIRKSParsingError`` when it
    loads ``LibraryCharges``; an error from ``label_molecules`` for ``GBSA``). Only
    parsing is checked here, and (since stop 52) that a ``<LibraryCharges>`` parameter
    has one charge per tagged atom and a ``<ChargeIncrementModel>`` one increment per
    tagged atom or one fewer, as the toolkit checks them when it loads the file.

    Args:
        force_field: a loaded force field.
        labelled: the sections compiled for labelling (checked there, tags included).

    Raises:
        SmirksError: naming the force field, section, parameter id and pattern (and
            both counts, for charges that do not fit the tagged atoms).

    Example:
        >>> from tying.chem.offxml import load_force_field
        >>> check_unlabelled_patterns(load_force_field("tip4p_fb"), ["vdW"])
    """
    done = set(labelled)
    for section, parameters in force_field.sections.items():
        if section in done:
            continue
        for parameter in parameters:
            where = f"{force_field.name} {section} parameter {parameter.id!r}"
            query = _parsed(
                parameter,
                where,
                f"tying.chem does not label <{section}>, but the OpenFF toolkit refuses a force "
                f"field with a malformed pattern in any section; fix the pattern in the .offxml "
                f"file or remove the parameter",
            )
            if section in _CHARGES:
                _check_charge_count(parameter, query, where)


# Sections whose parameters carry one charge per tagged atom: the attribute run and how
# many charges fewer than tags the OpenFF toolkit accepts (a ChargeIncrement may leave
# its last increment out: the toolkit fills it in so the increments sum to zero).
_CHARGES = {"LibraryCharges": ("charge", 0), "ChargeIncrementModel": ("charge_increment", 1)}


def _check_charge_count(parameter: Parameter, query: Any, where: str) -> None:
    """Refuse a parameter whose number of charges does not fit its tagged atoms, as the
    toolkit's ``LibraryChargeType`` and ``ChargeIncrementType`` refuse it when the file is
    loaded (``SMIRNOFFSpecError``); before stop 52 such a file labelled molecules here."""
    prefix, fewer = _CHARGES[parameter.section]
    run = re.compile(rf"{prefix}\d+")
    charges = sum(1 for key in parameter.values if run.fullmatch(key))
    tags = len({a.GetAtomMapNum() for a in query.GetAtoms()} - {0})
    if tags - fewer <= charges <= tags:
        return
    allowed = f"{tags}" if not fewer else f"{max(tags - fewer, 1)} or {tags}"
    one = "one per tagged atom" + (", the last one may be left out" if fewer else "")
    raise SmirksError(
        f"{where}: SMIRKS {parameter.smirks!r} has {tags} tagged atom{'s' * (tags != 1)} but "
        f"the parameter has {charges} {prefix} value{'s' * (charges != 1)} ({prefix}1, "
        f"{prefix}2, ...); expected {allowed} ({one}), as the OpenFF toolkit refuses the file "
        f"otherwise; add or remove {prefix}N attributes or tagged atoms so they agree"
    )


# -- the pre-filter: can any atom (bond) of a molecule satisfy a query atom (bond)? ----------
#
# Atoms are summarised by a signature and bonds by their two atoms' signatures plus
# type and ring membership. A query atom's SMARTS is evaluated on a signature in
# three-valued logic: True, False, or None ("cannot tell from the signature", e.g.
# recursive SMARTS or ring sizes). Only a definite False rules a pattern out, so
# the filter is sound by construction.

Signature = tuple[
    int, int, int, int, bool, bool
]  # Z, X (connections), H count, charge, aromatic, in ring
_BOND_CODES = {
    Chem.BondType.SINGLE: 1,
    Chem.BondType.DOUBLE: 2,
    Chem.BondType.TRIPLE: 3,
    Chem.BondType.AROMATIC: 4,
}
# Bond orders as GetAdjacencyMatrix(useBO=True) writes them -> the same codes. A SMILES
# writes no other bond of these orders (dative bonds, also 1.0, take the plain path).
_ORDER_CODES = {1.0: 1, 2.0: 2, 3.0: 3, 1.5: 4}
_AROMATIC_SYMBOLS = {"c": 6, "n": 7, "o": 8, "s": 16, "p": 15, "se": 34, "as": 33, "b": 5, "te": 52}
_CHUNK = re.compile(
    r"(#\d+|X\d*|H\d*|[+-]\d*|\+\++|-+|a|A|R0?|r\d*|x0|\*|[A-Z][a-z]?|se|as|te|[cnospb])$"
)


def atom_signature(atom: Any) -> Signature:
    """The properties of an atom that the pre-filter reads.

    Example:
        >>> from tying.chem.molecules import molecule_from_smiles
        >>> atom_signature(molecule_from_smiles("C[NH3+]").GetAtomWithIdx(1))
        (7, 4, 3, 1, False, False)
    """
    return (
        atom.GetAtomicNum(),
        atom.GetTotalDegree(),
        atom.GetTotalNumHs(includeNeighbors=True),
        atom.GetFormalCharge(),
        atom.GetIsAromatic(),
        atom.IsInRing(),
    )


# The signature (with its ring sizes, see Prefilter.signatures) of every hydrogen that
# AddHs appends to a heavy atom: one connection, no H neighbour, neutral, not in a ring.
HYDROGEN = (1, 1, 0, 0, False, False, ())


@dataclasses.dataclass(frozen=True)
class HeavyScan:
    """What one pass over the atoms a SMILES wrote (none of them H) tells about a molecule.

    Args:
        sigs: each written atom's signature, ring sizes included (as
            :meth:`Prefilter.signatures`).
        bonds: each bond among them as ``(i, j, type code, in ring)``.
        degrees: each written atom's number of bonded atoms (hydrogens included).
        symbols: each written atom's element symbol.
        three_ring: whether some atom is in a 3-membered ring.
        h_parents: for each appended hydrogen (atom ``n_written + k``), the written atom
            it is bonded to.
    """

    sigs: list[tuple]
    bonds: list[tuple[int, int, int, bool]]
    degrees: list[int]
    symbols: list[str]
    three_ring: bool
    h_parents: list[int] = dataclasses.field(default_factory=list)


_SYMBOLS: dict[int, str] = {}
# Atoms with a formal charge (scan_heavy reads only those charges).
_CHARGED = rdqueries.FormalChargeGreaterQueryAtom(0)
_CHARGED.ExpandQuery(rdqueries.FormalChargeLessQueryAtom(0), Chem.CompositeQueryType.COMPOSITE_OR)


def scan_heavy(mol: Any, n_written: int) -> HeavyScan | None:
    """Visit only the first ``n_written`` atoms of a prepared molecule, and their bonds.

    For a molecule from :func:`~tying.chem.molecules.parse_smiles` whose SMILES wrote no
    hydrogen atom: every atom from ``n_written`` on is a hydrogen that ``AddHs``
    appended (with its bond after the written bonds), and what the assigner needs
    to know about those follows from their heavy neighbours. About half the atoms
    of a drug-like molecule are such hydrogens, and each RDKit call from Python
    costs a fixed ~0.2 µs.

    Args:
        mol: a molecule from :func:`~tying.chem.molecules.parse_smiles`.
        n_written: the number of atoms its SMILES wrote (that function's second value).

    Returns:
        A :class:`HeavyScan`, or None when a bond has order 0 (then the plain path,
        which visits every atom and bond, handles the molecule).

    Example:
        >>> from tying.chem.molecules import parse_smiles
        >>> mol, n = parse_smiles("C1CC1O")
        >>> scan = scan_heavy(mol, n)
        >>> scan.sigs[3], scan.bonds, scan.degrees, scan.three_ring
        ((8, 2, 1, 0, False, False, ()), [(0, 1, 1, True), (0, 2, 1, True), (1, 2, 1, True), (2, 3, 1, False)], [4, 4, 4, 2], True)
    """
    sizes: dict[int, set[int]] = {}
    ring_bonds = set()
    three_ring = False
    for ring in mol.GetRingInfo().AtomRings():  # each ring's atoms in ring order
        n = len(ring)
        three_ring = three_ring or n == 3
        for i in ring:
            sizes.setdefault(i, set()).add(n)
        for a, b in zip(ring, ring[1:] + ring[:1]):
            ring_bonds.add((a, b) if a < b else (b, a))
    # One call for every bond: orders 1, 2, 3, 1.5 (aromatic); 0 where there is none.
    # Its nonzero entries, row by row, read in one Python pass (each NumPy call costs
    # microseconds on arrays this small, as much as a dozen list steps).
    adjacency = Chem.GetAdjacencyMatrix(mol, useBO=True)[:n_written]  # (n_written, n_atoms)
    rows, cols = np.nonzero(adjacency)
    orders = adjacency[rows, cols].tolist()
    degrees = [0] * n_written
    hydrogens = [0] * n_written
    h_parents = [-1] * (mol.GetNumAtoms() - n_written)
    bonds = []
    for j, k, order in zip(rows.tolist(), cols.tolist(), orders, strict=True):
        degrees[j] += 1
        if k >= n_written:  # an appended hydrogen: bonded to exactly one written atom
            hydrogens[j] += 1
            if h_parents[k - n_written] >= 0:
                return None
            h_parents[k - n_written] = j
        elif j < k:
            bonds.append((j, k, _ORDER_CODES.get(order, 0), (j, k) in ring_bonds))
    # AddHs appends one bond per hydrogen after the written bonds. A bond of order 0
    # is missing from the matrix (and from the degrees): such a molecule is not scanned.
    if -1 in h_parents or len(bonds) != mol.GetNumBonds() - len(h_parents):
        return None
    # Charged atoms are few: one query finds them, instead of a call per atom.
    # Read by index: iterating RDKit's sequence costs ~10 us even when it is empty.
    charged = mol.GetAtomsMatchingQuery(_CHARGED)
    charges = {charged[k].GetIdx(): charged[k].GetFormalCharge() for k in range(len(charged))}
    sigs, symbols = [], []
    atom = mol.GetAtomWithIdx
    for i in range(n_written):
        a = atom(i)
        z = a.GetAtomicNum()
        ring = sizes.get(i)
        # Every hydrogen is an atom now: total degree is the degree, and the H count
        # is the number of hydrogen neighbours (all of them appended ones).
        sigs.append(
            (
                z,
                degrees[i],
                hydrogens[i],
                charges.get(i, 0),
                a.GetIsAromatic(),
                ring is not None,
                tuple(sorted(ring)) if ring else (),
            )
        )
        symbol = _SYMBOLS.get(z)
        if symbol is None:
            symbol = _SYMBOLS[z] = a.GetSymbol()
        symbols.append(symbol)
    return HeavyScan(sigs, bonds, degrees, symbols, three_ring, h_parents)


def _split(expr: str, ops: str) -> tuple[list[str], list[str]]:
    """Split at top level (outside ``$(...)``) on any of ``ops``; return chunks and operators."""
    chunks, found, depth, cur = [], [], 0, []
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and ch in ops:
            chunks.append("".join(cur))
            found.append(ch)
            cur = []
        else:
            cur.append(ch)
    chunks.append("".join(cur))
    return chunks, found


def parse_atom_query(smarts: str) -> tuple:
    """Parse one query atom's SMARTS (``"[#6&X4:1]"``, ``"C"``, ``"*"``) into a predicate tree.

    The tree is ``("and"|"or", [subtrees])``, ``("not", subtree)`` or ``("prim", kind, value)``;
    ``("unknown",)`` stands for anything the signature cannot decide.

    Example:
        >>> parse_atom_query("[#6&X4:1]")
        ('and', [('prim', 'Z', 6), ('prim', 'X', 4)])
    """
    body = smarts[1:-1] if smarts.startswith("[") else smarts
    body = re.sub(r":\d+$", "", body)
    return _parse_low(body, first=True)


def _parse_low(expr: str, first: bool) -> tuple:
    parts, _ = _split(expr, ";")
    if len(parts) > 1:
        return ("and", [_parse_or(p, first and i == 0) for i, p in enumerate(parts)])
    return _parse_or(expr, first)


def _parse_or(expr: str, first: bool) -> tuple:
    parts, _ = _split(expr, ",")
    if len(parts) > 1:
        return ("or", [_parse_and(p, first and i == 0) for i, p in enumerate(parts)])
    return _parse_and(expr, first)


def _parse_and(expr: str, first: bool) -> tuple:
    parts, _ = _split(expr, "&")
    if len(parts) > 1:
        return ("and", [_parse_not(p, first and i == 0) for i, p in enumerate(parts)])
    return _parse_not(expr, first)


def _parse_not(expr: str, first: bool) -> tuple:
    if expr.startswith("!"):
        return ("not", _parse_not(expr[1:], False))
    return _parse_primitive(expr, first)


def _parse_primitive(tok: str, first: bool) -> tuple:
    if tok == "*":
        return ("unknown",)
    if not _CHUNK.match(tok):
        return ("unknown",)  # recursive SMARTS, ring sizes, isotopes, ...: not decided here
    if tok.startswith("#"):
        return ("prim", "Z", int(tok[1:]))
    if tok.startswith("X") and len(tok) > 1:
        return ("prim", "X", int(tok[1:]))
    if tok.startswith("H") and not first and tok != "He" and tok != "Hg":
        return ("prim", "H", int(tok[1:]) if len(tok) > 1 else 1)
    if tok[0] in "+-":
        sign = 1 if tok[0] == "+" else -1
        if len(tok) > 1 and tok[1:].isdigit():
            return ("prim", "charge", sign * int(tok[1:]))
        return ("prim", "charge", sign * len(tok))
    if tok == "a":
        return ("prim", "aromatic", True)
    if tok == "A":
        return ("prim", "aromatic", False)
    if tok in ("R", "r"):
        return ("prim", "ring", True)
    if tok in ("R0", "r0", "x0"):
        return ("prim", "ring", False)
    if tok.startswith("r"):
        # r<n>: in a (smallest) SSSR ring of size n. Only "no ring of that size at
        # all" is decided here; whichever reading RDKit uses, that rules it out.
        return ("rsize", int(tok[1:]))
    if tok in _AROMATIC_SYMBOLS:
        return ("and", [("prim", "Z", _AROMATIC_SYMBOLS[tok]), ("prim", "aromatic", True)])
    if tok[0].isupper() and not (tok.startswith("H") or tok.startswith("X")):
        z = Chem.GetPeriodicTable().GetAtomicNumber(tok) if _is_element(tok) else 0
        if z:
            return ("and", [("prim", "Z", z), ("prim", "aromatic", False)])
    return ("unknown",)


def _is_element(sym: str) -> bool:
    try:
        return Chem.GetPeriodicTable().GetAtomicNumber(sym) > 0
    except RuntimeError:
        return False


_FIELD = {"Z": 0, "X": 1, "H": 2, "charge": 3, "aromatic": 4, "ring": 5}


def evaluate(tree: tuple, sig: tuple) -> bool | None:
    """Three-valued truth of a predicate tree on a signature: True, False, or None (unknown).

    Example:
        >>> evaluate(parse_atom_query("[#6&X4:1]"), (6, 3, 0, 0, True, True))
        False
        >>> evaluate(parse_atom_query("[#6&$(*~[#8]):1]"), (6, 4, 3, 0, False, False)) is None
        True
    """
    kind = tree[0]
    if kind == "prim":
        return sig[_FIELD[tree[1]]] == tree[2]
    if kind == "rsize":  # sig[6]: sizes of the SSSR rings holding the atom, if known
        return None if len(sig) < 7 or tree[1] in sig[6] else False
    if kind == "unknown":
        return None
    if kind == "not":
        v = evaluate(tree[1], sig)
        return None if v is None else not v
    values = [evaluate(t, sig) for t in tree[1]]
    if kind == "and":
        if False in values:
            return False
        return True if all(v is True for v in values) else None
    if True in values:  # "or"
        return True
    return False if all(v is False for v in values) else None


def parse_bond_query(smarts: str) -> tuple:
    """Parse one query bond's SMARTS (``"-"``, ``"=,:"``, ``"-&!@"``, ``""``) into a predicate tree.

    Bond signatures are ``(type, in ring)`` with type 1, 2, 3 or 4 (aromatic).

    Example:
        >>> evaluate(parse_bond_query("-&!@"), (1, True)), evaluate(parse_bond_query(""), (4, False))
        (False, True)
    """
    if smarts == "":  # SMARTS default: single or aromatic
        return ("or", [("prim", "Z", 1), ("prim", "Z", 4)])
    return _parse_bond_low(smarts)


def _parse_bond_low(expr: str) -> tuple:
    for ops, kind in ((";", "and"), (",", "or"), ("&", "and")):
        parts, _ = _split(expr, ops)
        if len(parts) > 1:
            return (kind, [_parse_bond_low(p) for p in parts])
    if expr.startswith("!"):
        return ("not", _parse_bond_low(expr[1:]))
    # Bond signatures reuse fields 0 (type) and 1 (ring) of the atom evaluator: Z and X.
    table = {"-": ("prim", "Z", 1), "=": ("prim", "Z", 2), "#": ("prim", "Z", 3),
             ":": ("prim", "Z", 4), "@": ("prim", "X", True)}  # fmt: skip
    if expr == "~":
        return ("unknown",)
    return table.get(expr, ("unknown",))


def can_be_false(tree: tuple) -> bool:
    """Whether a predicate tree can ever rule anything out (it reads a known primitive).

    Example:
        >>> can_be_false(parse_atom_query("[*:1]")), can_be_false(parse_atom_query("[#1:1]"))
        (False, True)
    """
    if tree[0] in ("prim", "rsize"):
        return True
    if tree[0] == "unknown":
        return False
    if tree[0] == "not":
        return can_be_false(tree[1])
    return any(can_be_false(t) for t in tree[1])


def _recursive_parts(atoms: Sequence[str]) -> list[str]:
    """The recursive SMARTS ``$(...)`` that a query atom requires (joined by AND only).

    A ``$(...)`` in one branch of an OR, or under a NOT, is not required: an atom
    whose SMARTS has ``,`` or ``!`` outside its recursive parts gives none.

    Example:
        >>> _recursive_parts(["[#7&X3&$(*~[#7&X2]):2]", "[*:1]", "[#7&X2,#7&$(*~[#8]):3]"])
        ['*~[#7&X2]']
    """
    parts = []
    for smarts in atoms:
        split = split_recursive(smarts)
        if split is None:  # a "$(" never closed: RDKit writes none; require nothing
            continue
        found, outside = split
        if not any("," in text or "!" in text for text in outside):
            parts += found
    return parts


def _isotope_atom(query: Any) -> str | None:
    """The SMARTS of the first query atom that tests an isotope (inside ``$(...)`` too), or None.

    Example:
        >>> _isotope_atom(Chem.MolFromSmarts("[#6:1]-[$(*-[2#1]):2]"))  # as RDKit writes it
        '[#1&2*]'
        >>> _isotope_atom(Chem.MolFromSmarts("[#6X4:1]-[#1:2]")) is None
        True
    """
    for atom in query.GetAtoms():
        described = atom.DescribeQuery()
        if "AtomIsotope" in described:
            return atom.GetSmarts()
        if "RecursiveStructure" in described:
            parts = split_recursive(atom.GetSmarts())
            for body in parts[0] if parts else ():
                with quiet():
                    inner = Chem.MolFromSmarts(body)
                found = None if inner is None else _isotope_atom(inner)
                if found is not None:
                    return found
    return None


def split_recursive(smarts: str) -> tuple[list[str], list[str]] | None:
    """``(recursive, outside)``: the bodies of an atom SMARTS' ``$(...)`` parts, and the
    text around them (one piece more than there are parts); None when a ``$(`` is never
    closed.

    Args:
        smarts: the inside of one bracket atom (its tag may be left on).

    Returns:
        The recursive bodies, in order, and the text before, between and after them.

    Example:
        >>> split_recursive("#7X3$(*~[#6])H1$(*=O)")
        (['*~[#6]', '*=O'], ['#7X3', 'H1', ''])
    """
    found, outside, end = [], [], 0
    start = smarts.find("$(")
    while start >= 0:
        outside.append(smarts[end:start])
        depth, close = 0, -1
        for k in range(start + 1, len(smarts)):
            depth += {"(": 1, ")": -1}.get(smarts[k], 0)
            if depth == 0:
                close = k
                break
        if close < 0:
            return None
        found.append(smarts[start + 2 : close])
        end = close + 1
        start = smarts.find("$(", end)
    outside.append(smarts[end:])
    return found, outside


def _atoms_and_bonds(smarts: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Each query atom's and bond's SMARTS of a pattern (none if RDKit cannot parse it)."""
    with quiet():
        query = Chem.MolFromSmarts(smarts)
    if query is None:
        return [], []
    atoms = [a.GetSmarts() for a in query.GetAtoms()]
    bonds = [
        (atoms[b.GetBeginAtomIdx()], b.GetSmarts(), atoms[b.GetEndAtomIdx()])
        for b in query.GetBonds()
    ]
    return atoms, bonds


def possible_elements(tree: tuple) -> set[int] | None:
    """The atomic numbers an atom predicate tree allows, or None when it does not say.

    Example:
        >>> sorted(possible_elements(parse_atom_query("[#7,#8;X2]")))
        [7, 8]
        >>> possible_elements(parse_atom_query("*")) is None
        True
    """
    kind = tree[0]
    if kind == "prim":
        return {tree[2]} if tree[1] == "Z" else None
    if kind == "and":
        known = [z for z in map(possible_elements, tree[1]) if z is not None]
        return set.intersection(*known) if known else None
    if kind == "or":
        options = [possible_elements(t) for t in tree[1]]
        return None if any(z is None for z in options) else set.union(*options)
    return None  # "not", "unknown", ring sizes


def bond_signature_code(bond: Any) -> int:
    """The type code of a molecule bond for the pre-filter: 1, 2, 3, 4 (aromatic) or 0."""
    return _BOND_CODES.get(bond.GetBondType(), 0)


class Prefilter:
    """Decides, per molecule, which compiled patterns cannot match and may be skipped.

    Each distinct query atom (bond) that can rule anything out gets one bit. A
    molecule's atoms and bonds are reduced to signatures; the bits a signature
    satisfies are computed once and cached. A pattern stays a candidate when the
    molecule satisfies all of its bits; the candidates come out of a few integer
    operations per missing bit, not a Python loop over every pattern.

    Args:
        patterns: the compiled patterns, in one sequence (indices are positions in it).

    Example:
        >>> from tying.chem.offxml import load_force_field
        >>> from tying.chem.molecules import molecule_from_smiles
        >>> bonds = compile_section(load_force_field("openff-2.3.0"), "Bonds")
        >>> pf = Prefilter(bonds)
        >>> [bonds[i].parameter.id for i in pf.candidates(molecule_from_smiles("CCO"))]
        ['b1', 'b14', 'b84', 'b88']
    """

    def __init__(self, patterns: Sequence[CompiledSmirks]):
        atom_bits: dict[tuple[str, int, int], int] = {}
        bond_bits: dict[tuple[str, str, str], int] = {}
        trees: dict[str, tuple] = {}
        needs: list[tuple[list[int], list[int]]] = []

        def tree(smarts: str) -> tuple:  # parsed once per distinct atom SMARTS
            t = trees.get(smarts)
            if t is None:
                t = trees[smarts] = parse_atom_query(smarts)
            return t

        def bond_bits_of(bonds: Iterable[tuple[str, str, str]], out: list[int]) -> None:
            # A bond needs a bit unless its atoms and bond all match anything.
            for a, b, z in bonds:
                ta, tz = tree(a), tree(z)  # both registered: bond bits index into trees
                if can_be_false(ta) or can_be_false(tz) or can_be_false(parse_bond_query(b)):
                    out.append(bond_bits.setdefault((a, b, z), len(bond_bits)))

        for c in patterns:
            a_bits, b_bits = [], []
            atom_trees = [tree(a) for a in c.atoms]
            for i, smarts in enumerate(c.atoms):
                # The pattern's neighbours of this atom that must be hydrogens, and those
                # that must be heavy atoms, map to as many distinct neighbours in a match.
                h_min = heavy_min = 0
                for n in c.query.GetAtomWithIdx(i).GetNeighbors():
                    z = possible_elements(atom_trees[n.GetIdx()])
                    h_min += z == {1}
                    heavy_min += z is not None and 1 not in z
                if can_be_false(atom_trees[i]) or h_min or heavy_min:
                    key = (smarts, h_min, heavy_min)
                    a_bits.append(atom_bits.setdefault(key, len(atom_bits)))
            bond_bits_of(c.bonds, b_bits)
            # A recursive SMARTS $(...) matches only where its own pattern does, so the
            # molecule needs its atoms and bonds too (anywhere: not tied to this atom).
            for inner_atoms, inner_bonds in map(_atoms_and_bonds, _recursive_parts(c.atoms)):
                for smarts in inner_atoms:
                    if can_be_false(tree(smarts)):
                        a_bits.append(atom_bits.setdefault((smarts, 0, 0), len(atom_bits)))
                bond_bits_of(inner_bonds, b_bits)
            needs.append((a_bits, b_bits))
        self.n_patterns = len(needs)
        self._n_atom_bits = len(atom_bits)
        n_bits = len(atom_bits) + len(bond_bits)
        # One row of 64-bit words per pattern: the bits it needs (atom bits, then bond bits).
        self._n_words = max(1, (n_bits + 63) // 64)
        self._needs = np.zeros((len(needs), self._n_words), dtype=np.uint64)
        for i, (a_bits, b_bits) in enumerate(needs):
            for bit in [*a_bits, *(len(atom_bits) + b for b in b_bits)]:
                self._needs[i, bit // 64] |= np.uint64(1 << (bit % 64))
        # Distinct atom and bond trees, and each bit as indices into them.
        atom_index = {smarts: i for i, smarts in enumerate(trees)}
        self._trees = list(trees.values())
        self._atom_bit_tree = [(atom_index[a], h, heavy) for a, h, heavy in atom_bits]
        bond_smarts = sorted({b for _, b, _ in bond_bits})
        self._bond_trees = [parse_bond_query(b) for b in bond_smarts]
        bond_index = {b: i for i, b in enumerate(bond_smarts)}
        self._bond_bit_trees = [
            (atom_index[a], bond_index[b], atom_index[z]) for a, b, z in bond_bits
        ]
        self._possible: dict[Signature, list[bool]] = {}  # signature -> may satisfy tree i
        self._atom_cache: dict[Signature, int] = {}
        self._bond_cache: dict[tuple, int] = {}

    def candidates(self, mol: Any) -> list[int]:
        """Indices (ascending) of the patterns that may match a prepared molecule."""
        return self._candidates(self.satisfied(mol))

    def candidates_of(self, scan: HeavyScan, n_atoms: int) -> list[int]:
        """:meth:`candidates` from a :func:`scan_heavy` of a molecule with ``n_atoms`` atoms.

        The hydrogens after the scanned atoms are the ones ``AddHs`` appended: each
        has the signature :data:`HYDROGEN` and one single, non-ring bond to an
        atom whose H count is not zero. So the molecule's atom signatures and bond
        keys are known without visiting them, and the candidates are the same as
        :meth:`candidates` gives (``tests/chem/test_smirks.py`` checks that).

        Example:
            >>> from tying.chem.offxml import load_force_field
            >>> from tying.chem.molecules import parse_smiles
            >>> pf = Prefilter(compile_section(load_force_field("openff-2.3.0"), "Bonds"))
            >>> mol, n = parse_smiles("CCO")
            >>> pf.candidates_of(scan_heavy(mol, n), mol.GetNumAtoms()) == pf.candidates(mol)
            True
        """
        atom_keys = set(scan.sigs)
        bond_keys = set()
        for j, k, code, ring in scan.bonds:
            u, v = scan.sigs[j], scan.sigs[k]
            bond_keys.add((u, v, code, ring) if u <= v else (v, u, code, ring))
        if n_atoms > len(scan.sigs):
            atom_keys.add(HYDROGEN)
            for u in atom_keys:
                if u[2] and u is not HYDROGEN:
                    bond_keys.add(
                        (u, HYDROGEN, 1, False) if u <= HYDROGEN else (HYDROGEN, u, 1, False)
                    )
        return self._candidates(self._has(atom_keys, bond_keys))

    def _candidates(self, has_bits: int) -> list[int]:
        has = np.frombuffer(has_bits.to_bytes(8 * self._n_words, "little"), dtype=np.uint64)
        lacking = (self._needs & ~has).any(axis=1)  # needs a bit the molecule lacks
        return np.flatnonzero(~lacking).tolist()

    @staticmethod
    def signatures(mol: Any) -> list[tuple]:
        """Each atom's :func:`atom_signature` plus the sizes of the SSSR rings holding it."""
        atom = mol.GetAtomWithIdx
        n = mol.GetNumAtoms()
        sizes: list[set[int]] = [set() for _ in range(n)]
        for ring in mol.GetRingInfo().AtomRings():
            for i in ring:
                sizes[i].add(len(ring))
        return [(*atom_signature(atom(i)), tuple(sorted(sizes[i]))) for i in range(n)]

    def satisfied(self, mol: Any) -> int:
        """The bits (atom bits, then bond bits) that some atom or bond of ``mol`` may satisfy."""
        sigs = self.signatures(mol)
        bond_keys = set()
        bond = mol.GetBondWithIdx
        for i in range(mol.GetNumBonds()):
            b = bond(i)
            u, v = sigs[b.GetBeginAtomIdx()], sigs[b.GetEndAtomIdx()]
            if v < u:
                u, v = v, u
            bond_keys.add((u, v, bond_signature_code(b), b.IsInRing()))
        return self._has(set(sigs), bond_keys)

    def _has(self, atom_keys: set, bond_keys: set) -> int:
        has = 0
        for sig in atom_keys:
            mask = self._atom_cache.get(sig)
            if mask is None:
                mask = self._atom_cache[sig] = self._atom_mask(sig)
            has |= mask
        for key in bond_keys:
            mask = self._bond_cache.get(key)
            if mask is None:
                mask = self._bond_cache[key] = self._bond_mask(key) << self._n_atom_bits
            has |= mask
        return has

    def _possible_trees(self, sig: Signature) -> list[bool]:
        ok = self._possible.get(sig)
        if ok is None:
            ok = self._possible[sig] = [evaluate(t, sig) is not False for t in self._trees]
        return ok

    def _atom_mask(self, sig: Signature) -> int:
        ok = self._possible_trees(sig)
        mask = 0
        hydrogens, heavy = sig[2], sig[1] - sig[2]  # H neighbours, heavy neighbours
        for bit, (tree, h_min, heavy_min) in enumerate(self._atom_bit_tree):
            if ok[tree] and hydrogens >= h_min and heavy >= heavy_min:
                mask |= 1 << bit
        return mask

    def _bond_mask(self, key: tuple) -> int:
        u, v, code, ring = key
        ok_u, ok_v = self._possible_trees(u), self._possible_trees(v)
        ok_bond = [evaluate(t, (code, ring)) is not False for t in self._bond_trees]
        mask = 0
        for bit, (ta, tb, tz) in enumerate(self._bond_bit_trees):
            if ok_bond[tb] and ((ok_u[ta] and ok_v[tz]) or (ok_v[ta] and ok_u[tz])):
                mask |= 1 << bit
        return mask
