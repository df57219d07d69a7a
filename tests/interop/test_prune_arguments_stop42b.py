"""``tying.interop.pruning.prune`` argument checks (stop 42).

Before: a list of paths failed with ``TypeError: unhashable type: 'list'`` and a method
named by string with ``'str' object is not callable``, neither naming the argument.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import tying
from tying.interop.pruning import prune


def _tied() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    tying.Plan([tying.share("2.weight", like="0.weight")]).apply(m)
    return m


@pytest.mark.parametrize("path", [["2.weight"], ("2.weight",), None, 2])
def test_a_path_that_is_not_one_str_is_a_type_error_naming_it(path):
    m = _tied()
    with pytest.raises(TypeError, match=r"prune: path must be one slot path \(str\), got"):
        prune(m, path, torch_prune.l1_unstructured, amount=0.5)
    assert not hasattr(m[0], "weight_mask") and tying.verify(m) == 1


def test_a_method_named_by_string_is_a_type_error_naming_the_functions():
    m = _tied()
    with pytest.raises(TypeError, match=r"method must be a torch\.nn\.utils\.prune function"):
        prune(m, "2.weight", "l1_unstructured", amount=0.5)
    assert not hasattr(m[0], "weight_mask") and tying.verify(m) == 1
