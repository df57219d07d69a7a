"""Writes to a computed slot that a layer's forward would not see, refused at the forward.

A computed slot (``HashedEmbedding.weight``) hands out a fresh tensor at each read, so an
in-place write to it (``nn.init.normal_(emb.weight)``, ``emb.weight[pad] = 0`` under
``no_grad``, ``.data.copy_``) is lost: the core refuses it at the slot's next read, and at
``tying.save``/``tying.verify``/``state_dict``. But the hashed lookup never reads the slot
(it hashes the stored buckets), so the lookups after such a write ran on the old values
with no error (stop 61: ``emb.weight[3] = 0`` then ``emb(3)`` read the old row, 1.54 off).
:func:`refuse_lost_writes` runs the core's check there too.

The group convs' forward (issue 19's path) runs it only after a read of a tied block
(:mod:`tying.nn._group_conv_writes`: a scan of a D4 bank's 56 slots cost 8 µs a call,
several % of a small layer's forward; a dict look-up asks whether one was read). Not in
a shared ``MultiHopGraphConv``: torch's meta-init idiom (``reset_parameters()`` of
every module after ``to_empty``) writes into its ``hops.k.weight`` through
``nn.Linear.reset_parameters``, a lost write its forward ran through until then (the
layer's own reset had set the tie); the refusal stays at ``state_dict`` and ``tying.save``.
"""

from __future__ import annotations

from operator import attrgetter

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.slots import SLOTS_ATTR, _check_pending_writes

__all__ = ["refuse_lost_writes"]

# the core's refusal ends "; write to <source> instead, or untie first ...": a layer whose
# forward needs the tie (a hashed lookup) replaces that fix with its own
_CORE_FIX = "; write to "

_HANDED, _KEPT = attrgetter("_handed"), attrgetter("_kept")


def refuse_lost_writes(*modules: nn.Module | None, fix: str | None = None) -> None:
    """Refuse, as the slot's next read would, when a computed slot of one of ``modules``
    (None entries skipped) was written to since it was last read.

    Nothing is checked inside ``torch.compile`` or ``torch.jit.trace`` (no Python-side
    value may be read there; the next eager call checks). When no slot holds a record of
    a handed-out value (the usual forward) it costs two C-level passes over the slots.

    Args:
        modules: the layer, and any layer whose computed slots its forward stands for
            (the table owner of a ``Siamese`` tower: a write through either tower's
            ``weight`` is recorded there).
        fix: what to do instead, replacing the core's "write to the source, or untie"
            (untying a hashed layer leaves it no buckets to look up).

    Raises:
        TieError: naming the slot, its source and the fix (see
            :meth:`tying.core.slots.Slot.check_written`); the stale record is dropped.
    """
    if torch.compiler.is_compiling() or torch._C._is_tracing():
        return
    for module in modules:
        slots = None if module is None else module.__dict__.get(SLOTS_ATTR)
        if slots and (any(map(_HANDED, slots.values())) or any(map(_KEPT, slots.values()))):
            try:
                _check_pending_writes(module)
            except TieError as err:
                if fix is None or _CORE_FIX not in str(err):
                    raise
                raise TieError(f"{str(err).split(_CORE_FIX)[0]}; {fix}") from err
