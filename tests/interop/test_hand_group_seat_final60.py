"""A module reached under two paths is no hand tie to undo (final read, stop 60).

``refuse_tied_parameters`` named the second seat of the source's own module as one more
holder of the Parameter and advised ``free('1.weight')`` and ``share('1', like='0')``,
a tie of the module with itself; the quantizer and ``get_peft_model`` already left it out.
"""

from types import SimpleNamespace

import pytest
import torch

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.interop.groups import hand_group, whole_module_ties
from tying.interop.lora_targets import refuse_tied_parameters


def _model():
    a, b = torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False)
    b.weight = a.weight
    return torch.nn.Sequential(a, a, b)


def test_hand_group_leaves_out_a_second_seat():
    inv = Inventory(_model())
    assert hand_group(inv, "0.weight") == [("2.weight", "0.weight")]


def test_target_parameters_fix_names_no_seat():
    inv = Inventory(_model())
    config = SimpleNamespace(target_parameters=["2.weight"])
    with pytest.raises(TieError) as e:
        refuse_tied_parameters(config, inv, whole_module_ties(inv))
    assert "also at 1.weight" not in str(e.value)
    assert "tying.share('1'" not in str(e.value)
    assert "tying.share('2', like='0')" in str(e.value)
