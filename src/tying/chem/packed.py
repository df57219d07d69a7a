"""Results packed as arrays: many molecules' terms in a few int arrays, decoded on first read.

An :class:`~tying.chem.assign.Assignment` held as plain dicts costs about 29 KB per
drug-like molecule in Python objects (a tuple per term key, a dict entry per term)
that the garbage collector walks again and again as results pile up: one process
labelling 30,000 molecules with ``assign_many`` got 1.2x slower per molecule by the
end (measured 2026-12-01, 1 thread). :func:`pack` stores a batch's terms per
section as two ``array('i')`` columns (the atoms of every key, each key's parameter
position), and each molecule's section as a :class:`PackedTerms` view into them:
a few objects per molecule whatever its size. Workers of
:func:`~tying.chem.parallel.assign_many` send the same columns as bytes.
"""

from __future__ import annotations

import array
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tying.chem.read_only import _ImproperTerms, _SectionTerms

if TYPE_CHECKING:
    from tying.chem.assign import Assignment

_POSITION = operator.attrgetter("index")
_KEY = operator.itemgetter(0)


def columns(
    assignments: Iterable[Assignment], sections: Sequence[str]
) -> tuple[list[tuple[int, ...]], dict[str, tuple[int, Any, Any]]]:
    """Each molecule's term count per section, and per section ``(arity, atoms, positions)``.

    ``atoms`` holds every key's atoms, ``arity`` per key, molecule after molecule, and
    ``positions`` each key's parameter position (``Parameter.index``) in its section.
    Both are sequences of ints in the smallest of a few buffer types that holds them
    (``bytearray`` when every atom index is below 256, as in any drug-like molecule;
    ``array('H')`` or ``array('i')`` otherwise): ``bytearray`` builds from a list 8x
    faster than ``array``, and this runs for every molecule ``assign_many`` labels.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> counts, cols = columns([SmirksAssigner().assign("CO")], ["Bonds"])
        >>> counts, cols["Bonds"][0], list(cols["Bonds"][1][:4])
        ([(5,)], 2, [0, 1, 0, 2])
    """
    chain = itertools.chain.from_iterable
    assignments = list(assignments)
    counts = [tuple(len(a.terms[s]) for s in sections) for a in assignments]
    cols = {}
    for s in sections:
        ts = [a.terms[s] for a in assignments]
        arity = next((_arity(t) for t in ts if t), 1)
        if all(type(t) is PackedTerms for t in ts):  # slices of their buffers, not decoded
            atoms, positions = [], []
            for t in ts:
                lo, n = t._start, t._count
                atoms += t._atoms[lo * t._arity : (lo + n) * t._arity]
                positions += t._positions[lo : lo + n]
        else:
            atoms = list(chain(chain(ts)))  # each mapping iterates its keys, each key its atoms
            positions = list(map(_POSITION, chain([t.values() for t in ts])))
        cols[s] = (arity, _smallest(atoms), _smallest(positions))
    return counts, cols


def _arity(terms: Mapping) -> int:
    """Atoms per key of a non-empty section's terms."""
    return terms._arity if type(terms) is PackedTerms else len(next(iter(terms)))


def _smallest(values: list[int]) -> Any:
    """``values`` (non-negative ints) as a bytearray if each fits a byte, else array H or i."""
    try:
        return bytearray(values)
    except ValueError:  # a value of 256 or more
        pass
    try:
        return array.array("H", values)
    except OverflowError:
        return array.array("i", values)


def _buffer(values: np.ndarray) -> Any:
    """Non-negative ints as :func:`columns` stores them: a bytearray when each fits a
    byte, else ``array('H')`` or ``array('i')`` (for the assigner's batch arrays)."""
    top = int(values.max()) if len(values) else 0
    if top < 256:
        return bytearray(values.astype(np.uint8).tobytes())
    out = array.array("H" if top < 65536 else "i")
    out.frombytes(values.astype(np.uint16 if top < 65536 else np.int32).tobytes())
    return out


def pack(
    assignments: Sequence[Assignment], parameters: Mapping[str, Sequence[Any]]
) -> list[Assignment]:
    """The same Assignments, each section's terms a :class:`PackedTerms` over shared arrays.

    Equal to the input (``==``, same keys in the same order, the same Parameter
    objects); an Assignment that appears twice, or two that share their ``terms``
    (as a renamed copy does), come out sharing them too. Already packed ones are
    returned as they are.

    Args:
        assignments: results of one force field.
        parameters: per section, that force field's parameters in file order
            (``force_field[section].parameters``).

    Returns:
        One Assignment per input, in order.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> assigner = SmirksAssigner()
        >>> plain = assigner.assign("CCO")
        >>> ff = assigner.force_field
        >>> (packed,) = pack([plain], {s: ff[s].parameters for s in assigner.sections})
        >>> packed == plain, type(packed.bonds).__name__, packed.bonds[(0, 1)].id
        (True, 'PackedTerms', 'b1')
    """
    todo: dict[int, Assignment] = {}  # id(terms) -> a holder of those terms
    for a in assignments:
        if not is_packed(a) and id(a.terms) not in todo:
            todo[id(a.terms)] = a
    if not todo:
        return list(assignments)
    counts, cols = columns(todo.values(), list(parameters))
    new_terms = dict(zip(todo, views(counts, cols, parameters), strict=True))
    out, done = [], {}
    for a in assignments:
        b = done.get(id(a))
        if b is None:
            terms = new_terms.get(id(a.terms))
            # The constructor, not dataclasses.replace: 4x cheaper, once per molecule.
            b = (
                a
                if terms is None
                else type(a)(a.smiles, a.name, a.force_field, a.elements, terms, a.not_assigned)
            )
            done[id(a)] = b
        out.append(b)
    return out


def views(
    counts: Sequence[tuple[int, ...]],
    cols: Mapping[str, tuple[int, Any, Any]],
    parameters: Mapping[str, Sequence[Any]],
) -> Iterator[dict[str, PackedTerms]]:
    """Per molecule, its ``{section: PackedTerms}`` over the shared :func:`columns`.

    Args:
        counts: each molecule's term count per section, in the order of ``cols``.
        cols: per section ``(arity, atoms, positions)``, as :func:`columns` gives.
        parameters: per section, the force field's parameters in file order.

    Returns:
        One terms mapping per molecule, in order.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> assigner = SmirksAssigner()
        >>> plain = assigner.assign("CO")
        >>> counts, cols = columns([plain], ["Bonds"])
        >>> ff = assigner.force_field
        >>> (terms,) = views(counts, cols, {"Bonds": ff["Bonds"].parameters})
        >>> terms["Bonds"] == plain.bonds
        True
    """
    sections = [(s, *column, parameters[s]) for s, column in cols.items()]
    start = [0] * len(sections)
    for per in counts:
        terms = {}
        for k, ((s, arity, atoms, positions, params), n) in enumerate(
            zip(sections, per, strict=True)
        ):
            improper = s == "ImproperTorsions"
            terms[s] = PackedTerms(arity, atoms, positions, start[k], n, params, improper)
            start[k] += n
        yield terms


def is_packed(a: Assignment) -> bool:
    """Whether every section of ``a`` is a :class:`PackedTerms` (nothing left to pack)."""
    return all(type(t) is PackedTerms for t in a.terms.values())


class PackedTerms(Mapping):
    """One section's ``{term key: Parameter}`` of one molecule, decoded on first read.

    A read-only mapping equal to the dict it stands for (``==`` either way, ``len``,
    ``in``, ``keys()`` set operations); it pickles as that dict. Reading it decodes
    the dict once and keeps it (so a molecule whose terms are read costs a dict
    again). Built by :func:`pack` in one process and from worker bytes by
    :func:`~tying.chem.parallel.assign_many`.

    Args:
        arity: atoms per key.
        atoms: the keys' atoms, ``arity`` per key, for a whole batch.
        positions: each key's parameter position in ``parameters``, for a whole batch.
        start: this molecule's first key in the batch.
        count: how many keys it has.
        parameters: the section's parameters, in file order.

    Example:
        >>> import array
        >>> t = PackedTerms(2, array.array("i", [9, 9, 0, 1, 1, 2]), array.array("i", [0, 1, 1]),
        ...                 1, 2, ("b1", "b2"))
        >>> len(t), t[(0, 1)], t == {(0, 1): "b2", (1, 2): "b2"}
        (2, 'b2', True)
    """

    __slots__ = (
        "_arity",
        "_atoms",
        "_positions",
        "_start",
        "_count",
        "_parameters",
        "_dict",
        "_improper",
    )

    def __init__(self, arity, atoms, positions, start, count, parameters, improper=False):
        self._arity, self._atoms, self._positions = arity, atoms, positions
        self._start, self._count, self._parameters = start, count, parameters
        self._dict: dict | None = None
        self._improper = improper  # keys read in any order of the outer atoms

    def _terms(self) -> dict:
        if self._dict is None:
            a, lo, n = self._arity, self._start, self._count
            atoms = iter(self._atoms[lo * a : (lo + n) * a])
            keys = zip(*[atoms] * a)  # consecutive runs of `arity` atoms
            params = map(self._parameters.__getitem__, self._positions[lo : lo + n])
            # in key order, as the toolkit's label_molecules and unpacked sections (stop 57)
            # read in any atom order, as an unpacked section (stop 59, 60)
            kind = _ImproperTerms if self._improper else _SectionTerms
            self._dict = kind(sorted(zip(keys, params), key=_KEY))
        return self._dict

    def __getitem__(self, key):
        return self._terms()[key]  # any atom order, a list too (stop 59, 60)

    def __iter__(self):
        return iter(self._terms())

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key) -> bool:
        return key in self._terms()

    def __eq__(self, other):
        if isinstance(other, PackedTerms):
            other = other._terms()
        return self._terms() == other if isinstance(other, dict) else super().__eq__(other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self._terms())

    def __reduce__(self):
        return dict, (self._terms(),)
