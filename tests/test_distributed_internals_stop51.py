"""Stop 51: a torch without one of FSDP2's private names ``td.fully_shard`` reads is refused.

``td.fully_shard`` reads FSDP2's private state to refuse an optimizer built on gathered
copies (``FSDPParam._unsharded_param``), a state dict between a forward and its backward
(``FSDPParamGroup.is_unsharded``), and to gather a tie's owner for its reader's backward.
The old code read them with ``getattr(..., None)``: after a rename every such check was
off, with no error (an optimizer built on the gathered copies trained nothing, 0.034 off
after three steps). Each name is now looked up when sharding, before any unit is sharded;
a rename is simulated here by patching the installed torch.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp._fully_shard._fsdp_param import FSDPParam
from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup
from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPState

import tying
import tying.distributed as td
from tests.test_distributed_stateful_stop49 import _cpu_mesh, physical, tied

pytestmark = [
    pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default"),
    pytest.mark.filterwarnings("ignore:FSDP2-wrapped module"),  # a Linear unit returns a view
]


def _writes_renamed(self):  # what a release that renamed _unsharded_param would do
    self._unsharded_param_v2 = None


def _init_renamed(self, *args, **kwargs):
    self._fsdp_param_groups_v2 = []


RENAMES = {
    "FSDPParam.init_unsharded_param (writing _unsharded_param)": (
        FSDPParam,
        "init_unsharded_param",
        _writes_renamed,
    ),
    "FSDPState.__init__ (writing _fsdp_param_groups)": (FSDPState, "__init__", _init_renamed),
    "FSDPParamGroup.is_unsharded": (FSDPParamGroup, "is_unsharded", None),
    "FSDPModule.unshard": (FSDPModule, "unshard", None),
}


@pytest.mark.parametrize("name", list(RENAMES))
def test_a_renamed_fsdp2_private_name_is_refused_before_sharding(group, monkeypatch, name):
    cls, attr, replacement = RENAMES[name]
    if replacement is None:
        monkeypatch.delattr(cls, attr)
    else:
        monkeypatch.setattr(cls, attr, replacement)
    model = tied(0)
    before = physical(model)
    with pytest.raises(tying.TieError) as err:
        td.fully_shard(model, units=["layers.*"], mesh=_cpu_mesh())
    text = str(err.value)
    assert f"this torch ({torch.__version__}) lacks FSDP2's private {name}" in text
    assert "a torch release renamed or moved it" in text and "nothing was sharded" in text
    monkeypatch.undo()
    # refused before the first unit: the model is as it was, and can be sharded now
    assert not any(isinstance(m, FSDPModule) for m in model.modules())
    assert td.wrapped_by(model) is None
    after = physical(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    td.fully_shard(model, units=["layers.*"], mesh=_cpu_mesh())
    assert td.wrapped_by(model) == "fully_shard"


def test_the_names_read_at_runtime_are_the_ones_checked(group):
    """The check is no stand-in: after a forward FSDP2 holds each name the hooks read."""
    from tying.distributed_gathered import FSDP_PRIVATE, _param_groups

    model = td.fully_shard(tied(0), units=["layers.*"], mesh=_cpu_mesh())
    model(torch.arange(6)[None]).sum()
    names = {writes for *_, writes in FSDP_PRIVATE if writes}
    for unit in (m for m in model.modules() if isinstance(m, FSDPModule)):
        state = unit._get_fsdp_state()
        assert "_fsdp_param_groups" in names and state._fsdp_param_groups
        for group_ in _param_groups(unit):
            assert isinstance(group_.is_unsharded, bool)
            for fsdp_param in group_.fsdp_params:
                assert isinstance(fsdp_param._unsharded_param, torch.nn.Parameter)
                assert fsdp_param._param_fqn
