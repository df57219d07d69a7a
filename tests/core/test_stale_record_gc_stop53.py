"""``stale.record`` while the collector forgets a record (stop 53, found by the fresh-clone CI).

``record`` looks up the earlier records that name the Parameter being replaced; while it
does, an allocation may run the garbage collector, whose finalizer (``_forget``) drops a
record from the very set being read. ``Plan.apply`` then failed with "RuntimeError: Set
changed size during iteration" (once in 8,388 tests, in ``tests/nn/test_group_conv.py``).
The finalizer is run here at that moment on purpose, from inside the lookup.
"""

from __future__ import annotations

import torch
from torch import nn

from tying.core import stale


def test_a_record_forgotten_during_the_lookup_does_not_break_record():
    old, new = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.ones(2))
    gone, kept = -53001, -53002  # record keys no real Parameter id can be

    def forgetting_ref():  # a successor's weak reference, read during the lookup
        stale._forget(gone)
        return None

    with stale._LOCK:
        stale._SUCCESSORS[gone] = [(lambda: old, "gone")]
        stale._SUCCESSORS[kept] = [(forgetting_ref, "kept")]
        stale._name(old, gone)
        stale._name(old, kept)
    added = []
    try:
        added = stale.record([(old, new, "w")])
        assert [what for _, what in added] == ["w"]  # under old's own record only
        assert stale._SUCCESSORS[id(old)][-1][0]() is new
        assert gone not in stale._SUCCESSORS
    finally:
        stale.withdraw(added)
        for key in (gone, kept):
            stale._forget(key)
        stale._NAMED_BY.pop(id(old), None)
