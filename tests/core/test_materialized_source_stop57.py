"""A slot whose source was materialised from the meta device (``to_empty``) takes the new
source without asking the garbage collector who holds it (stop 57: after ``to_empty`` a
D4 ``GroupConv2d`` searched every live object once per slot, 0.09 s each with 720k
objects; 4.5 s of one test's 4.6 s inside the suite)."""

from __future__ import annotations

import torch
from torch import nn

import tying
import tying.core.func_calls as func_calls


def test_a_source_materialised_from_meta_is_read_without_a_search(monkeypatch):
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
    m(torch.ones(1, 3, device="meta"))  # the slot reads (and records) the meta source
    kept = [m[0].weight]  # the old source held elsewhere, as a caller's local may hold it
    searches = []
    real = func_calls._suspended_reparametrize
    monkeypatch.setattr(
        func_calls, "_suspended_reparametrize", lambda src: searches.append(1) or real(src)
    )
    m.to_empty(device="cpu")
    torch.nn.init.normal_(m[0].weight)
    x = torch.ones(1, 3)
    want = m[0](x) @ m[0].weight.T + m[1].bias
    torch.testing.assert_close(m(x), want)
    assert searches == [] and kept[0].is_meta
    assert tying.verify(m) == 1
