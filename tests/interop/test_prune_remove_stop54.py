"""tying.interop.pruning.remove: make the mask behind a tied slot permanent, or name its source.

torch's ``prune.remove(module, name)`` on a tied module fails with "has to be pruned
before pruning can be removed": the mask sits on the tie's source module, and a module
class with its own ``__repr__`` (transformers' GPT-2 ``Conv1D``) printed no tie at all
in that message (stop 54). ``remove`` follows the tie to the physical tensor.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import tying
from tying.interop.pruning import prune, remove


def _head_model(seed: int = 0) -> nn.ModuleDict:
    torch.manual_seed(seed)
    m = nn.ModuleDict({"embed": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    return m


def test_remove_on_the_tied_slot_makes_the_source_mask_permanent():
    m = _head_model()
    prune(m, "head.weight", torch_prune.l1_unstructured, amount=0.5)
    # the anchor: torch's own remove on the module that holds the mask, on a twin
    twin = _head_model()
    torch_prune.l1_unstructured(twin["embed"], "weight", amount=0.5)
    torch_prune.remove(twin["embed"], "weight")
    assert remove(m, "head.weight") == "embed.weight"
    assert not torch_prune.is_pruned(m)
    assert torch.equal(m["embed"].weight, twin["embed"].weight)
    assert m["head"].weight is m["embed"].weight and tying.verify(m) == 1
    x = torch.randn(3, 4)
    torch.optim.SGD(m.parameters(), lr=0.1).zero_grad()
    m["head"](x).sum().backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert m["head"].weight is m["embed"].weight and tying.verify(m) == 1


def test_remove_through_a_stack_of_conv1d_names_nothing_missing():
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    torch.manual_seed(0)
    m = nn.Sequential(*[conv1d(6, 4) for _ in range(3)])
    tying.Plan([tying.share("*", like="0")]).apply(m)
    with pytest.raises(ValueError, match="has to be pruned"):
        torch_prune.remove(m[2], "weight")  # torch's own message, on the tied module
    with pytest.raises(
        tying.TieError,
        match=r"'2.weight' is not pruned: its physical tensor '0.weight' \(reached through the "
        r"tie 2.weight <- 0.weight\)",
    ):
        remove(m, "2.weight")
    prune(m, "2.weight", torch_prune.random_unstructured, amount=0.5)
    masked = m[0].weight_orig * m[0].weight_mask
    assert remove(m, "2.weight") == "0.weight"
    assert torch.equal(m[2].weight, masked) and m[2].weight is m[0].weight
    assert not torch_prune.is_pruned(m) and tying.verify(m) == 4


def test_remove_refuses_bad_input_and_leaves_the_model_unchanged():
    m = _head_model()
    prune(m, "embed.weight", torch_prune.l1_unstructured, amount=0.5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(TypeError, match=r"path must be one slot path \(str\), got list"):
        remove(m, ["head.weight"])
    with pytest.raises(
        tying.TieError, match="'head.wieght' is not a parameter.*closest: head.weight"
    ):
        remove(m, "head.wieght")
    assert torch_prune.is_pruned(m)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    t = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(3, 4)})
    tying.Plan([tying.share("b.weight", like="a.weight", relation=tying.Transposed())]).apply(t)
    torch_prune.l1_unstructured(t["a"], "weight", amount=0.5)
    with pytest.raises(
        tying.TieError,
        match=r"'b.weight' reads a.weight via Transposed\(.*prune.remove\(model.get_submodule\('a'\), 'weight'\)",
    ):
        remove(t, "b.weight")
    assert torch_prune.is_pruned(t["a"])
