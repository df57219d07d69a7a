"""Each tied slot's source, recorded in the state dict and checked on a strict load (stop 62).

The stop-59 record (:mod:`tying.core.tie_record`) lists the tied slots, and since stop 62
their relations, but not where each slot reads from. ``share("b.weight", like="a.weight")``
and ``share("b.weight", like="c.weight")`` give the same keys (``a.*``, ``b.bias``,
``c.*``) and the same slot list, so ``load_state_dict`` loaded the one model's state dict
into the other with no error and ``b`` read ``c.weight`` where the saved model read
``a.weight`` (1.80 off). ``tying.load`` of the same model's file refused.

The record now also lists, under :data:`SOURCES_METADATA_KEY`, ``"<slot> <source>"`` for
every tied slot: the source's path relative to the module whose state dict it is
(canonical, so a part's state dict, a prefix and ``torch.compile``'s ``_orig_mod`` agree),
or :data:`OUTSIDE` when the source lies outside that module (a part's state dict whose
tie reads from a sibling). A strict load whose record names other sources is refused
before anything is copied. Two chains that end at the same owner through the same
relations agree (``c`` like ``b`` like ``a`` against ``c`` like ``a``); a slot whose source
is outside on either side is not compared. A record without the key (saved before stop
62, or through a route that keeps only the slot list) loads as before.
"""

from __future__ import annotations

import operator
import weakref

from torch import nn

from tying.core.errors import TieError
from tying.core.outside import canonical

__all__ = ["OUTSIDE", "SOURCES_METADATA_KEY", "check", "record"]

#: the state-dict metadata key listing ``"<slot> <source>"`` for every tied slot
SOURCES_METADATA_KEY = "tying.sources"
#: the source recorded for a slot whose source lies outside the recorded module
OUTSIDE = "<outside>"
_SAME = '{"type": "Same"}'


def record(visited: list, module: nn.Module | None = None) -> list[str]:
    """``"<slot> <source>"`` for every slot tied under the walked module, sorted.

    Args:
        visited: the ``(path, module)`` pairs of :func:`tying.core.tie_record.tied_slots`'s
            walk (every module under the recorded one, once, first path).
        module: the module walked, to memoise the record on (every ``state_dict()`` writes
            it): kept while no slot anywhere is installed or removed (the slots'
            generation) and the walk meets the same modules at the same paths. None: not
            memoised.

    Returns:
        A sorted list of strings; the source path is canonical and relative to the module
        the walk started at, or :data:`OUTSIDE`.

    Raises:
        Nothing.

    Example:
        >>> import tying
        >>> from torch import nn
        >>> m = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)})
        >>> _ = tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
        >>> m.state_dict()._metadata[""][SOURCES_METADATA_KEY]
        ['b.weight a.weight']
    """
    from tying.core.slots import LAST_GENERATION

    if module is None:
        return _record(visited)
    key = (LAST_GENERATION[0], list(map(_PATH, visited)), list(map(id, map(_MODULE, visited))))
    try:
        held = _MEMO.get(module)
    except TypeError:  # a module that takes no weak reference
        return _record(visited)
    if held is not None and held[0] == key:
        return list(held[1])
    out = _record(visited)
    _MEMO[module] = (key, tuple(out))
    return out


# the record per module walked; ids in the key are safe to hold: a source module that a
# slot reads stays alive through the slot, so its id is not reused while it matters
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PATH, _MODULE = operator.itemgetter(0), operator.itemgetter(1)


def _record(visited: list) -> list[str]:
    from tying.core.slots import SLOTS_ATTR

    index = None
    out: list[str] = []
    for path, mod in visited:
        names = mod.__dict__.get(SLOTS_ATTR)
        if not names:
            continue
        if index is None:  # built once, only for a module that ties something
            index = {id(m): p for p, m in visited}
        here = canonical(path)
        for name, slot in names.items():
            at = index.get(id(slot.source_module))
            if at is None:
                source = OUTSIDE
            else:
                source = canonical(f"{at}.{slot.source_name}" if at else slot.source_name)
            out.append(f"{here}.{name} {source}" if here else f"{name} {source}")
    out.sort()
    return out


def check(module: nn.Module, prefix: str, local_metadata, visited, relations) -> None:
    """Refuse a strict load whose record ties the same slots to other sources.

    Args:
        module: the recorded module being loaded (a plan's root or a part above one).
        prefix: ``module``'s prefix in the state dict (``""`` or ending in ``"."``).
        local_metadata: the record's metadata entry for ``module``
            (:func:`tying.core.tie_record._recorded_entry`: its own, FSDP's segments, or
            under ``module`` for a DDP state dict whose keys torch stripped).
        visited: the walk of :func:`tying.core.tie_record.tied_slots` over ``module``.
        relations: this model's ``"<slot> <relation spec>"`` list from the same walk.

    Returns:
        None.

    Raises:
        TieError: naming each slot with both sources and the fixes; nothing was loaded.

    Example:
        >>> import tying
        >>> from torch import nn
        >>> def model(like):
        ...     m = nn.ModuleDict({k: nn.Linear(2, 2) for k in "abc"})
        ...     return tying.Plan([tying.share("b.weight", like=like)]).apply(m) and m
        >>> try:  # load_state_dict calls check
        ...     model("c.weight").load_state_dict(model("a.weight").state_dict())
        ... except tying.TieError as err:
        ...     print(str(err).split("(")[1].split(")")[0])
        b.weight: saved like a.weight, this model like c.weight
    """
    from tying.core.tie_record import RELATIONS_METADATA_KEY, _shown, _strict_load

    theirs = (local_metadata or {}).get(SOURCES_METADATA_KEY)
    if not isinstance(theirs, (list, tuple)) or not _strict_load():
        return  # no record of sources: saved before stop 62, loads as before
    theirs = dict(_split(e) for e in theirs if isinstance(e, str))
    ours = dict(_split(e) for e in record(visited))
    saved_rel = (local_metadata or {}).get(RELATIONS_METADATA_KEY)
    saved_rel = dict(_split(e) for e in saved_rel or () if isinstance(e, str))
    our_rel = dict(_split(e) for e in relations)
    differ = [
        slot
        for slot in sorted(set(theirs) & set(ours))
        if OUTSIDE not in (theirs[slot], ours[slot])
        and _chain(theirs, saved_rel, slot) != _chain(ours, our_rel, slot)
    ]
    if not differ:
        return
    where = f"load_state_dict into {type(module).__name__}" + (
        f" at {prefix[:-1]!r}" if prefix else ""
    )
    shown = "; ".join(
        f"{slot}: saved like {theirs[slot]}, this model like {ours[slot]}" for slot in differ[:5]
    )
    rules = ", ".join(
        f"tying.share({slot!r}, like={theirs[slot]!r}"
        + (f", relation=tying.{_shown(saved_rel[slot])})" if slot in saved_rel else ")")
        for slot in differ[:5]
    )
    frees = ", ".join(f"tying.free({slot!r})" for slot in differ[:5])
    raise TieError(
        f"{where}: the state dict was saved from a model that ties the same slots to other "
        f"sources ({shown}{' ...' if len(differ) > 5 else ''}), so the load would pass on the "
        f"keys alone and these slots read another tensor than the saved model did. To get "
        f"the saved model, re-tie this one like it before loading: "
        f"tying.Plan([{rules}]).apply(model) (or tying.save the saved model and tying.load "
        f"the file into this one after tying.Plan([{frees}]).apply(model)). To "
        f"load these values into this model on purpose, keeping its own ties, call "
        f"model.load_state_dict(state_dict, strict=False) (torch then also stops checking "
        f"missing and unexpected keys) or load "
        f"a plain dict, which holds no record: model.load_state_dict(dict(state_dict)). "
        f"Nothing was loaded"
    )


def _chain(sources: dict, relations: dict, slot: str):
    """Where ``slot`` reads in the end: the last source that is not itself a tied slot,
    with the relations met past the slot's own link (its own is the relation check's)."""
    seen = {slot}
    through = []
    at = sources[slot]
    while at in sources and at not in seen:
        seen.add(at)
        rel = relations.get(at, _SAME)
        if rel != _SAME:
            through.append(rel)
        at = sources[at]
    return at, tuple(through)


def _split(entry: str) -> tuple[str, str]:
    slot, _, rest = entry.partition(" ")
    return canonical(slot), rest if rest == OUTSIDE or rest.startswith("{") else canonical(rest)
