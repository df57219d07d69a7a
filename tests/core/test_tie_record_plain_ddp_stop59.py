"""Stop 59: the tie record through plain ``DistributedDataParallel`` and torch's state-dict API.

``get_model_state_dict(DistributedDataParallel(m))`` strips ``module.`` from the keys but not
from ``_metadata``, so the record of a tied model sat at ``"module"`` where the strict load of
a bare model did not read it: a depth-2 ALBERT-style stack loaded into a depth-3 one with no
error (``td.ddp`` had its own fix; plain DDP did not).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.nn.parallel import DistributedDataParallel

import tying


def _stack(depth: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(*[nn.Linear(3, 3) for _ in range(depth)])
    tying.Plan([tying.share("*", like="0")]).apply(m)
    return m


def test_plain_ddp_state_dict_of_other_ties_is_refused_by_a_bare_model(group):
    saved = get_model_state_dict(DistributedDataParallel(_stack(2)))
    assert not any(k.startswith("module.") for k in saved)  # torch stripped the keys only
    deeper = _stack(3, seed=1)
    before = deeper[0].weight.detach().clone()
    with pytest.raises(tying.TieError, match=r"ties 2 slot\(s\) that the state dict neither"):
        deeper.load_state_dict(saved)
    assert torch.equal(deeper[0].weight, before)  # nothing was loaded
    same = _stack(2, seed=1)  # the same ties load
    same.load_state_dict(get_model_state_dict(DistributedDataParallel(_stack(2))))
    assert torch.equal(same[0].weight, _stack(2)[0].weight)


def test_a_real_child_named_module_is_not_read_as_the_wrapper():
    def model(depth: int, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        outer = nn.Module()
        outer.module = nn.Sequential(*[nn.Linear(3, 3) for _ in range(depth)])
        tying.Plan([tying.share("module.*", like="module.0")]).apply(outer)
        return outer

    # keys start with "module." here: the record is the root's own, read as such
    target = model(2, seed=1)
    target.load_state_dict(model(2).state_dict())
    assert torch.equal(target.module[1].weight, model(2).module[0].weight)
    with pytest.raises(tying.TieError, match="neither holds nor records"):
        model(3, seed=1).load_state_dict(model(2).state_dict())
