"""``tying.interop.pruning`` given torch's way of naming a parameter (stop 59).

torch's ``prune.l1_unstructured(module, name="weight")`` names a parameter by module and
name; ``tying.interop.pruning.prune`` by slot path. A user coming from torch who passed the
module path ("head") was told "'head' is not a parameter of the model; closest: head,
head.weight": the first advice is the path just refused. Passing ``name="weight"`` as
well reached torch twice: "l1_unstructured() got multiple values for argument 'name'",
naming neither tying nor the fix. Both now name the slot path to pass, and the advice
works when followed.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import prune as torch_prune

import tying
from tying import TieError
from tying.interop.pruning import prune, remove


def _tied():
    torch.manual_seed(0)
    m = torch.nn.ModuleDict(
        {"embed": torch.nn.Embedding(10, 4), "head": torch.nn.Linear(4, 10, bias=True)}
    )
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    return m


def test_a_module_path_names_its_parameter_slots_and_the_named_slot_prunes():
    m = _tied()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        TieError,
        match=r"'head' is a module, not a parameter slot.*slots: 'head\.(weight|bias)', 'head\.(weight|bias)';",
    ) as err:
        prune(m, "head", torch_prune.l1_unstructured, amount=0.5)
    assert "closest: head," not in str(err.value)
    assert not torch_prune.is_pruned(m)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    with pytest.raises(TieError, match=r"remove: 'head' is a module.*'head\.weight'"):
        remove(m, "head")
    # the advice, followed
    assert prune(m, "head.weight", torch_prune.l1_unstructured, amount=0.5) == "embed.weight"
    assert (m["head"].weight == 0).sum().item() == 20 and tying.verify(m) == 1


@pytest.mark.parametrize("path", ["head", "head.weight"])
def test_torchs_name_keyword_is_refused_naming_the_slot_path_to_pass(path):
    m = _tied()
    with pytest.raises(
        TypeError, match=r"name='weight' is torch.*prune\(model, 'head\.weight', method"
    ):
        prune(m, path, torch_prune.random_unstructured, name="weight", amount=0.25)
    assert not torch_prune.is_pruned(m)
    assert prune(m, "head.weight", torch_prune.random_unstructured, amount=0.25) == "embed.weight"
    assert torch.equal(m["head"].weight, m["embed"].weight)
