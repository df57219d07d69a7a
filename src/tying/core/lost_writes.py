"""Catching writes to a computed slot's value that the next read would lose.

A computed slot (``Transposed``, ``Rotated``, ...) hands out a fresh tensor at each read,
so an in-place write to it (``nn.init.*``, ``.fill_``, ``.copy_``, ``.data = ...``) would
be dropped silently by the next read, which recomputes from the source. A
:class:`~tying.core.slots.Slot` keeps a record of what it handed out; the helpers here tell
from that record whether it was written to: its version counter and data pointer,
``PROBE_SIZE`` evenly spaced values copied when it was handed out, and (for ``verify`` and
``save``) a recomputation of every value. Earlier values that something else still holds
(up to ``KEPT_MAX``) are watched the same way.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from tying.core.slots import Slot


def _version(t: torch.Tensor) -> int | None:
    """``t``'s version counter, or None for an inference tensor (it has none)."""
    return None if t.is_inference() else t._version


def _equal_now(slot: Slot, module: nn.Module, held: torch.Tensor, key: tuple) -> bool | None:
    """Whether ``held`` still equals the relation of the inputs it came from; None: unknown.

    Unknown when an input changed since (an optimizer step, a new Parameter): then the
    recomputed value differs for a good reason. A computed source (a chain, a pruned
    weight) is the very tensor used then, held in ``key``.
    """
    for t, version, ptr in key:
        if t.data_ptr() != ptr or version is not None and t._version != version:
            return None
    src = key[0][0]
    if isinstance(src, nn.Parameter) and _own_source(slot) is not src:
        return None
    roles = [r for r in slot.storage if r != "source"]  # the order value() recorded them in
    extras = {r: t for r, (t, _, _) in zip(roles, key[1:])}
    with torch.no_grad():
        now = slot.relation(src, shape=slot.shape, **extras)
    if now.dtype != held.dtype or now.shape != held.shape:
        return None  # read under autocast or the like: not comparable
    return _same_values(now, held)


PROBE_SIZE = 64  # values of a handed-out computed tensor kept to catch .data writes

# (shape, strides, device) -> storage offsets of PROBE_SIZE evenly spaced entries.
# Computing them costs linspace + unravel_index + stride arithmetic (~15 µs); a model
# reads the same few shapes over and over, so they are computed once per layout.
_PROBE_AT: dict[tuple, torch.Tensor] = {}


def _probe(t: torch.Tensor, where=None):
    """``(where, values)``: up to ``PROBE_SIZE`` evenly spaced entries of ``t``, copied.

    ``where`` are storage offsets relative to ``t``'s own offset, so one
    ``index_select`` on a flat view of ``t``'s memory reads them, whatever its strides
    (``rot90`` hands out a non-contiguous tensor).
    """
    with torch.no_grad():
        t = t.detach()
        if where is None:
            layout = (tuple(t.shape), t.stride(), t.device)
            where = _PROBE_AT.get(layout)
            if where is None:
                n = t.numel()
                # on the CPU: under ``with torch.device('meta')`` a bare linspace is meta,
                # and the first tie made there failed to copy it (stop 31)
                flat = torch.linspace(0, max(n - 1, 0), min(n, PROBE_SIZE), device="cpu").long()
                idx = torch.unravel_index(flat, t.shape) if t.dim() else ()
                offs = torch.zeros_like(flat)
                for i, stride in zip(idx, t.stride()):
                    offs += i * stride
                where = offs.to(t.device)
                if len(_PROBE_AT) > 4096:  # a model that keeps changing shapes
                    _PROBE_AT.clear()
                _PROBE_AT[layout] = where
        if where.numel() == 0:
            return where, t.new_empty(0)
        return where, t.as_strided((_span(t),), (1,)).index_select(0, where)


KEPT_MAX = 8  # earlier handed-out values of one slot watched at once (see Slot._kept)


#: torch's storage use count; CPU-only builds of older torch (within our torch>=2.4 range)
#: registered it with the CUDA module only (pytorch#131881). Without it no earlier value is
#: kept (the behaviour before stop 36): a write hidden by a second read is not caught there.
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def _storage_uses(t: torch.Tensor) -> int:
    """How many tensors share ``t``'s memory (a ``.data`` or ``.detach()`` alias is one);
    0 where it cannot be read (no ``_storage_Use_Count``, a tensor without storage)."""
    if _USE_COUNT is None:
        return 0
    try:
        return _USE_COUNT(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError, TypeError):  # a subclass without storage
        return 0


def _own_uses(t: torch.Tensor) -> int:
    # what _storage_uses counts for a computed value nothing else aliases: the value,
    # the storage object the count is read through, and the tensor it is a view of
    # (rot90 hands out a transposed view of a flipped copy)
    return 2 if t._base is None else 3


def _still_held(slot: Slot, record: tuple | None) -> tuple:
    """The records of ``slot._kept`` and ``record`` whose memory another tensor shares.

    Once the slot is read again, a computed value's memory is shared with nothing but
    its record unless something took an alias of it: ``m.b.weight.data`` (whose write
    the second read of ``m.b.weight.data.copy_(torch.randn(m.b.weight.shape))`` used to
    hide), ``.detach()``, or a view that autograd saved for backward. One integer read
    per record; no record is kept in the common case (``F.linear``, ``F.embedding``,
    ``F.conv2d`` save the tensor itself), so nothing is held that would otherwise be
    freed. A record whose tensor takes part in a backward is let go when its gradient is
    computed, when autograd lets go of its saved views too.
    """
    out = []
    for r in (*slot._kept, record):
        # r[4] is None: the slot's value is a view of its source or made under a functorch
        # transform, where writes reach the source or cannot be checked
        if r is None or r[4] is None or _storage_uses(r[0]) <= _own_uses(r[0]):
            continue
        if r is record and r[0].requires_grad:
            _let_go_at_backward(slot, r)
        out.append(r)
    return tuple(out[-KEPT_MAX:])


def _let_go_at_backward(slot: Slot, record: tuple) -> None:
    ref = weakref.ref(slot)
    key = id(record)

    def hook(grad):
        held = ref()
        if held is not None and held._kept:
            held._kept = tuple(r for r in held._kept if id(r) != key)

    record[0].register_hook(hook)


def _shares_storage(view: torch.Tensor, src: torch.Tensor) -> bool:
    """``view`` lies in ``src``'s memory (a write to it is a write to the source)."""
    if view.is_meta or src.is_meta or type(src) is not torch.Tensor:
        return False
    return view.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()


def forget_source_keys(slots) -> None:
    """Mark the sources of the ``slots``' records as changed, after a conversion (``.to``,
    ``.float()``, ``.double()``) gave them new values in place of the old.

    torch sets ``param.data = converted``: when the allocator handed back the old address
    and the version counter matched, a record still took the source for unchanged, and
    verify, save and deepcopy compared the value handed out before with one recomputed
    from the rounded source and refused it as a write through ``.data``
    (``.to(torch.bfloat16).float()`` on a ``SymmetricConv1d``: 6 of 200 runs, stop 49).
    The checks on the handed tensor itself (its version, its probed values) stay.
    """
    for slot in slots:
        for record in (slot._handed, *(slot._kept or ())):
            if record is not None and isinstance(record[3], list):
                record[3][:] = [(t, version, -1) for t, version, _ in record[3]]


def _replaced_view(slot: Slot, held: torch.Tensor, key: list) -> bool:
    """Whether a handed-out view of the source whose address changed had its ``.data``
    replaced.

    A new address alone is no proof: FSDP2 frees a gathered parameter's memory after each
    use and re-allocates it at the next gather (``untyped_storage().resize_``), so the
    storage stays and its address moves, and every view's with it (stop 32: a Transposed
    tie under FSDP2 was refused as a ``.data`` write at its second step). Then the view
    must still be the relation's view of that storage (``held.data = other`` gives it
    another storage). Another shape at the same address (``held.data = held.data[:, :3]``,
    a structured pruning tool shrinking a weight) is a replacement too (stop 32: it was
    lost silently, even by verify: the caller compares the shape at every read).
    """
    src = key[0][0]
    if held.is_meta or type(src) not in (torch.Tensor, nn.Parameter) or src.is_meta:
        return True
    try:
        storage = src.untyped_storage()
        if held.untyped_storage()._cdata != storage._cdata:
            return True  # held.data = another tensor
    except (RuntimeError, NotImplementedError):  # a wrapper without storage
        return True
    if storage.nbytes() == 0:
        return False  # freed (FSDP2 between uses): the same storage, no layout to rebuild
    roles = [r for r in slot.storage if r != "source"]  # the order value() recorded them in
    extras = {r: t for r, (t, _, _) in zip(roles, key[1:])}
    with torch.no_grad():
        now = slot.relation(src, shape=slot.shape, **extras)  # a view: no values copied
    return not (
        type(now) is torch.Tensor
        and now.untyped_storage()._cdata == storage._cdata
        and now.storage_offset() == held.storage_offset()
        and now.shape == held.shape
        and now.stride() == held.stride()
        and now.dtype == held.dtype
    )


def _span(t: torch.Tensor) -> int:
    """Elements from ``t``'s first to its last entry in memory (no device read)."""
    return 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    if torch.equal(a, b):  # one op; NaNs (never equal) take the slower path below
        return True
    return bool(torch.eq(a, b).logical_or_(a.isnan() & b.isnan()).all())


def _own_source(slot: Slot):
    return slot.source_module._parameters.get(slot.source_name)
