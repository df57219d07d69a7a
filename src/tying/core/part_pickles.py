"""A pickled piece of a tied model whose tie's source was not pickled with it: refused.

``pickle.dumps(model[1])`` or ``torch.save(model.decoder, f)`` of a piece holding a tied
slot whose source lies outside the piece pickles the slot's source and its anchor, so the
loaded piece read a hidden private copy of the whole model that its ``parameters()``,
optimizers and ``state_dict()`` do not hold: three SGD steps moved the tied weight by
exactly 0.0, with no error (stop 38). ``copy.deepcopy`` of such a piece is refused (see
``part_copies``); pickling could not be, because pickle does not say what it was asked to
pickle. Unpickling does: a module whose contents are still being unpickled (its
``__dict__`` still empty) when a slot inside it is rebuilt is one of the objects the pickle
was made of, so the highest such module above the tied one is the piece. Two cases:

- the module the plan was applied to is itself still being unpickled: the whole model was
  pickled (``torch.save(model)``), nothing to check;
- it was rebuilt inside the slot (only the tie brought it along): the piece is the highest
  module on the way down that is still being unpickled. When the source lies under it,
  the piece holds its source (``model.decoder`` with both ends): nothing to check.

Otherwise the source may still have been pickled next to the piece (``model[0:3]``, a new
``nn.Sequential`` of the model's children, or ``[model[0], model[1]]``): then something
besides the hidden model holds the source module. That is only known once the load is
over, so the slot's first read looks (once) at who refers to the source module and the
modules above it, and refuses when nothing but the hidden copy of the model and its ties
does.
"""

from __future__ import annotations

import gc
import sys
import types
from typing import TYPE_CHECKING

from torch import nn

from tying.core.errors import TieError

if TYPE_CHECKING:
    from tying.core.slots import Slot


def _being_unpickled(module) -> bool:
    # pickle makes an object empty (cls.__new__), unpickles its contents, then sets them
    return isinstance(module, nn.Module) and "_modules" not in module.__dict__


def piece_without_source(slot: Slot) -> str | None:
    """At unpickling: the path of the pickled piece when the slot's source lies outside it
    (to be checked at the first read), else None."""
    if slot.anchor is None or not slot.paths[1]:
        return None
    links = slot._links()
    root = links[0][0]
    if _being_unpickled(root):
        return None  # the whole model (or more) was pickled
    mod, names = root, slot.paths[0].split(".") if slot.paths[0] else []
    for i, name in enumerate(names):
        mod = mod._modules.get(name) if isinstance(mod, nn.Module) else None
        if mod is None:
            return None  # moved since the tie was made: a read names what broke
        if _being_unpickled(mod):
            if any(held is mod for _, _, held in links):
                return None  # the piece holds its tie's source
            return ".".join(names[: i + 1])
    return None  # no module above it is being unpickled: the slot was pickled alone


def check_unpickled_piece(slot: Slot, module: nn.Module, piece: str) -> None:
    """At the first read of a slot flagged by :func:`piece_without_source`: refuse when
    nothing but the hidden copy of the model (and ties) holds the tie's source module."""
    from tying.core.slots import _name_in

    links = slot._links()
    for i in range(-1, len(links)):  # the model the plan was applied to, down to the source
        if _held_elsewhere(links, i):
            return  # pickled next to the piece (model[0:3], [model[1], model]): held
    target = ".".join(p for p in (slot.paths[0], _name_in(module, slot)) if p)
    raise TieError(
        f"{target} was unpickled (pickle.loads / torch.load) as part of {piece!r}, a part of "
        f"a tied model, without its tie's source {slot.paths[1]} (via {slot.relation!r}), "
        f"which lies outside {piece!r}: it would read a hidden private copy of the whole "
        f"model, which its parameters(), optimizers, state_dict() and tying.save do not see "
        f"(training it would never update that weight). Pickle the module the plan was "
        f"applied to (torch.save(model)); for a standalone {piece!r} with weights of its "
        f"own, untie a copy first: c = copy.deepcopy(model); tying.untie(c); then pickle "
        f"c.{piece}"
    )


def _held_elsewhere(links: tuple, i: int) -> bool:
    """Whether anything besides the hidden model and its ties holds the module on the way
    down to the source (``i``: the link's child; -1: the module the plan was applied to)."""
    obj = links[0][0] if i < 0 else links[i][2]
    known, refs = _hidden_holders(links[0][0], obj)
    for r in gc.get_referrers(obj):
        if id(r) in known:
            continue
        if isinstance(r, types.MethodType) and r.__self__ is obj:
            # a bound method of the module itself: a hook it registered on itself (HF
            # models do), which came along with it and holds nothing else
            refs += 1
            continue
        return True
    # a holder gc does not list (a function's local variable: enc, dec = torch.load(f)),
    # less the references of this frame (obj) and of the call, measured on this
    # interpreter (3.14 may borrow the call's reference: a fixed 2 would over-subtract)
    return sys.getrefcount(obj) - _LOCAL_AND_CALL > refs


def _local_and_call() -> int:
    """What ``sys.getrefcount`` counts for an object held by one local variable alone."""
    obj = object()
    return sys.getrefcount(obj)


_LOCAL_AND_CALL = _local_and_call()


def _hidden_holders(root: nn.Module, src: nn.Module) -> tuple[set[int], int]:
    """The ids of the objects of the hidden model (and its ties) that may refer to ``src``
    (a module on the way down to a tie's source), and how many references to it they
    hold. (A function of its own, so that no loop variable left holding ``src`` is
    counted; and no generator, whose cell would hold it too.)"""
    from tying.core.slots import slots_of

    known: set[int] = set()
    refs = 0
    for m in root.modules():
        known.add(id(m._modules))
        for v in m._modules.values():
            refs += v is src
        for s in slots_of(m).values():
            known.update((id(s), id(s.__dict__), id(s.anchor)))
            refs += s.source_module is src
            for link in s._links():
                known.add(id(link))
                refs += (link[0] is src) + (link[2] is src)
    return known, refs
