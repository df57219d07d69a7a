"""Plans over deep stacks cost what they touch (stop 52).

Building a ``TiedResidualNet`` of 1,024 tied blocks took 21.8 s (1.64 s at 256): two
scans per tie made a plan quadratic in the model's size. ``stale.record`` looked through
every record of the process for a chain's earlier predecessors, and
``Inventory.under`` read every slot of the model for each module a rule matched. Both
are now lookups; these tests hold them to the brute-force definitions they replaced.
"""

from __future__ import annotations

import gc
import weakref

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
from tying.core import stale
from tying.core.inventory import Inventory


def _tree(shape: list[int]) -> nn.Module:
    """Nested containers: ``shape[i]`` children at depth i, Linear leaves."""
    if not shape:
        return nn.Linear(2, 2)
    return nn.Sequential(*[_tree(shape[1:]) for _ in range(shape[0])])


@settings(derandomize=True, deadline=None, max_examples=25)
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3))
def test_under_lists_what_a_scan_of_every_slot_lists(shape):
    inv = Inventory(_tree(shape))
    for mpath in inv.modules:
        prefix = mpath + "."
        assert inv.under(mpath) == [p for p in inv.slots if p.startswith(prefix)], mpath


def _brute_force_record(table: dict, old, new) -> None:
    """A record as the old scan of every record made it: id(old) -> [successor, ...]
    (the record of ``old`` itself, then every record that names ``old``, each once)."""
    if old is new:
        return
    own = table.setdefault(id(old), [])
    named = [e for e in table.values() if e is not own and any(s is old for s in e)]
    for e in [own, *named]:
        e.append(new)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(steps=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_chains_of_re_ties_are_recorded_as_the_full_scan_recorded_them(steps):
    params = [nn.Parameter(torch.zeros(1)) for _ in range(6)]
    added = []
    reference: dict = {}
    try:
        for i, j in steps:
            added += stale.record([(params[i], params[j], f"p{j}")])
            _brute_force_record(reference, params[i], params[j])
        for p in params:
            ours = [ref() for ref, _ in stale._SUCCESSORS.get(id(p), [])]
            assert [id(q) for q in ours] == [id(q) for q in reference.get(id(p), [])]
    finally:
        stale.withdraw(added)


def test_a_chain_of_three_re_ties_still_refuses_the_first_optimizer():
    m = nn.ModuleDict({k: nn.Linear(3, 3) for k in ("a", "b")})
    opt = torch.optim.SGD(m.parameters(), lr=0.1)  # holds b's first weight
    tying.Plan([tying.share("b.weight", like="a.weight", relation=tying.Transposed())]).apply(m)
    tying.untie(m)
    tying.Plan([tying.share("b.weight", like="a.weight", relation=tying.Scaled(2.0))]).apply(m)
    m["a"](torch.ones(1, 3)).sum().backward()
    try:
        opt.step()
    except tying.TieError as exc:
        assert "b.weight" in str(exc)
    else:
        raise AssertionError("an optimizer over the first b.weight stepped after two re-ties")


def test_the_successor_index_goes_away_with_its_record_and_holds_no_weak_reference():
    old, new = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    stale.record([(old, new, "x")])
    assert id(old) in stale._NAMED_BY.get(id(new), ())
    key = id(new)
    del old
    gc.collect()  # the predecessor, and with it its record, is gone
    assert key not in stale._NAMED_BY
    # nothing of the index refers to the successor: swap_tensors (model.to under
    # torch.__future__.set_swap_module_params_on_conversion) refuses a tensor that has
    # a weak reference
    assert weakref.getweakrefs(new) == []
