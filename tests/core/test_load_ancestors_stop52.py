"""The registration hook that finds the modules above a tie costs nothing for modules
without ties, and the modules above a tie are still found (stop 52).

Before stop 52 the hook kept weak records of every link ever made (a weak reference, a
list and a callback per child): building 5,000 ``nn.Linear`` with ``tying`` imported was
1.1x to 2x slower (the garbage collector walked the records). It now keeps two integers
per registration and looks the parents up when a tie needs them.
"""

import gc

import pytest
import torch
from torch import nn

import tying
from tying.core import load_ancestors, slot_loads, slots


def _values(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _noise(m):
    return {k: torch.randn_like(v) for k, v in m.state_dict().items()}


def _pair():
    return nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)})


def _refused_and_unchanged(root, key):
    before = _values(root)
    sd = _noise(root) | {key: torch.randn(3, 3)}  # the tie's two entries disagree
    with pytest.raises(RuntimeError, match=rf"\(nothing was loaded\):\n\t{key} is tied"):
        root.load_state_dict(sd)
    after = _values(root)
    assert all(torch.equal(after[k], before[k]) for k in before)


def _tracked_while_building(n):
    gc.collect()
    start = len(gc.get_objects())
    model = nn.ModuleList(nn.Sequential(nn.Linear(2, 2)) for _ in range(n))
    gc.collect()
    return len(gc.get_objects()) - start, model


def test_the_hook_keeps_nothing_the_collector_tracks_for_modules_without_ties():
    tying.Plan([tying.share("b", like="a")]).apply(_pair())  # the hook is live
    hooks = nn.modules.module._global_module_registration_hooks
    handle = load_ancestors._HOOK[0]
    with_hook, _ = _tracked_while_building(200)
    hook = hooks.pop(handle.id)
    try:
        without, _ = _tracked_while_building(200)
    finally:
        hooks[handle.id] = hook
    # stop 51's records: about 3 tracked objects per registration (400 here)
    assert abs(with_hook - without) < 20, (with_hook, without)


def test_a_part_registered_after_the_last_walk_has_its_parents_found():
    load_ancestors.ancestors(nn.Linear(1, 1))  # a walk: the map below is cached
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), _pair()))
    tying.Plan([tying.share("b", like="a")]).apply(model[1][1])
    _refused_and_unchanged(model, "1.1.b.weight")
    _refused_and_unchanged(model[1], "1.b.weight")


def test_a_parent_that_let_go_of_the_part_is_not_its_parent_any_more():
    part = _pair()
    first = nn.Sequential(nn.Linear(3, 3), part)
    load_ancestors.ancestors(part)  # a walk records first -> part
    del first[1]
    second = nn.Sequential(nn.Linear(3, 3))
    second.add_module("p", part)
    third = nn.Module()
    third._modules["q"] = part  # noqa: SLF001 - past torch's registration, after the walk
    found = load_ancestors.ancestors(part)
    # registered since the walk: a new walk, which reads every _modules (third's too)
    assert sorted(map(id, found)) == sorted([id(second), id(third)])
    assert not any(m is first for m in found)


def test_a_module_held_by_two_parents_guards_both():
    part = _pair()
    left = nn.Sequential(nn.Linear(3, 3), part)
    right = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), part)
    tying.Plan([tying.share("b", like="a")]).apply(part)
    _refused_and_unchanged(left, "1.b.weight")
    _refused_and_unchanged(right, "2.b.weight")


def test_too_many_records_are_dropped_and_the_parents_still_found(monkeypatch):
    monkeypatch.setattr(load_ancestors, "_MAX_NEW", 5)
    model = nn.Sequential(*[nn.Linear(3, 3) for _ in range(8)], _pair())
    assert load_ancestors._MAP[0] is None and len(load_ancestors._NEW) <= 5
    tying.Plan([tying.share("b", like="a")]).apply(model[8])
    _refused_and_unchanged(model, "8.b.weight")


def test_the_hook_names_the_attributes_the_core_uses():
    assert load_ancestors.TIE_ATTR == slots.SLOTS_ATTR
    assert load_ancestors.CHECK_ATTR == slot_loads.LOAD_CHECK == "_tying_check_load"
