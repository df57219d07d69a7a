"""The one rule resolver: ordered rules over named slots, the last matching rule wins.

Every package states its ties in the same vocabulary (DESIGN.md): ordered
:func:`tying.share` / :func:`tying.free` rules whose glob targets match
**slots** (``"decoder.3.k_proj.weight"``, ``"means.4"``, a SMIRKS match), each
``share`` naming the slot it reads with ``like=`` (a pattern taking the
target's captures, a mapping or a callable). This module resolves such rules
and nothing else, so the same mistake gets the same :class:`~tying.TieError`,
worded the same way, in :class:`tying.Plan` (module paths), HMM state ties and
SMIRNOFF assignment:

    rule <i> <rule>: <what is wrong, with the offending slot>; <the fix>

It imports neither torch nor NumPy: the NumPy-only packages use it freely.
Rules are read by duck typing (``target``, ``like``, ``kind``), so any object
with those attributes works.

Example:
    >>> from tying.core.rules import share, free
    >>> slots = ["means.0", "means.1", "means.2", "covars.0", "covars.1", "covars.2"]
    >>> won = resolve([share("means.*", like="means.0"), free("means.2")], slots)
    >>> {slot: source for slot, (_, source) in won.items()}
    {'means.0': None, 'means.1': 'means.0', 'means.2': None}
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from tying.core.errors import TieError
from tying.core.patterns import Pattern

__all__ = [
    "check_cycles",
    "closest",
    "last_match_wins",
    "match",
    "resolve",
    "roots",
    "rule_error",
    "source_for",
]

R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


def rule_error(index: int, rule: Any, message: str) -> TieError:
    """The error of rule ``index``: ``rule <i> <rule>: <message>``.

    Example:
        >>> from tying.core.rules import share
        >>> str(rule_error(2, share("a", like="b"), "no such slot 'b'; check the name"))
        "rule 2 share('a', like='b'): no such slot 'b'; check the name"
    """
    return TieError(f"rule {index} {rule!r}: {message}")


def closest(name: str, candidates: Iterable[str]) -> str:
    """``"; closest: <name>"`` for the nearest candidate, or ``""`` when none is near.

    Example:
        >>> closest("means.9", ["means.0", "covars.0"])
        '; closest: means.0'
    """
    near = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; closest: {near[0]}" if near else ""


def source_for(index: int, rule: Any, slot: str, captures: Sequence[str]) -> str | None:
    """The slot that ``slot`` reads under ``rule`` (None when the rule names no source).

    Args:
        index: the rule's position (for the error message).
        rule: a rule with ``target`` and ``like``.
        slot: the matched slot.
        captures: what the target's wildcards captured from ``slot``.

    Returns:
        The source slot's name, or None for ``like=None``.

    Raises:
        TieError: when ``like`` has a different number of wildcards than the
            target captured, a mapping lacks ``slot``, or a callable returns a non-str.

    Example:
        >>> from tying.core.rules import share
        >>> source_for(0, share("dec.*.w", like="enc.*.w"), "dec.3.w", ("3",))
        'enc.3.w'
    """
    like = rule.like
    if like is None:
        return None
    if isinstance(like, str):
        pattern = Pattern(like)
        if not pattern.wildcards:
            return like
        if len(pattern.wildcards) != len(captures):
            raise rule_error(
                index,
                rule,
                f"ambiguous pairing: like={like!r} has {len(pattern.wildcards)} wildcard(s) but "
                f"{rule.target!r} captured {len(captures)} from {slot!r}; give as many wildcards "
                f"on both sides, or pass like= a mapping or a callable",
            )
        return pattern.substitute(tuple(captures))
    if isinstance(like, Mapping):
        if slot not in like:
            # stop 60: "add it" did not say with what, and the path left out is most often
            # the source itself (share("l.*.weight", like={"l.1.weight": "l.0.weight", ...}))
            raise rule_error(
                index,
                rule,
                f"the like= mapping has no entry for matched path {slot!r}: like= must name a "
                f"source for every path the target matches; add {slot!r}: <its source path> "
                f"({_itself(rule, slot, f'maps to itself: {{{slot!r}: {slot!r}}}')}), or "
                f"narrow the target to the paths the mapping names",
            )
        source = like[slot]
    else:
        try:
            source = like(slot)
        except Exception as err:
            # stop 58: a like=lambda p: table[p] missing a path failed as a bare KeyError
            # ('l.0.weight'), naming neither the rule nor that its target matched that path
            if hasattr(err, "add_note"):  # Python >= 3.11
                err.add_note(
                    f"raised by like= of rule {index} {rule!r} for the matched path {slot!r}: "
                    f"like= must return a source path for every path the target matches (a "
                    f"path that reads itself may return itself, or narrow the target); "
                    f"nothing was changed"
                )
            raise
    if not isinstance(source, str):
        raise rule_error(
            index,
            rule,
            f"like= returned {source!r} for {slot!r}; expected a path str for every path the "
            f"target matches ({_itself(rule, slot, f'may return itself: {slot!r}')}), or "
            f"narrow the target",
        )
    return source


def _itself(rule: Any, slot: str, how: str) -> str:
    """How a path the rule matches is left reading itself: given as its own source, which
    a relation other than ``Same`` reads as a cycle unless a later ``free`` takes it out
    (the last matching rule wins)."""
    relation = getattr(rule, "relation", None)
    tail = (
        ""
        if relation is None or type(relation).__name__ == "Same"
        else f", then take it out with a later tying.free({slot!r}) (the last matching rule "
        f"wins), as {relation!r} of a path to itself is a cycle"
    )
    return f"a path that reads itself {how}{tail}"


def match(
    index: int, rule: Any, slots: Iterable[str], *, what: str = "slot", hint: str = ""
) -> list[tuple[str, tuple[str, ...]]]:
    """Every slot the rule's target matches, with its captures, in slot order.

    Raises:
        TieError: when the target matches nothing (naming the closest slot).

    Example:
        >>> from tying.core.rules import free
        >>> match(0, free("means.*"), ["means.0", "covars.0"])
        [('means.0', ('0',))]
    """
    slots = list(slots)
    pattern = Pattern(rule.target)
    found = []
    for slot in slots:
        caps = pattern.match(slot)
        if caps is not None:
            found.append((slot, caps))
    if not found:
        raise rule_error(
            index,
            rule,
            f"pattern {rule.target!r} matches no {what}{hint}{closest(rule.target, slots)}",
        )
    return found


def resolve(
    rules: Sequence[Any],
    slots: Sequence[str],
    *,
    what: str = "slot",
    hint: str = "",
    check: Callable[[int, Any, str, str], None] | None = None,
) -> dict[str, tuple[int, str | None]]:
    """Resolve ordered rules over ``slots``: the last matching rule wins for each slot.

    Args:
        rules: ``share``/``free`` rules (anything with ``target``, ``like``, ``kind``).
        slots: every slot the model has, e.g. ``"means.3"``.
        what: how the slots are called in messages (``"HMM slot"``, ``"parameter"``).
        hint: appended after ``what`` where a message names it, e.g. how slots are named.
        check: called as ``check(index, rule, slot, source)`` for every tie a rule
            makes, to add a package's own constraints (raise :class:`TieError`).

    Returns:
        ``{slot: (index of the winning rule, source or None)}`` for every slot some
        rule matched; ``None`` means the slot keeps its own value (``free``, or a
        slot tied to itself). Slots no rule matched are absent.

    Raises:
        TieError: a rule that matches nothing, a source that is not a slot, or a
            cycle of ties, each naming the rule, the slot and the fix.

    Example:
        >>> from tying.core.rules import share
        >>> won = resolve([share("b", like="a")], ["a", "b"])
        >>> won
        {'b': (0, 'a')}
    """
    known = set(slots)
    won: dict[str, tuple[int, str | None]] = {}
    for index, rule in enumerate(rules):
        found = match(index, rule, slots, what=what, hint=hint)
        for slot, caps in found:
            if rule.kind == "free":
                won[slot] = (index, None)
                continue
            source = source_for(index, rule, slot, caps)
            if source is None:
                won[slot] = (index, None)
                continue
            if source not in known:
                raise rule_error(
                    index,
                    rule,
                    f"{slot!r} would read {source!r}, which is not a {what} of this "
                    f"model{hint}{closest(source, slots)}",
                )
            if source == slot:
                earlier = won.get(slot)
                if earlier is not None and earlier[1] is not None:
                    raise self_override_error(
                        index, rule, slot, earlier[0], rules[earlier[0]], earlier[1]
                    )
            elif check is not None:
                check(index, rule, slot, source)
            won[slot] = (index, None if source == slot else source)
        if rule.kind != "free" and rule.like is not None:
            refuse_all_self(index, rule, [(slot, won[slot][1] or slot) for slot, _ in found])
    check_cycles(
        {slot: source for slot, (_, source) in won.items()},
        {slot: (index, rules[index]) for slot, (index, _) in won.items()},
    )
    return won


def self_override_error(
    index: int, rule: Any, slot: str, earlier: int, earlier_rule: Any, source: str
) -> TieError:
    """A rule that matches ``slot`` to itself after rule ``earlier`` tied it to ``source``.

    Stop 35: ``[share("l.0", like="src"), share("l.*", like="l.0")]`` kept ``l.0`` tied to
    ``src`` in a :class:`~tying.Plan` while :func:`resolve` (HMM, fit) gave ``l.0`` its own
    value, dropping rule 0 with no error: "reads itself" can mean either. It is refused.
    """
    return rule_error(
        index,
        rule,
        f"{slot!r} reads itself under this rule (a group tied to its first member), but "
        f"rule {earlier} {earlier_rule!r} ties it to {source!r}, so it is unclear which "
        f"holds; to keep that tie, move rule {earlier} after this one; to let {slot!r} keep "
        f"its own value, add tying.free({slot!r}) before this rule",
    )


def refuse_all_self(index: int, rule: Any, pairs: Sequence[tuple[str, str | None]]) -> None:
    """Refuse a ``share`` rule without wildcards under which every slot reads itself.

    ``pairs`` are the rule's ``(slot, source)``, whatever ``like=`` is (a str, a mapping, a
    callable). Stop 35: ``share("lm_head.weight",
    like="lm_head.weight")`` (a typo for the source) tied nothing and raised nothing. A
    wildcard target (``share("l.*", like="l.0")`` on a stack of one layer, or with a
    mapping that sends each slot of a one-member group to itself) is the degenerate case
    of a real tie and stays allowed.
    """
    if rule.kind == "free" or getattr(rule, "like", None) is None or Pattern(rule.target).wildcards:
        return
    if pairs and all(slot == source for slot, source in pairs):
        slot = pairs[0][0]
        raise rule_error(
            index,
            rule,
            f"every slot it matches reads itself ({slot!r} <- {slot!r}), so it ties nothing; "
            f"like= names the source to read, another slot than the target",
        )


def check_cycles(
    source_of: Mapping[str, str | None],
    rule_of: Mapping[str, tuple[int, Any]] | None = None,
) -> None:
    """Raise when following sources from some slot comes back to it.

    Args:
        source_of: ``{slot: the slot it reads, or None}``.
        rule_of: ``{slot: (index, rule)}`` of the rule that made each tie, so the
            message can name the rule that closes the cycle.

    Raises:
        TieError: ``[rule <i> <rule>: ]cycle of ties a -> b -> a: ...`` with the fix.

    Example:
        >>> check_cycles({"a": "b", "b": None})
    """
    done: set[str] = set()
    for start in source_of:
        chain: list[str] = []
        slot: str | None = start
        while slot is not None and slot not in done:
            if slot in chain:
                cycle = chain[chain.index(slot) :] + [slot]
                where = ""
                if rule_of is not None and chain[-1] in rule_of:
                    index, rule = rule_of[chain[-1]]
                    where = f"rule {index} {rule!r}: "
                raise TieError(
                    f"{where}cycle of ties {' -> '.join(cycle)}: every tie needs a source that "
                    f"is not tied back to it; let one slot of the cycle keep its own value "
                    f"(tying.free) or drop one of these rules"
                )
            chain.append(slot)
            slot = source_of.get(slot)
        done.update(chain)


def roots(source_of: Mapping[str, str | None], slots: Iterable[str]) -> dict[str, str]:
    """The slot each slot finally reads (itself when it reads nothing).

    Example:
        >>> roots({"c": "b", "b": "a"}, ["a", "b", "c"])
        {'a': 'a', 'b': 'a', 'c': 'a'}
    """
    check_cycles(source_of)
    out = {}
    for slot in slots:
        root = slot
        while source_of.get(root) is not None:
            root = source_of[root]
        out[slot] = root
    return out


def last_match_wins(rules: Iterable[R], keys_of: Callable[[R], Iterable[K]]) -> dict[K, R]:
    """Resolve ordered rules: each key gets the last rule whose matches include it.

    The form SMIRNOFF assignment uses: a parameter's SMIRKS matches atom tuples,
    and the last parameter in the section that matches a tuple assigns it.

    Args:
        rules: the rules, most general first.
        keys_of: the keys a rule matches.

    Returns:
        ``{key: winning rule}``.

    Example:
        >>> rules = [("generic", {1, 2, 3}), ("specific", {2})]
        >>> won = last_match_wins(rules, lambda r: r[1])
        >>> {k: r[0] for k, r in sorted(won.items())}
        {1: 'generic', 2: 'specific', 3: 'generic'}
    """
    resolved: dict[K, R] = {}
    for rule in rules:
        for key in keys_of(rule):
            resolved[key] = rule
    return resolved
