"""torch's own walks over a part of a tied model reach the sources its tied slots read.

With a tie made by hand (``dec[0].weight = enc.weight``) the shared Parameter is a
parameter of both modules, so every torch utility that walks ``model.dec.parameters()``
reaches it. A tied slot is no Parameter of its module (the source keeps its one owner,
STYLE rule 2), so the same walk on a Plan-tied model left the source out, and each of
these utilities gave another result than on the hand tie, without an error (stop 57):

- ``model.dec.zero_grad()`` on a plain module holding a tied child kept the source's
  gradient (the tied class's own ``zero_grad`` clears it, but a parent's walks the
  parameters, not its children's methods): the next step applied it again;
- ``model.dec.requires_grad_(False)`` left the shared weight training;
- ``clip_grad_norm_(model.dec.parameters(), c)`` measured a norm without the shared
  gradient (6.22 for 6.45) and left that gradient unclipped (1.69 for 0.026);
- ``parameters_to_vector`` / ``vector_to_parameters`` over ``model.dec.parameters()``
  gave a shorter vector, so a vector of the hand-tied model filled the wrong entries;
Each of them walks ``named_parameters()``, which asks every module it reaches for
``module._parameters.items()``; a tied module's ``_parameters`` is a
:class:`~tying.core.spectral_guard.TiedParams`, whose ``items`` calls :func:`walked_items`.
When the walk was started by one of these walkers (``nn.Module.zero_grad`` and
``requires_grad_``, the functions of ``torch.nn.utils.clip_grad`` and
``convert_parameters``), each tied slot whose source lies *outside* the part being walked
also yields the Parameter it reads (its ``<name>_orig`` when the source is pruned), under
the slot's name and in the place the slot's parameter had before the tie, as the hand
tie's module lists it. A part that holds the source (the whole model) lists it once from
its owner, in the same order as before. Every other walk (``named_parameters()`` and
``state_dict()`` themselves, FSDP, Opacus) and a list built by the caller
(``list(dec.parameters())``) still hold a tied value once, from its owner (STYLE rule 2);
an optimizer given such a list is still refused at its step (``tying.core.unreached``).
An optimizer is no walker here (review): one per part (``SGD(enc.parameters())`` and
``SGD(dec.parameters())``) would hold the shared weight twice and step it twice, as the
hand tie does; it holds it once, in its owner's optimizer, and an optimizer over the
reading part alone is refused at its step, naming the source.

Example:
    >>> import torch, tying
    >>> m = torch.nn.ModuleDict({"enc": torch.nn.Linear(2, 2),
    ...                          "dec": torch.nn.Sequential(torch.nn.Linear(2, 2))})
    >>> _ = tying.Plan([tying.share("dec.0.weight", like="enc.weight")]).apply(m)
    >>> m["dec"](m["enc"](torch.ones(1, 2))).sum().backward()
    >>> m["dec"].zero_grad()            # a plain Sequential holding the tied layer
    >>> m["enc"].weight.grad is None    # the slot's gradient is its source's, as by hand
    True
    >>> torch.nn.utils.parameters_to_vector(m["dec"].parameters()).numel()  # 4 + 2
    6
"""

from __future__ import annotations

from torch import nn

from tying.core.freezing import _physical_leaf
from tying.core.outside import canonical
from tying.core.param_order import order_of

SLOTS_ATTR = "_tying_slots"  # slots.SLOTS_ATTR (slots imports this module's importer)


def _member_getter():
    """The code of the ``lambda module: module._parameters.items()`` that
    ``nn.Module.named_parameters`` hands to ``_named_members`` (None if torch has none)."""
    for const in nn.Module.named_parameters.__code__.co_consts:
        if getattr(const, "co_name", None) == "<lambda>":
            return const
    return None


_GETTER = _member_getter()
#: nn.Module methods that walk ``self.parameters()`` and act on each Parameter
_ZERO_GRAD = nn.Module.zero_grad.__code__
_NAMED_PARAMETERS = nn.Module.named_parameters.__code__
_PARAMETERS = nn.Module.parameters.__code__
_REQUIRES_GRAD = nn.Module.requires_grad_.__code__
#: torch modules whose functions walk the parameters they are given
#: not torch.optim.optimizer: an optimizer given a part's parameters() would hold the
#: source it reads, so one per part (enc, dec) stepped the shared weight twice (|dW| 0.338
#: for 0.169) and param groups per part were refused; tying.core.unreached refuses the
#: step of one that leaves the source untrained instead (STYLE rule 2: held once)
_UTILITIES = frozenset({"torch.nn.utils.clip_grad", "torch.nn.utils.convert_parameters"})


def walked_items(params: dict, caller):
    """``params.items()``, plus the tied slots' sources when a torch walker asks.

    Args:
        params: a tied module's ``_parameters``.
        caller: the frame that called ``params.items()``.

    Returns:
        ``dict.items(params)``; when ``caller`` is ``named_parameters``' member getter, the
        walk was started by one of the walkers named in the module docstring, and a tied
        slot reads a Parameter from outside the part being walked, a list of the module's
        own items with ``(slot name, that Parameter)`` in the place the slot's parameter
        had before the tie.
    """
    own = dict.items(params)
    if caller.f_code is not _GETTER:
        return own
    slots = getattr(caller.f_locals.get("module"), "__dict__", {}).get(SLOTS_ATTR)
    if not slots or not _walked_by_torch(caller):
        return own
    # the part: from named_parameters' frame (a few locals: cheaper to read than those of
    # _named_members, read only when the part is not the module the plan was applied to)
    outer = caller.f_back.f_back
    if outer is not None and outer.f_code is _NAMED_PARAMETERS:
        part = outer.f_locals.get("self")
    else:
        part = caller.f_back.f_locals.get("self")
    rel = None
    held = {id(p) for p in params.values() if p is not None}
    extra = []
    for name, slot in slots.items():
        if slot.anchor is not None and slot._links()[0][0] is part:
            continue  # the part is the module the plan was applied to: it holds the source
        if rel is None:  # the slot's module's path in the part, from _named_members
            walk = caller.f_back.f_locals
            prefix, at = walk.get("prefix") or "", walk.get("module_prefix", "")
            rel = at[len(prefix) + 1 :] if prefix and at.startswith(prefix + ".") else at
            rel = "" if prefix and at == prefix else rel
        if not _outside(slot, rel):
            continue
        leaf = _physical_leaf(slot, pruned=True)
        if leaf is None or id(leaf) in held:
            continue
        held.add(id(leaf))
        extra.append((name, leaf))
    if not extra:
        return own
    items = list(own)
    for name, leaf in extra:  # where the hand tie's module lists it: its place before the tie
        order = order_of(slots[name])
        after = set(order[order.index(name) + 1 :]) if name in order else set()
        place = next((i for i, (k, _) in enumerate(items) if k in after), len(items))
        items.insert(place, (name, leaf))
    return items


def _outside(slot, rel: str) -> bool:
    """Whether the module ``slot`` reads from lies outside the part being walked, which
    reaches the slot's module at ``rel``. Known from the tie's paths (from the module the
    plan was applied to; wrapper segments such as ``_orig_mod`` left out). A part that holds
    that module, or paths that do not fit (a part above the module the plan was applied to,
    a module at two paths), count as inside: the walk lists the source from its owner, as
    before, and keeps its order."""
    mod_path, source = slot.paths  # (the slot's module, the source slot), from that module
    if source is None:  # the slot's own storage: a parameter of its module
        return False
    # a wrapper between (torch.compile's _orig_mod, activation checkpointing) is no place
    rel, mod_path, source = canonical(rel), canonical(mod_path), canonical(source)
    if rel == mod_path:
        return False  # the part is the module the plan was applied to: it holds the source
    if not rel:
        part = mod_path
    elif mod_path.endswith("." + rel):
        part = mod_path[: -len(rel) - 1]
    else:
        return False
    src = source.rpartition(".")[0]
    return src != part and not src.startswith(part + ".")


def _walked_by_torch(frame) -> bool:
    """Whether one of the walkers named in the module docstring started this walk."""
    for _ in range(3):  # past _named_members and named_parameters
        frame = frame.f_back
        if frame is None:
            return False
    if frame.f_code is _PARAMETERS:
        frame = frame.f_back  # who iterates parameters()
    for _ in range(2):  # that frame, or the function around its comprehension
        if frame is None:
            return False
        code = frame.f_code  # compared by identity: hashing a code object costs its bytes
        if code is _ZERO_GRAD or code is _REQUIRES_GRAD:
            return True
        if frame.f_globals.get("__name__") in _UTILITIES:
            return True
        frame = frame.f_back
    return False
