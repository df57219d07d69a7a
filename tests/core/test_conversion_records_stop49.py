"""A dtype round trip (``.to(torch.bfloat16).float()``) is no write to a tied value:
verify, save and deepcopy after one no longer refuse it when the allocator gives the
converted source its old address (the record's key then matched, and the value handed
out before the rounding was compared with one recomputed after it)."""

import copy
import warnings

import pytest
import torch

import tying
import tying.nn as tn
from tying.core.lost_writes import _equal_now
from tying.core.slots import slots_of


def test_a_round_trip_marks_every_record_changed():
    """Deterministic: whatever the addresses, the records' source keys no longer match
    after a conversion, so no value comparison is made against the rounded source."""
    m = tn.SymmetricConv1d(3, 4, 3)
    m(torch.randn(2, 3, 9))  # a computed value handed out
    slot = slots_of(m)["weight"]
    held, _, _, key, _ = slot._handed
    m.to(torch.bfloat16)
    m.float()
    assert all(ptr == -1 for _, _, ptr in key)
    assert _equal_now(slot, m, held, key) is None


def test_a_write_through_data_before_a_conversion_is_still_caught():
    """The checks on the handed tensor itself stay: a lost write is refused after it."""
    m = tn.SymmetricConv1d(3, 4, 3)
    w = m.weight
    w.data.fill_(0.5)  # a write to a computed value: lost at the next read
    m.double()
    with pytest.raises(tying.TieError, match="through .data"):
        tying.verify(m)


@pytest.mark.parametrize("trials", [300])
def test_round_trips_then_copies_never_refuse(trials, tmp_path):
    """6 of 200 runs refused on the old code (address reuse); 300 runs must all pass."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for trial in range(trials):
            torch.manual_seed(trial)
            m = tn.SymmetricConv1d(3, 4, 3)
            m(torch.randn(2, 3, 9))
            m.to(torch.bfloat16)
            m.float()
            copy.deepcopy(m)
            assert tying.verify(m) >= 1
