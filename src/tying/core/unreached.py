"""Optimizers over a tied module that leave out the source its slots read.

With a tie made by hand (``head.weight = embed.weight``), ``head.parameters()`` yields
the shared Parameter, so ``SGD(model.head.parameters())`` trains the head's weight. A
tied slot is no Parameter of its module (the source keeps its one owner), so the same
optimizer built after a Plan tie holds the head's bias alone: its steps train the bias,
the weight the head reads gets a gradient that nothing applies, and no error is raised
(stop 55). An optimizer built *before* the tie is caught by :mod:`tying.core.stale`.
Since stop 57 an optimizer given the generator ``model.head.parameters()`` holds the
source, as on the hand tie (:mod:`tying.core.part_walks`); this check still catches a
list the caller built (``list(model.head.parameters())``, a filtered selection).

Each commit indexes the own Parameters of every module that holds a slot (by ``id``,
checked against the module at a step: no weak reference to a Parameter is kept, since
``torch.utils.swap_tensors`` refuses a tensor that has one). The optimizer step pre-hook
of :mod:`tying.core.stale` calls :func:`unreached`: a step is refused when the optimizer
holds a Parameter of a tied module but not the Parameter one of its slots reads, while
that source requires grad, has a gradient, and no other optimizer holds it. An optimizer
over the whole model, or one next to another that trains the source, steps as before; a
source frozen with ``requires_grad_(False)`` is left untrained on purpose.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch
from torch import nn

from tying.core import slots as _slots
from tying.core.slots import slots_of

#: id(an own Parameter of a module holding a slot) -> weak references to such modules
_OWNERS: dict[int, list[weakref.ref]] = {}
#: id(module) -> (a weak reference to it, the ids it put in ``_OWNERS``)
_WATCHED: dict[int, tuple[weakref.ref, set[int]]] = {}
_LOCK = threading.RLock()  # a finalizer may run on this thread while the lock is held
#: bumped by every change of the index (a scan kept for an optimizer is then done again)
_GEN = [0]
#: optimizer -> (its key, the modules the scan examined, what it found): see unreached()
_SCANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def watching() -> bool:
    """Whether any tied module is indexed (the step hook has work to do)."""
    return bool(_OWNERS)


def watch(modules) -> None:
    """Index the own Parameters of each module in ``modules`` that holds a slot."""
    with _LOCK:
        _GEN[0] += 1
        for mod in modules:
            if not slots_of(mod):
                continue
            key = id(mod)
            entry = _WATCHED.get(key)
            if entry is None or entry[0]() is not mod:
                entry = (weakref.ref(mod), set())
                _WATCHED[key] = entry
                weakref.finalize(mod, _forget, key)
            ref, ids = entry
            for p in mod._parameters.values():
                if p is None or id(p) in ids:
                    continue
                ids.add(id(p))
                _OWNERS.setdefault(id(p), []).append(ref)


def _forget(key: int) -> None:
    with _LOCK:
        _GEN[0] += 1
        entry = _WATCHED.pop(key, None)
        if entry is None:
            return
        ref, ids = entry
        for pid in ids:
            refs = _OWNERS.get(pid)
            if refs is None:
                continue
            refs[:] = [r for r in refs if r is not ref and r() is not None]
            if not refs:
                del _OWNERS[pid]


def _physical(slot) -> torch.Tensor | None:
    """The Parameter a slot reads in the end (through a chain of slots), or None when it
    is the slot's own storage (its module holds it) or cannot be told."""
    mod, name = slot.source_module, slot.source_name
    for _ in range(1000):  # a chain is acyclic (plans refuse cycles): bounded anyway
        nxt = slots_of(mod).get(name)
        if nxt is None:
            return mod._parameters.get(name)
        if "source" in nxt.storage:
            return mod._parameters.get(nxt.storage["source"])
        mod, name = nxt.source_module, nxt.source_name
    return None


def unreached(optimizer) -> list[tuple[str, str, nn.Parameter, nn.Module, Any]]:
    """``(slot path, source path, source, module, slot)`` for each slot of a tied module
    whose own Parameters ``optimizer`` holds while it leaves out the trained source that
    slot reads. Another optimizer's hold is asked by the caller.

    The scan of the optimizer's Parameters is kept per optimizer and done again only when
    its parameter groups (their lists and lengths), the index (a commit, a copy, a module
    freed) or any tie (the last slots generation given) changed: a step then costs a look
    at those, not a walk over every Parameter and slot (a first version walked them at
    every step: 1.7x the step of SGD over 1,200 small Parameters, 400 of them tied).
    """
    key = (
        _GEN[0],
        _slots.LAST_GENERATION[0],
        tuple((id(g["params"]), len(g["params"])) for g in optimizer.param_groups),
    )
    try:
        hit = _SCANS.get(optimizer)
    except TypeError:  # an optimizer that cannot be weakly referenced: no cache
        hit = None
    if hit is None or hit[0] != key:
        hit = (key, _scan(optimizer))
        try:
            _SCANS[optimizer] = hit
        except TypeError:
            pass
    out = []
    for target, source, ref, name in hit[1]:
        mod = ref()
        slot = slots_of(mod).get(name) if mod is not None else None
        src = _physical(slot) if slot is not None else None
        if src is not None and src.requires_grad and src.grad is not None:
            out.append((target, source, src, mod, slot))
    return out


def _scan(optimizer) -> list:
    """The slots whose source ``optimizer`` leaves out: (slot path, source path, weak
    reference to the module, slot name). Whether the source is trained (requires grad,
    has a gradient) is asked at each step."""
    held: set[int] | None = None
    out: list = []
    seen: set[int] = set()

    for group in optimizer.param_groups:
        for p in group["params"]:
            refs = _OWNERS.get(id(p))
            if not refs:
                continue
            for ref in tuple(refs):
                mod = ref()
                if mod is None or id(mod) in seen:
                    continue
                if not any(v is p for v in mod._parameters.values()):
                    continue  # the id is another object's now
                seen.add(id(mod))
                if held is None:
                    held = {id(q) for g in optimizer.param_groups for q in g["params"]}
                for name, slot in slots_of(mod).items():
                    src = _physical(slot)
                    if (
                        src is None
                        or id(src) in held
                        or any(v is src for v in mod._parameters.values())
                    ):
                        continue
                    if not _built_from_a_module(slot, held):
                        continue  # a selection by the user (biases only): the hand tie's too
                    target = ".".join(x for x in (slot.paths[0], name) if x)
                    out.append((target, slot.paths[1] or slot.source_name, ref, name))
    return out


def _built_from_a_module(slot, held: set[int]) -> bool:
    """Whether ``held`` is exactly the Parameters of the tied module or of a module above
    it, as an optimizer built from ``module.parameters()`` holds (``SGD(model.head.
    parameters())``). A hand tie's ``head.parameters()`` yields the shared weight there, and
    the Plan tie's does not: that is the difference refused. An optimizer over a selection
    (every bias of the model, a BitFit fine-tune) leaves the source out with a hand tie too,
    and is not refused (found in review, stop 55: it was)."""
    links = slot._links() if slot.anchor else ()
    root = links[0][0] if links else slot.source_module
    parts = slot.paths[0].split(".") if slot.paths[0] else []
    for k in range(len(parts), -1, -1):
        try:
            module = root.get_submodule(".".join(parts[:k]))
        except AttributeError:
            continue
        if {id(p) for p in module.parameters()} == held:
            return True
    return False
