"""A dtype or device conversion of a part of a tied model that leaves a tie's source out.

``model.head.half()`` (``.double()``, ``.to(torch.bfloat16)``, ``.to("meta")``, ``.cuda()``)
converts the tensors the part holds. By hand (``head.weight = embed.weight``) the shared
Parameter is one of them, so it is converted, and the embedding with it. A Plan-tied slot is
no Parameter of its module (the source keeps its one owner), so before stop 60 the same call
converted the head's bias and left the weight it reads in float32: the model was left half
converted and the next forward failed inside torch ("self and mat2 must have the same dtype,
but got Double and Float"), naming no tie; a tied ``nn.Embedding`` (no other parameter) went
on computing in float32 after ``.half()``, with no error at all.

Converting the source from a part that does not hold it would change every other use too,
which the caller did not name (as ``requires_grad_`` on such a part, refused by
:func:`tying.core.freezing.requires_grad_`), so the conversion is refused before anything
changes, naming the slot, its source and the fixes. Whether the conversion changes anything
is asked of an empty tensor of the source's dtype and device, so ``.to()`` to the dtype and
device the model already has, ``share_memory()`` and ``to_empty()`` on the same device go
through; so does any conversion of a part that holds the source (the whole model, or a
container above the model), and any of a part whose source is still on ``meta`` (a model
materialised module by module, as FSDP's meta init does with ``to_empty(recurse=False)``).
"""

from __future__ import annotations

import sys
import weakref

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.freezing import _physical_leaf
from tying.core.root_advice import free_call

__all__ = ["check_part_conversion"]

_APPLY = nn.Module._apply.__code__


def check_part_conversion(module: nn.Module, fn, slots: dict) -> None:
    """Refuse ``module._apply(fn)`` when it would convert a tied slot's source that lies
    outside the part being converted (see the module docstring).

    Args:
        module: the tied module being converted.
        fn: the conversion torch's ``_apply`` maps over its tensors.
        slots: the module's slots by name.

    Raises:
        TieError: naming the slot, its source, what the conversion changes and the fixes;
            nothing is converted.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.ModuleDict({"e": torch.nn.Embedding(5, 4), "h": torch.nn.Linear(4, 5)})
        >>> _ = tying.Plan([tying.share("h.weight", like="e.weight")]).apply(m)
        >>> m["h"].double()
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: double() of TiedLinear would leave the tied slot h.weight ...
        >>> m.double().h.weight.dtype          # the model that holds the source
        torch.float64
    """
    chain = held = None
    for name, slot in slots.items():
        if not slot.paths[1]:
            continue  # its own storage: converted with the module
        if chain is None:
            chain = _conversion_chain(module)
            held = _held_cache(fn, chain[0])
        key = id(slot.source_module)
        if key not in held:
            held[key] = _holds_source(*chain, slot, held)
        if held[key]:
            continue  # the whole model converted, or a part holding the source: as usual
        leaf = _physical_leaf(slot)
        # a source still on meta: the part is materialised module by module (to_empty(
        # recurse=False) in FSDP's meta init), and the source will be with its own module
        real = isinstance(leaf, torch.Tensor) and not leaf.is_meta
        changed = _changes(fn, leaf) if real else None
        if changed is None:
            continue
        target, source = slot.target_and_source(name)
        root, up = chain
        how = _call_name(root)
        part = type(root).__name__
        raise TieError(
            f"{how} of {part} would leave the tied slot {target} (served from {source} via "
            f"{slot.relation!r}) {changed[0]}: its source lies outside the {part} converted, "
            f"and converting it would change the source's other uses too (tied by hand, the "
            f"shared weight and every use of it would be converted to {changed[1]}). Convert "
            f"the model that holds the source (model.{how}), or untie the slot to give it a "
            f"tensor of its own ({free_call(module, slot, target)}); {_what_changed(module, root, up)}"
        )


def _what_changed(module: nn.Module, root: nn.Module, up: int) -> str:
    """What the refused conversion left: nothing when it was called on the tied module; the
    modules before it when called on a part above it (torch converts module by module)."""
    if up == 0:
        return "nothing was converted"
    return (
        f"the modules of the {type(root).__name__} before this {type(module).__name__} "
        f"were already converted (torch converts module by module): convert the whole model "
        f"to one dtype and device again (model.to(...)), or reload it"
    )


def _changes(fn, leaf: torch.Tensor) -> tuple[str, str] | None:
    """``(what the slot would keep, what the conversion gives)`` when ``fn`` changes the
    dtype or device of a tensor like ``leaf``; None when it changes neither."""
    probe = torch.empty(0, dtype=leaf.dtype, device=leaf.device)
    try:
        out = fn(probe)
    except Exception:  # noqa: BLE001 - the conversion itself will say what is wrong
        return None
    if not isinstance(out, torch.Tensor):
        return None
    if out.dtype != leaf.dtype:
        return f"in {leaf.dtype}", f"{out.dtype}"
    if out.device != leaf.device:
        return f"on {leaf.device}", f"{out.device}"
    return None


#: ``[weakref to fn, id of the module converted, {id(source module): held}]`` of the last
#: conversion: each source module is looked up once per conversion, not once per tied module
#: (a 500-layer stack tied to its first layer: ``model.to(dtype)`` 1.7 -> 30 ms without it)
_LAST: list = [None, None, {}]


def _held_cache(fn, root: nn.Module) -> dict:
    if getattr(fn, "__module__", None) != nn.Module.__module__:
        # only torch's own conversions (.to, .half, .cuda, ...) make a new fn per call; a
        # caller's fn kept between two calls on one part would read the first call's answer
        # after the part's modules changed (a source taken out of it: converted silently)
        return {}
    ref = _LAST[0]
    if ref is not None and ref() is fn and _LAST[1] == id(root):
        return _LAST[2]
    try:
        _LAST[0] = weakref.ref(fn)
    except TypeError:  # a callable without weak references: no cache
        _LAST[0] = None
        return {}
    _LAST[1], _LAST[2] = id(root), {}
    return _LAST[2]


def _conversion_chain(module: nn.Module) -> tuple[nn.Module, int]:
    """``(the module the conversion was called on, how many levels above module it is)``.

    torch's ``_apply`` of each module (``nn.Module._apply``'s code, run once per module: a
    tied class or ``RNNBase`` calls it through ``super()``) calls each child's directly, so
    the walk stops at the first frame above them that is not an ``_apply``; only the
    outermost frame's locals are read (reading every frame's cost 20 us a module)."""
    outer, up = None, 0
    frame = sys._getframe(2)  # _conversion_chain <- check_part_conversion <- module's _apply
    while frame is not None and frame.f_code.co_name == "_apply":
        if frame.f_code is _APPLY:
            outer, up = frame, up + 1
        frame = frame.f_back
    root = outer.f_locals.get("self") if outer is not None else None
    if not isinstance(root, nn.Module):
        return module, 0
    return root, up


def _holds_source(root: nn.Module, up: int, slot, held: dict) -> bool:
    """Whether ``root``, ``up`` levels above the tied module, holds ``slot``'s source module.

    The slot's paths run from the plan's root, so the path of ``root`` is known and the
    source's is checked against it; where the paths do not fit (a moved module, or a
    container more levels above the tied module than its path is deep: a pipeline stage
    ``nn.Sequential(nn.Sequential(model.head))``, which holds no source) its modules are
    looked up, once per conversion."""
    smod = slot.source_module
    segs = slot.paths[0].split(".") if slot.paths[0] else []
    if up <= len(segs):
        base = ".".join(segs[: len(segs) - up])
        spath = slot.paths[1].rpartition(".")[0]
        if not base or spath == base or spath.startswith(base + "."):
            rel = spath[len(base) + 1 :] if base else spath
            try:
                if root.get_submodule(rel) is smod:
                    return True
            except AttributeError:
                pass
    if _MODULES not in held:
        held[_MODULES] = {id(m) for m in root.modules()}
    return id(smod) in held[_MODULES]


#: the key under which a conversion's cache holds the ids of the modules it converts
_MODULES = "modules"


def _call_name(root: nn.Module) -> str:
    """The public call that started the conversion (``half()``, ``to(...)``), as written."""
    frame = sys._getframe(2)
    names = {"half", "float", "double", "bfloat16", "to", "cuda", "cpu", "type", "to_empty"}
    while frame is not None:
        code = frame.f_code
        if code.co_name in names and frame.f_locals.get("self") is root:
            return f"{code.co_name}()" if code.co_name != "to" else "to(...)"
        frame = frame.f_back
    return "_apply(fn)"
