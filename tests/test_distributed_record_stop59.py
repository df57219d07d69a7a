"""Stop 59: the state dict's tie record through ``td.ddp`` and torch's state-dict API.

A strict ``load_state_dict`` refuses a state dict saved with other ties (the record of
:mod:`tying.core.tie_record`). ``get_model_state_dict(td.ddp(m))`` strips ``module.`` from
the keys but not from ``_metadata``, and ``set_model_state_dict(td.ddp(m), sd)`` adds it
to the keys only, so the record sat where the check did not read it: a depth-2 ALBERT-style
stack loaded into a depth-3 one with no error (its third layer read layer 0). Now refused;
the same routes between models of the same ties still load.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

import tying
import tying.distributed as td

_REFUSED = r"load_state_dict into Sequential.*ties 2 slot\(s\) that the state dict neither holds"


def _stack(depth: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(*[nn.Linear(3, 3) for _ in range(depth)])
    tying.Plan([tying.share("*", like="0")]).apply(m)  # ALBERT-style: one layer, `depth` uses
    return m


def _values(m: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _same(m: nn.Module, values: dict) -> bool:
    return all(torch.equal(v, values[k]) for k, v in m.state_dict().items())


def test_get_model_state_dict_of_ddp_into_a_bare_model_of_other_ties_is_refused(group):
    saved = get_model_state_dict(td.ddp(_stack(2)))
    deeper = _stack(3, seed=1)
    before = _values(deeper)
    with pytest.raises(tying.TieError, match=_REFUSED):
        deeper.load_state_dict(saved)
    with pytest.raises(tying.TieError, match=_REFUSED):
        set_model_state_dict(deeper, get_model_state_dict(td.ddp(_stack(2))))
    assert _same(deeper, before)  # nothing was loaded
    # the same ties load, number for number
    same = _stack(2, seed=1)
    same.load_state_dict(get_model_state_dict(td.ddp(_stack(2))))
    assert torch.equal(same[0].weight, _stack(2)[0].weight)
    assert same[1].weight is same[0].weight


def test_a_bare_state_dict_set_into_ddp_of_other_ties_is_refused(group):
    w = td.ddp(_stack(3, seed=1))
    before = _values(w.module)
    with pytest.raises(tying.TieError, match=_REFUSED):
        set_model_state_dict(w, get_model_state_dict(_stack(2)))
    assert _same(w.module, before)
    # legitimate: same ties from a bare model, from a td.ddp model, and a plain dict
    for sd in (get_model_state_dict(_stack(3)), get_model_state_dict(td.ddp(_stack(3)))):
        w = td.ddp(_stack(3, seed=1))
        set_model_state_dict(w, sd)
        assert torch.equal(w.module[2].weight, _stack(3)[0].weight)
    w = td.ddp(_stack(3, seed=1))
    w.module.load_state_dict(dict(_stack(2).state_dict()))  # on purpose: no record


def test_a_plan_applied_to_a_part_keeps_its_record_through_ddp(group):
    def model(depth, seed=0):
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Linear(3, 3), nn.Sequential(*[nn.Linear(3, 3) for _ in range(depth)]))
        tying.Plan([tying.share("*", like="0")]).apply(m[1])  # the plan's root is a part
        return m

    with pytest.raises(tying.TieError, match=r"ties 2 slot\(s\)"):
        set_model_state_dict(td.ddp(model(3, 1)), get_model_state_dict(model(2)))
    with pytest.raises(tying.TieError, match=r"ties 2 slot\(s\)"):
        model(3, 1).load_state_dict(get_model_state_dict(td.ddp(model(2))))
    m = model(2, 1)
    m.load_state_dict(get_model_state_dict(td.ddp(model(2))))
    assert torch.equal(m[1][1].weight, model(2)[1][0].weight)
    set_model_state_dict(td.ddp(model(2, 1)), get_model_state_dict(model(2)))
