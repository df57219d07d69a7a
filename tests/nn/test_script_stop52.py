"""Stop 52: ``torch.jit.script`` of a ``tying.nn`` layer failed deep inside TorchScript
("try blocks aren't supported", "Don't support conversion in JoinedStr", pointing at a
line of the layer), also for the untied copy that the core's refusal of a tied slot
suggests. Every exported layer now refuses it by name with what works instead, and
``torch.jit.trace`` (which the message names) gives the eager outputs.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

import tying
import tying.nn as tnn
from tests.nn.test_init import LAYERS, _built, _inputs, _out

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:`torch.jit.(script|trace).*` is deprecated:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


def test_every_exported_layer_refuses_torch_jit_script():
    exported = [
        getattr(tnn, name)
        for name in tnn.__all__
        if inspect.isclass(getattr(tnn, name)) and issubclass(getattr(tnn, name), nn.Module)
    ]
    assert sorted(c.__name__ for c in exported) == sorted(LAYERS)
    assert all(c.__prepare_scriptable__ is tnn._args.refuse_script for c in exported)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_script_of_an_untied_copy_is_refused_by_name_and_trace_runs(name):
    layer, args = _built(name, 0).eval(), _inputs(name)
    copied = copy.deepcopy(layer)
    tying.untie(copied)  # the fix the core's refusal of a tied slot gives
    before = {k: v.clone() for k, v in copied.state_dict().items()}
    with pytest.raises(TypeError, match=rf"cannot compile {name}: .*use torch\.jit\.trace"):
        torch.jit.script(copied)
    after = copied.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    if name in ("SharedBoundary", "SoftDiceLoss", "SoftIoULoss"):
        return  # no forward / a loss: nothing more to trace here
    with torch.no_grad():
        traced = torch.jit.trace(layer, args, check_trace=False)
        torch.testing.assert_close(_out(traced, args), _out(layer, args), rtol=0, atol=0)
