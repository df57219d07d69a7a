"""What a tied slot keeps alive: nothing of a model once it is gone, and no source that
``load_state_dict(..., assign=True)`` replaced (the slot's record of the source it last
read used to keep the old tensor, e.g. a whole tied embedding, until the next read)."""

import gc
import weakref

import pytest
import torch
from torch import nn

import tying

RELATIONS = {"same": tying.Same(), "transposed": tying.Transposed(), "scaled": tying.Scaled()}


def _model(relation):
    m = nn.ModuleDict({"a": nn.Linear(6, 6), "b": nn.Linear(6, 6)})
    tying.Plan([tying.share("b.weight", like="a.weight", relation=relation)]).apply(m)
    return m


def _used(m):
    m["b"](m["a"](torch.randn(2, 6))).sum().backward()
    m["b"].weight  # noqa: B018 - a read records what it handed out
    m.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_an_assign_load_lets_the_replaced_source_go(name):
    m = _model(RELATIONS[name])
    _used(m)
    old = weakref.ref(m["a"].weight)
    new = {k: v.detach().clone() + 1 for k, v in m.state_dict().items()}
    m.load_state_dict(new, assign=True)
    gc.collect()
    assert old() is None
    assert m["a"].weight.data_ptr() == new["a.weight"].data_ptr()  # assigned, not copied
    want = RELATIONS[name](
        new["a.weight"],
        shape=(6, 6),
        **({"scale": m["b"].weight_scale} if name == "scaled" else {}),
    )
    assert torch.equal(m["b"].weight, want)
    assert tying.verify(m) == 1


@pytest.mark.parametrize("name", ["scaled", "transposed"])  # Same hands out the Parameter
def test_a_write_lost_before_an_assign_load_is_still_refused_at_the_next_read(name):
    m = _model(RELATIONS[name])
    _used(m)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}  # state_dict checks too
    if name == "scaled":
        m["b"].weight.data.fill_(0.0)  # into a computed value: lost
    else:
        m["b"].weight.data = torch.zeros(6, 6)  # a view's .data replaced: lost
    m.load_state_dict(sd, assign=True)  # letting the old sources go keeps this record
    with pytest.raises(tying.TieError, match="b.weight was written"):
        m["b"].weight  # noqa: B018
    assert torch.equal(
        m["b"].weight,
        RELATIONS[name](
            sd["a.weight"],
            shape=(6, 6),
            **({"scale": m["b"].weight_scale} if name == "scaled" else {}),
        ),
    )


def test_a_loop_of_plan_apply_save_load_keeps_no_model_alive(tmp_path):
    refs = []
    for i in range(6):
        relation = list(RELATIONS.values())[i % 3]
        m = _model(relation)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        _used(m)
        opt.step()
        tying.save(m, tmp_path / "m.safetensors")
        fresh = nn.ModuleDict({"a": nn.Linear(6, 6), "b": nn.Linear(6, 6)})
        tying.load(fresh, tmp_path / "m.safetensors")
        _used(fresh)
        refs += [weakref.ref(x) for x in (m, fresh, m["a"].weight, fresh["a"].weight, opt)]
        del m, fresh, opt
    gc.collect()
    assert [r for r in refs if r() is not None] == []
