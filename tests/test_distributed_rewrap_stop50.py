"""Stop 50: wrapping a model again while its first ``td.ddp`` wrapper lives is refused.

``td.ddp(w.module)`` (or ``td.ddp(model)`` twice, or ``td.fully_shard(w.module)``) was
accepted while ``w`` lived: two reducers (or a reducer and FSDP2) on one model's tensors.
Plain ``DistributedDataParallel`` twice trains right (3e-8 from one process, two ranks),
but the first wrapper's checks then refused the second's steps with errors that named
the wrong cause: "accumulated twice since the last forward" at the second step, or
"parameters changed after it was wrapped" once FSDP2 had swapped them. The second wrap
is refused now, naming the live wrapper and the fix; once the first wrapper is dropped,
the model is wrapped again and trains as plain torch.
"""

from __future__ import annotations

import pytest
import torch

import tying
import tying.distributed as td
from tests.test_distributed_stateful_stop49 import (
    PHYSICAL,
    _cpu_mesh,
    physical,
    reference_step,
    tied,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default"),
    pytest.mark.filterwarnings("ignore:FSDP2-wrapped module"),
]
X = torch.arange(12).reshape(2, 6)
LIVE = (
    r"tying\.distributed\.{helper}: the model is already wrapped by td\.ddp, whose "
    r"DistributedDataParallel wrapper is still alive.*drop every reference to it first "
    r"\(inner = wrapped\.module; del wrapped\), then td\.{helper}\(inner\)"
)


@pytest.mark.parametrize("again", ["ddp of .module", "ddp of the model", "ddp of a layer"])
def test_a_second_ddp_wrap_while_the_first_lives_is_refused(group, again):
    model = tied(0)
    wrapped = td.ddp(model)
    inner = {
        "ddp of .module": wrapped.module,
        "ddp of the model": model,
        "ddp of a layer": model.layers[2],
    }[again]
    with pytest.raises(tying.TieError, match=LIVE.format(helper="ddp")):
        td.ddp(inner)
    # the first wrapper still trains as plain torch: the refusal changed nothing
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.05)
    wrapped(X).pow(2).mean().backward()
    opt.step()
    ref = reference_step(physical(tied(0)), X, 0.05)
    got = physical(model)
    for name in PHYSICAL:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6)


def test_fully_shard_of_a_model_in_a_live_ddp_wrapper_is_refused_unsharded(group):
    model = tied(0)
    wrapped = td.ddp(model)
    with pytest.raises(tying.TieError, match=LIVE.format(helper="fully_shard")):
        td.fully_shard(wrapped.module, units=["layers.*"], mesh=_cpu_mesh())
    assert not any(hasattr(p, "full_tensor") for p in model.parameters())
    wrapped(X).sum().backward()  # the DDP wrapper is untouched (its parameters were kept)


@pytest.mark.parametrize("helper", ["ddp", "fully_shard"])
def test_once_the_first_wrapper_is_dropped_the_model_wraps_again_and_trains_right(group, helper):
    model = tied(0)
    wrapped = td.ddp(model)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.05)
    wrapped(X).pow(2).mean().backward()
    opt.step()
    del wrapped, opt  # DDP holds reference cycles: the wrap collects them itself
    again = td.ddp(model) if helper == "ddp" else td.fully_shard(model, mesh=_cpu_mesh())
    opt = torch.optim.SGD(again.parameters(), lr=0.3)
    for _ in range(2):
        opt.zero_grad()
        again(X).pow(2).mean().backward()
        opt.step()
    ref = physical(tied(0))
    for lr in (0.05, 0.3, 0.3):
        ref = reference_step(ref, X, lr)
    got = physical(model)
    for name in PHYSICAL:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6)


def test_ddp_of_a_module_inside_a_sharded_model_is_refused(group):
    model = td.fully_shard(tied(0), units=["layers.*"], mesh=_cpu_mesh())
    with pytest.raises(tying.TieError, match=r"ddp: the model is already sharded by FSDP"):
        td.ddp(model.layers[0])  # a unit
    with pytest.raises(
        tying.TieError, match=r"ddp: the model is already part of a model sharded by td\.fully_sh"
    ):
        td.ddp(model.emb)  # inside the root unit: its parameters are DTensors
