"""Optimizers built before a re-tie: refuse their step instead of training a stale copy.

When :meth:`tying.Plan.apply`, :func:`tying.untie` or :func:`tying.retie` gives a
slot new storage (a tie with a relation, a freed slot, an untied copy), the new
``nn.Parameter`` is not in any optimizer built before. Such an optimizer keeps
stepping the Parameter the slot used to read, and the new one is never trained:
no error, a silently wrong model.

Each commit records, for every Parameter it creates, the Parameter that slot read
before (its *predecessor*). A global optimizer step pre-hook
(``torch.optim.optimizer.register_optimizer_step_pre_hook``, installed on the first
such commit) refuses a step, before anything changes, when the optimizer holds a
predecessor but not its successor. An optimizer that never held the predecessor
(built afterwards, or over another part of the model) is left alone. Records go
away with their predecessor Parameter (a ``weakref.finalize``), so a model that
is rebuilt costs nothing, and a step costs one dictionary lookup per Parameter
while any record lives.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch import nn

from tying.core import unreached
from tying.core.errors import TieError
from tying.core.root_advice import holder_path

#: id(predecessor Parameter) -> [(weakref to its successor, the successor's description)]
_SUCCESSORS: dict[int, list[tuple[weakref.ref, str]]] = {}
#: id(successor Parameter) -> the keys of ``_SUCCESSORS`` whose lists name it, and the
#: reverse (key -> those ids), dropped with the key: a chain's earlier predecessors are
#: found by lookup, not by scanning every record (a scan per pair made building a
#: 1,024-block tied stack take 22 s, stop 52). No weak reference to a successor is kept
#: beyond its record's: ``torch.utils.swap_tensors`` refuses a tensor that has one.
_NAMED_BY: dict[int, set[int]] = {}
_NAMES: dict[int, set[int]] = {}
# re-entrant: any allocation under the lock may run the garbage collector, whose
# finalizers (``_forget``) take the lock again on the same thread; a plain Lock
# deadlocked there (the test suite hung in ``record``)
_LOCK = threading.RLock()
_HOOK = None


def record(pairs: list[tuple[torch.Tensor, nn.Parameter, str]]) -> list:
    """Note that each ``(old, new, what)``: ``new`` now holds what ``old`` gave a slot.

    Returns the entries added, for :func:`withdraw` when the change is rolled back.
    """
    pairs = [(old, new, what) for old, new, what in pairs if old is not new]
    added: list = []
    if not pairs:
        return added
    with _LOCK:
        for old, new, what in pairs:
            key = id(old)
            if key not in _SUCCESSORS:
                _SUCCESSORS[key] = []
                weakref.finalize(old, _forget, key)
            # a chain P0 -> P1 -> P2 (re-tied twice): an optimizer that holds P0 must want
            # P2 too, and P1's own record dies with P1 (nobody holds it), so P0 inherits
            # P2 now; otherwise that optimizer stepped P0 silently, training nothing
            # a snapshot: the collector may run a finalizer (_forget) on this thread
            # while the loop allocates, and it drops records from these sets (the fresh-
            # clone CI hit "Set changed size during iteration" here, stop 53)
            earlier = [
                k
                for k in tuple(_NAMED_BY.get(key, ()))
                if any(ref() is old for ref, _ in tuple(_SUCCESSORS.get(k, ())))
            ]
            for k in dict.fromkeys((key, *earlier)):
                entries = _SUCCESSORS.get(k)
                if entries is None:  # forgotten meanwhile: its predecessor is gone
                    continue
                entry = (weakref.ref(new), what)
                entries.append(entry)
                added.append(entry)
                _name(new, k)
        install_hook()
    return added


def install_hook() -> None:
    """Install the optimizer step pre-hook (once per process)."""
    global _HOOK
    with _LOCK:
        if _HOOK is None:
            from torch.optim.optimizer import register_optimizer_step_pre_hook

            _HOOK = register_optimizer_step_pre_hook(_refuse_stale_step)


def withdraw(added: list) -> None:
    """Take back the entries one :func:`record` added (its change was rolled back: the
    Parameters it named are not the model's, and a traceback that keeps them alive must
    not make an optimizer over the restored model refuse its step; stop 34)."""
    if not added:
        return
    ids = {id(entry) for entry in added}
    with _LOCK:
        for key, entries in list(_SUCCESSORS.items()):
            entries[:] = [e for e in entries if id(e) not in ids]
            if not entries:
                _SUCCESSORS.pop(key, None)
                _unindex(key)


def _name(new: nn.Parameter, key: int) -> None:
    """Index that the record ``key`` names ``new`` (until the record goes)."""
    _NAMED_BY.setdefault(id(new), set()).add(key)
    _NAMES.setdefault(key, set()).add(id(new))


def _unindex(key: int) -> None:
    """Drop the record ``key`` from the index (it was forgotten or emptied)."""
    for named in _NAMES.pop(key, ()):
        held = _NAMED_BY.get(named)
        if held is not None:
            held.discard(key)
            if not held:
                del _NAMED_BY[named]


def _forget(key: int) -> None:
    with _LOCK:
        _SUCCESSORS.pop(key, None)
        _unindex(key)


def _refuse_stale_step(optimizer, args, kwargs) -> None:
    watching = unreached.watching()
    if not _SUCCESSORS and not watching:
        return None
    _KNOWN.add(optimizer)
    if _SUCCESSORS:
        _refuse_stale(optimizer)
    if watching:
        _refuse_unreached(optimizer)
    return None


def _refuse_unreached(optimizer) -> None:
    """Refuse a step that trains a tied module but not the source its slot reads (see
    :mod:`tying.core.unreached`)."""
    left_out = [
        (target, source, mod, slot)
        for target, source, src, mod, slot in unreached.unreached(optimizer)
        if not _trained_elsewhere(optimizer, src)
    ]
    if left_out:
        # the source's path from the outermost module holding the plan's root: the advice
        # named it from that root, which a wrapped model's get_parameter refused (stop 59)
        held = holder_path(left_out[0][2], left_out[0][3])
        first = left_out[0][1] if held is None else f"{held[0]}.{left_out[0][1]}"
        model = (
            ""
            if held is None
            else f", model being the {type(held[1]).__name__} holding the "
            f"{type(held[2]).__name__} the plan was applied to at {held[0]!r}"
        )
        named = ", ".join(f"{s} (which {t} reads)" for t, s, _, _ in left_out[:5])
        raise TieError(
            f"{type(optimizer).__name__}.step refused: this optimizer trains a tied module "
            f"but would never train {named}{' ...' if len(left_out) > 5 else ''}: a tied "
            f"slot is no Parameter of its module, so module.parameters() leaves its source "
            f"out (with a tie made by hand it is in); add the source "
            f"(optimizer.add_param_group({{'params': [model.get_parameter({first!r})]}})"
            f"{model}), build the optimizer on model.parameters(), or set the source's "
            f"requires_grad=False to leave it untrained; nothing was changed by this step"
        )


def _refuse_stale(optimizer) -> None:
    missing = _missing(optimizer)
    for generation in (0, 2) if missing else ():
        # a successor may be garbage in a reference cycle that no collection has freed yet
        # (a temporary copy a re-tie replaced again, as tying.hf.resize_token_embeddings
        # makes): only a live one is missing, so collect before refusing (the refusal
        # came and went with the collector's timing); the young generation first, as
        # a full collection costs about 0.1 s in a process that imported transformers
        _collect(generation)
        missing = _missing(optimizer)
        if not missing:
            break
    if missing:
        # another optimizer may train them: one optimizer for the embeddings and one for the
        # rest, built before a tie (the rest's held the head's dropped weight, the
        # embeddings' trains what the head reads now), or one over the source alone built
        # after an untie next to one over the rest (stop 32: both were refused)
        missing = [
            (what, ref)
            for what, ref in missing
            if ref() is not None and not _trained_elsewhere(optimizer, ref())
        ]
    if missing:
        missing = [what for what, _ in missing]
        raise TieError(
            f"{type(optimizer).__name__}.step refused: this optimizer was built before the "
            f"model was re-tied (Plan.apply, tying.untie or tying.retie gave "
            f"{len(missing)} slot(s) new Parameters, or tied them to another slot's), so it still steps the Parameters those "
            f"slots used to read and would never train {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}; build the optimizer again on "
            f"model.parameters() after tying (or add the new Parameters with "
            f"optimizer.add_param_group, or set their requires_grad=False to leave them "
            f"untrained); nothing was changed by this step"
        )
    return None


def _collect(generation: int) -> None:
    import gc

    gc.collect(generation)


def _held(optimizer) -> set[int]:
    return {id(q) for g in optimizer.param_groups for q in g["params"]}


#: optimizers seen stepping while a record lives, asked first by _trained_elsewhere
_KNOWN: weakref.WeakSet = weakref.WeakSet()


def _trained_elsewhere(optimizer, param: nn.Parameter) -> bool:
    """Whether an optimizer other than ``optimizer`` holds ``param``.

    The optimizers seen stepping are asked first; then the lists that hold ``param`` are
    looked up (one pass over the live objects, only on the way to a refusal): one that is
    the ``"params"`` of a parameter group belongs to an optimizer (``add_param_group``
    keeps the group's dict and list), built but not stepped yet."""
    key = id(param)
    for other in list(_KNOWN):
        if other is not optimizer and key in _held(other):
            return True
    return _in_a_param_group(param)


def _in_a_param_group(param: nn.Parameter) -> bool:
    import gc

    lists = [r for r in gc.get_referrers(param) if type(r) is list]
    if not lists:
        return False
    return any(
        type(d) is dict and any(d.get("params") is held for held in lists)
        for d in gc.get_referrers(*lists)
    )


def _missing(optimizer) -> list[tuple[str, weakref.ref]]:
    """What each live successor of a Parameter ``optimizer`` holds, which it does not hold,
    serves, and a weak reference to it (a strong one would keep garbage alive through the
    collections that come before a refusal)."""
    held: set[int] | None = None
    missing: list[tuple[str, weakref.ref]] = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            successors = _SUCCESSORS.get(id(p))
            if not successors:
                continue
            if held is None:
                held = _held(optimizer)
            for ref, what in successors:
                new = ref()
                if new is not None and new.requires_grad and id(new) not in held:
                    missing.append((what, ref))
    return missing
