"""Writes into a group conv's logical kernel blocks, refused at the next forward.

A tied block (``kernels.r_e``: ``kernels.e_r3`` rotated) is computed at each read, so
an in-place write to it (``nn.init.zeros_(g.kernels.r_e)``, ``.data.copy_``) is lost.
The core refuses it at the slot's next read and at ``state_dict``/``tying.save``/
``tying.verify``, but the layer's forward gathers its bank from the physical blocks and
never reads a slot: it ran on the old kernel with no error (stop 61 left it: a scan of a
D4 bank's 56 slots on every forward cost 1.5-13 µs, several % of issue 19's path).

Here the scan runs only after a slot was read: :func:`watch_block_reads` wraps the bank
class's slot properties so that a read marks the bank (one dict write, on reads only),
and the forward asks one dict look-up (:data:`READ_FLAG`, ~30 ns). The mark stays while
a tensor handed out by a read is still held somewhere (it could still be written); once
nothing holds one, the forward's scan clears it. So a forward pays the scan (the core's
check: versions, pointers and a probe of the values, tens of µs) once after a read, and
on every call while the caller keeps a block's value alive (``blk = g.kernels.r_e``;
``del blk`` ends it); a training step that reads no block pays the look-up only.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from tying.core.lost_writes import _own_uses, _storage_uses
from tying.core.slots import SLOTS_ATTR
from tying.nn._lost_writes import refuse_lost_writes

__all__ = ["READ_FLAG", "refuse_block_writes", "watch_block_reads"]

# set in a kernel bank's __dict__ by a read of one of its tied slots
READ_FLAG = "_tying_block_read"
_WATCHED = "_tying_nn_block_reads_watched"


def watch_block_reads(bank: nn.Module | None) -> None:
    """Make every read of ``bank``'s tied slots set :data:`READ_FLAG` on the bank (None,
    or an untied bank: nothing to do).

    The tied class (one per set of slot names, shared by every bank with those names)
    is wrapped once per process. The wrapper calls the slot's ``value`` itself, as the
    core's property does, so the core still sees the caller that read the slot (it
    treats some readers, such as ``torch.nn.utils.prune``, apart).
    """
    cls = type(bank)
    names = cls.__dict__.get("_tying_names")
    if names is None or cls.__dict__.get(_WATCHED):
        return
    for name in names:
        prop = cls.__dict__.get(name)
        if isinstance(prop, property):
            setattr(cls, name, _watched(name, prop))
    setattr(cls, _WATCHED, True)


def _watched(name: str, prop: property) -> property:
    core_get = prop.fget

    def fget(self):
        slot = self.__dict__.get(SLOTS_ATTR, {}).get(name)
        if slot is None:
            return core_get(self)  # the core's fallback for an instance without ties
        try:
            out = slot.value(self)  # frame 1 of value: this one; its caller is the reader
        except RuntimeError:
            return core_get(self)  # the core's read again, which explains the failure
        if not torch.compiler.is_compiling():
            self.__dict__[READ_FLAG] = True
        return out

    fget.__name__ = name
    return property(fget, prop.fset, prop.fdel, prop.__doc__)


def refuse_block_writes(bank: nn.Module) -> None:
    """After a read of ``bank``'s slots: refuse a write into a value it handed out.

    Raises:
        TieError: naming the block, the physical block it is computed from and the fix
            (write to that block, or untie), as the slot's next read would.
    """
    if torch.compiler.is_compiling() or torch._C._is_tracing():
        return  # the next eager call checks
    refuse_lost_writes(bank)  # names the physical block to write (the core walks a chain)
    slots = bank.__dict__.get(SLOTS_ATTR) or {}
    if not any(map(_held, slots.values())):
        bank.__dict__.pop(READ_FLAG, None)  # nothing left that a later write could reach


def _held(slot) -> bool:
    """Whether a value ``slot`` handed out is still held outside its record."""
    for record in (*slot._kept, slot._handed):
        # record[4] is None: a view of the source or a transform's value (writes reach
        # the source or cannot be checked)
        if record is not None and record[4] is not None:
            value = record[0]  # 3 references: the record, this name, the call's argument
            if sys.getrefcount(value) > 3 or _storage_uses(value) > _own_uses(value):
                return True
    return False
