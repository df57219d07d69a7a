"""Review of stop 60: ``td.load`` of a deeper stack's file into a ``td.ddp``-wrapped or
``td.fully_shard``-sharded model printed the first rule that failed ("pattern
'layers.4.weight' matches no parameter or module; closest: layers.3.weight") and advised
``tying.load(model, path)`` before wrapping, which fails the same way. It now names the
slots the model does not have, as :func:`tying.load` does since stop 60.
"""

import pytest
import torch
from torch import nn

import tying
import tying.distributed as td


class _Stack(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        torch.manual_seed(n)
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


_PLAN = tying.Plan([tying.share("layers.*", like="layers.0")])


def _mesh():
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (1,))


@pytest.mark.parametrize("helper", ["ddp", "fully_shard"])
def test_a_deeper_stacks_file_into_a_wrapped_model_names_the_missing_slots(tmp_path, group, helper):
    deep = _Stack(6)
    _PLAN.apply(deep)
    path = tying.save(deep, tmp_path / "deep.safetensors")
    model = _Stack(4)
    _PLAN.apply(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = td.ddp(model) if helper == "ddp" else td.fully_shard(model, mesh=_mesh())
    with pytest.raises(
        tying.TieError,
        match=r"do not fit this model: the file ties or stores 4 slot\(s\) this model does not "
        rf"have \(layers\.4\.\*, layers\.5\.\*\).*then wrap it with td\.{helper}; nothing was "
        r"loaded",
    ) as err:
        td.load(wrapped, path)
    assert "before td." not in str(err.value)  # the old advice failed the same way
    after = {
        k: v.full_tensor() if hasattr(v, "full_tensor") else v
        for k, v in model.state_dict().items()
    }
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    deeper = _Stack(6)  # the advice, followed
    _PLAN.apply(deeper)
    wrapped = td.ddp(deeper) if helper == "ddp" else td.fully_shard(deeper, mesh=_mesh())
    td.load(wrapped, path)
    assert tying.verify(deeper) == 10


@pytest.mark.parametrize("wrap", [False, True])
def test_a_deeper_stacks_dcp_checkpoint_names_the_missing_slots(tmp_path, group, wrap):
    # before: "layers.4.weight: checkpoint tied to layers.0.weight via Same(), model untied;
    # ... build and tie the model as the checkpoint's was (tying.Plan(...).apply(model))":
    # the model was tied by that plan, and has no layers.4 to tie
    deep = _Stack(6)
    _PLAN.apply(deep)
    td.dcp_save(deep, tmp_path / "ckpt")
    model = _Stack(4)
    _PLAN.apply(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=r"does not fit this model: the checkpoint ties or stores 4 slot\(s\) this model "
        r"does not have \(layers\.4\.\*, layers\.5\.\*\).*nothing was loaded",
    ) as err:
        td.dcp_load(td.ddp(model) if wrap else model, tmp_path / "ckpt")
    assert "model untied; " not in str(err.value).split("(the ties that differ")[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    deeper = _Stack(6)  # the advice, followed
    _PLAN.apply(deeper)
    td.dcp_load(td.ddp(deeper) if wrap else deeper, tmp_path / "ckpt")
    assert tying.verify(deeper) == 10
    assert torch.equal(deeper.layers[0].weight, deep.layers[0].weight)
