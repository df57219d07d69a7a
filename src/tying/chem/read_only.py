"""Read-only dicts for what ``tying.chem`` shares: force fields and cached results.

``load_force_field`` returns one :class:`~tying.chem.offxml.ForceField` per file for the
whole process, and ``SmirksAssigner.assign`` returns the very :class:`Assignment` its
cache keeps. Their mappings were plain dicts, so an edit in place reached further than
the object in hand, silently:

- ``ff.sections["Bonds"] = edited`` changed every later ``load_force_field`` of that file,
  while the SMIRKS compiled before the edit kept labelling with the old parameters (an
  assigner built afterwards still named ``b1``, which the edited section no longer held);
- ``del a.terms["Bonds"][(0, 1)]`` on a result removed that bond from every later cache
  hit of the molecule (``assign("OCC")`` after ``assign("CCO")`` came back with 7 bonds
  and no error, ``strict`` or not).

:class:`ReadOnlyDict` is a ``dict`` (equal to one, pickles and deep-copies as itself,
reads at dict speed) whose every in-place change is a ``TypeError`` that says what is
shared and how to make a changed copy.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, ItemsView, KeysView
from typing import Any

_DEFAULT = "this mapping is shared and read-only; copy it with dict(...) to change it"


class ReadOnlyDict(dict):
    """A ``dict`` that refuses in-place changes, naming what it belongs to and the fix.

    Args:
        *args, **kwargs: as ``dict(...)``.
        what: the message of the ``TypeError`` an in-place change raises (what the
            mapping is, why it is shared, how to get a changed copy), or a function
            that returns it (formatted only when it is needed).

    Raises:
        TypeError: on ``d[k] = v``, ``del d[k]``, ``update``, ``pop``, ``popitem``,
            ``setdefault``, ``clear`` and ``|=``.

    Example:
        >>> d = ReadOnlyDict({"a": 1}, what="a shared table; copy it with dict(d)")
        >>> d == {"a": 1}, d["a"], dict(d) | {"b": 2}
        (True, 1, {'a': 1, 'b': 2})
        >>> d["b"] = 2
        Traceback (most recent call last):
        ...
        TypeError: cannot set 'b': a shared table; copy it with dict(d)
    """

    __slots__ = ("_message",)
    #: the message of a subclass whose instances all say the same (no per-instance cost)
    _what: str = _DEFAULT

    def __init__(self, *args: Any, what: str | Callable[[], str] = _DEFAULT, **kwargs: Any) -> None:
        dict.__init__(self, *args, **kwargs)
        self._message = what

    def _refuse(self, action: str) -> TypeError:
        what = getattr(self, "_message", None) or self._what
        what = what if isinstance(what, str) else what()
        return TypeError(f"cannot {action}: {what}")

    def __setitem__(self, key: Any, value: Any) -> None:
        raise self._refuse(f"set {key!r}")

    def __delitem__(self, key: Any) -> None:
        raise self._refuse(f"delete {key!r}")

    def __ior__(self, other: Any) -> ReadOnlyDict:
        raise self._refuse("update it with |=")

    def update(self, *args: Any, **kwargs: Any) -> None:
        raise self._refuse("update it")

    def pop(self, key: Any, *default: Any) -> Any:
        raise self._refuse(f"pop {key!r}")

    def popitem(self) -> Any:
        raise self._refuse("pop an item")

    def setdefault(self, key: Any, default: Any = None) -> Any:
        raise self._refuse(f"setdefault {key!r}")

    def clear(self) -> None:
        raise self._refuse("clear it")

    def copy(self) -> dict:
        """A plain, changeable ``dict`` of the same items (what ``dict.copy`` gives)."""
        return dict(self)

    def __reduce__(self) -> tuple:
        # dict subclasses unpickle by setting items one by one, which is refused here
        return (_rebuild, (type(self), dict(self), getattr(self, "_message", None)))

    def __repr__(self) -> str:
        return dict.__repr__(self)


def _rebuild(cls: type, items: dict, what: str | Callable[[], str] | None) -> ReadOnlyDict:
    if what is None:
        return cls(items)
    return cls(items, what=what)


def read_only(mapping: Any, what: str | Callable[[], str]) -> Any:
    """``mapping`` as a :class:`ReadOnlyDict` when it is a plain ``dict``; anything else as is.

    Example:
        >>> type(read_only({"a": 1}, "shared")).__name__, read_only((1, 2), "shared")
        ('ReadOnlyDict', (1, 2))
    """
    return ReadOnlyDict(mapping, what=what) if type(mapping) is dict else mapping


_TERMS = (
    "an Assignment's terms are read-only: assign and assign_many return the objects their "
    "cache keeps, so an edit would change every later result for this molecule; copy "
    "them first, {section: dict(terms) for section, terms in assignment.terms.items()}"
)


class _Terms(ReadOnlyDict):
    """What an Assignment's terms are made of: built by ``dict``'s own ``__init__`` (the
    labelling path makes one per molecule and section)."""

    __slots__ = ()
    _what = _TERMS
    __init__ = dict.__init__  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        # packed sections unpickle as plain dicts: read-only again, as the original
        return (read_only_terms, (dict(self),))


def other_spelling(key: Any, improper: bool) -> Any:
    """The key a term is stored under when ``key`` names it in another atom order, or None.

    The OpenFF toolkit's ``label_molecules`` dicts (``ValenceDict``, ``ImproperDict``)
    read a bond, angle or torsion by either direction and an improper by any order of
    its three outer atoms; an Assignment stores one order (:func:`~tying.chem.terms.
    valence_key`, :func:`~tying.chem.terms.improper_key`). Before stop 59 the other
    orders were a bare KeyError, and ``(j, i) in assignment.bonds`` was False and
    ``.get((j, i))`` None for a bond the molecule has, with no error.

    Example:
        >>> other_spelling((2, 1, 0), False), other_spelling((3, 1, 0, 2), True)
        ((0, 1, 2), (0, 1, 2, 3))
    """
    if type(key) is not tuple or len(key) < 2:
        return None
    if improper:
        if len(key) != 4:
            return None
        try:
            a, c, d = sorted((key[0], key[2], key[3]))
        except TypeError:  # atoms that do not compare: no term of this molecule
            return None
        return (a, key[1], c, d)
    return key[::-1]


def as_key(key: Any) -> Any:
    """An unhashable atom sequence (a list, a NumPy array) as the tuple the toolkit reads it
    as; anything else as is.

    The toolkit's ``ValenceDict`` / ``ImproperDict`` take ``tuple(key)``, so
    ``labels["Bonds"][[0, 1]]`` reads a bond there; here it was a bare ``TypeError:
    unhashable type: 'list'`` (stop 60).

    Example:
        >>> as_key([1, 0]), as_key((1, 0)), as_key("ab")
        ((1, 0), (1, 0), 'ab')
    """
    if isinstance(key, (tuple, str, int)) or getattr(type(key), "__hash__", None) is not None:
        return key
    try:
        return tuple(key)
    except TypeError:  # not a sequence either: let the lookup name it
        return key


class _TermKeys(KeysView):
    """``keys()`` of a section: ``in`` reads a term by any atom order, as the mapping
    does (the toolkit's ``labels["Bonds"].keys()`` is such a view; ``(2, 1) in
    a.bonds.keys()`` was False here for a stored ``(1, 2)``, stop 60)."""

    __slots__ = ()

    def __iter__(self) -> Any:
        return dict.__iter__(self._mapping)

    def __reversed__(self) -> Any:
        return reversed(dict.keys(self._mapping))

    def __repr__(self) -> str:
        return f"dict_keys({list(self)!r})"


class _TermItems(ItemsView):
    """``items()`` of a section: ``(key, parameter) in items`` reads the key as ``in`` does."""

    __slots__ = ()

    def __iter__(self) -> Any:
        return iter(dict.items(self._mapping))

    def __reversed__(self) -> Any:
        return reversed(dict.items(self._mapping))

    def __repr__(self) -> str:
        return f"dict_items({list(self)!r})"


class _AnyOrder(dict):
    """A section's ``{term key: value}`` read as the toolkit's ``ValenceDict`` /
    ``ImproperDict`` read: a term is found under any atom order that names it
    (:func:`other_spelling`), given as a tuple or as a list (:func:`as_key`), in ``keys()``
    and ``items()`` too; iteration, ``len`` and ``==`` see the stored keys only."""

    __slots__ = ()
    _improper = False

    def __getitem__(self, key: Any) -> Any:
        try:
            return dict.__getitem__(self, key)  # a miss goes to __missing__
        except TypeError:  # unhashable: a list or array of atoms, as the toolkit takes
            tupled = as_key(key)
            if tupled is key:
                raise
            return dict.__getitem__(self, tupled)

    def __missing__(self, key: Any) -> Any:  # dict.__getitem__ calls it on a miss only
        other = other_spelling(key, self._improper)
        if other is None or other == key or not dict.__contains__(self, other):
            raise KeyError(key)
        return dict.__getitem__(self, other)

    def __contains__(self, key: Any) -> bool:
        key = as_key(key)
        if dict.__contains__(self, key):
            return True
        other = other_spelling(key, self._improper)
        return other is not None and dict.__contains__(self, other)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def keys(self) -> _TermKeys:  # type: ignore[override]
        return _TermKeys(self)

    def items(self) -> _TermItems:  # type: ignore[override]
        return _TermItems(self)


class _SectionTerms(_AnyOrder, _Terms):
    """One section's ``{term key: parameter}`` of an Assignment: read-only, and read in
    any atom order (:class:`_AnyOrder`)."""

    __slots__ = ()

    def __reduce__(self) -> tuple:
        # as its own kind: unpickled as the outer mapping it lost the other orders
        return (type(self), (dict(self),))


class TermIds(_AnyOrder):
    """``Assignment.ids(section)``: ``{term key: parameter id}``, a plain, changeable dict
    read in any atom order as the section is (stop 60: ``a.ids("Bonds").get((2, 1))``
    was None, and ``[(2, 1)]`` a KeyError, for a bond ``a.bonds[(2, 1)]`` reads).

    Example:
        >>> ids = TermIds({(1, 2): "b1"})
        >>> ids[(2, 1)], [2, 1] in ids, ids == {(1, 2): "b1"}
        ('b1', True, True)
    """

    __slots__ = ()

    @classmethod
    def of(cls, terms: Any, improper: bool) -> TermIds:
        """The ids of one section's ``{key: parameter}``; impropers read as impropers."""
        out = (_ImproperIds if improper else cls)()
        dict.update(out, ((k, p.id) for k, p in terms.items()))
        return out

    def __reduce__(self) -> tuple:
        return (type(self), (dict(self),))

    # Written as read (review of stop 60): ``ids[(2, 1)] = "mine"`` for a bond stored as
    # ``(1, 2)`` added a second entry (9 keys for 8 bonds; ``ids[(1, 2)]`` still the old
    # id, ``ids[(2, 1)]`` the new one), and ``pop``/``del`` of ``(2, 1)`` were a KeyError
    # for a key ``[]`` reads. A write goes to the stored spelling, as the toolkit's
    # ValenceDict / ImproperDict store one spelling per term.
    def _stored(self, key: Any) -> Any:
        key = as_key(key)
        if dict.__contains__(self, key):
            return key
        other = other_spelling(key, self._improper)
        return other if other is not None and dict.__contains__(self, other) else key

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, self._stored(key), value)

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, self._stored(key))

    def pop(self, key: Any, *default: Any) -> Any:
        return dict.pop(self, self._stored(key), *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return dict.setdefault(self, self._stored(key), default)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        pairs = ((k, other[k]) for k in other.keys()) if hasattr(other, "keys") else other
        for key, value in pairs:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def __ior__(self, other: Any) -> TermIds:
        self.update(other)
        return self

    def copy(self) -> TermIds:
        return type(self)(dict(self))


class _ImproperIds(TermIds):
    __slots__ = ()
    _improper = True


class _ImproperTerms(_SectionTerms):
    __slots__ = ()
    _improper = True


def read_only_terms(terms: Any) -> Any:
    """An Assignment's ``{section: {term key: parameter}}``, read-only at both levels.

    Packed sections (:class:`~tying.chem.packed.PackedTerms`) are read-only already and
    kept as they are; a mapping already read-only at both levels is returned as is.
    Each section's plain dict is put in key order, as the toolkit's ``label_molecules``
    gives its dicts (packed sections iterate in key order too).

    Example:
        >>> t = read_only_terms({"Bonds": {(0, 1): "b1"}})
        >>> t == {"Bonds": {(0, 1): "b1"}}, read_only_terms(t) is t, t["Bonds"][(1, 0)]
        (True, True, 'b1')
    """
    # a copy (dataclasses.replace) of an Assignment made before keeps its terms
    out = terms if type(terms) is _Terms else _Terms(terms)
    for section, t in out.items():  # an unpickled one may hold plain dicts inside
        if type(t) is dict:
            # In key order, as the OpenFF toolkit's label_molecules dicts: the labelling
            # paths build them in other orders (assign and assign_many iterated one
            # molecule's terms differently; stop 57)
            kind = _ImproperTerms if section == "ImproperTorsions" else _SectionTerms
            dict.__setitem__(out, section, kind(_in_key_order(t)))
    return out


def _in_key_order(terms: dict) -> Any:
    try:
        return sorted(terms.items(), key=_KEY)
    except TypeError:  # keys that do not compare (a hand-made Assignment): as given
        return terms


_KEY = operator.itemgetter(0)
