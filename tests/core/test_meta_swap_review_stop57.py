"""A swap by _reparametrize_module(tie_weights=False) on a model materialised from meta is
still refused when the old meta source is held elsewhere (BASE 54343f2~1 refused it)."""

import pytest
import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module

import tying


def test_first_read_after_to_empty_under_an_untied_swap_is_refused():
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
    m(torch.ones(1, 3, device="meta"))
    kept = [m[0].weight]  # e.g. an optimizer built on the meta model
    m.to_empty(device="cpu")
    with pytest.raises(tying.TieError, match="tie_weights=False"):
        with _reparametrize_module(m, {"0.weight": torch.zeros(3, 3)}, tie_weights=False):
            m(torch.ones(1, 3))
    assert kept[0].is_meta
