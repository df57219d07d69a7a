"""The relations record is read where the slots record was found (review 62).

``get_model_state_dict(DistributedDataParallel(m))`` strips ``module.`` from the keys but
keeps the metadata under ``module``; the stop-59 check reads the slots there, but the
stop-62 relations check read only the module's own entry (none): a Transposed-tied
model's state dict loaded strictly into a Same-tied one with no error (0.83 off).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

import tying


def _model(relation, seed=0):
    torch.manual_seed(seed)
    m = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    tying.Plan([tying.share("b.weight", like="a.weight", relation=relation)]).apply(m)
    return m


@pytest.fixture
def group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_ddp_stripped_state_dict_with_other_relations_is_refused(group):
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.nn.parallel import DistributedDataParallel

    src = _model(tying.Transposed())
    sd = get_model_state_dict(DistributedDataParallel(src))
    assert "tying.relations" not in sd._metadata.get("", {})  # the record sits at "module"
    m = _model(tying.Same(), seed=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(tying.TieError, match=r"other relations \(b\.weight: saved via Transposed"):
        m.load_state_dict(sd)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    same = _model(tying.Transposed(), seed=1)
    same.load_state_dict(sd)  # the same relations load
    x = torch.randn(2, 4)
    torch.testing.assert_close(same.b(x), src.b(x))


def test_removing_every_layer_source_first_gets_the_removed_source_advice():
    """``for layer in (a, b): remove_parametrizations(layer, "weight")`` (HiFi-GAN's
    idiom) removes the source first; b's refusal advised freeing b, which is refused."""
    from torch.nn.utils import parametrizations, parametrize

    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    parametrizations.weight_norm(m.a)
    parametrizations.weight_norm(m.b)
    tying.Plan([tying.share("b", like="a")]).apply(m)
    parametrize.remove_parametrizations(m.a, "weight")
    with pytest.raises(tying.TieError) as err:
        parametrize.remove_parametrizations(m.b, "weight")
    text = str(err.value)
    assert "the tie's source, was removed after the tie was made" in text
    assert "Untie the module first" not in text
    assert parametrize.is_parametrized(m.b, "weight")


@pytest.mark.parametrize(
    ("saved", "here"),
    [
        (tying.Transposed(), tying.Transposed(dims=(-2, -1))),
        (tying.Transposed(), tying.Transposed(dims=(1, 0))),
        (tying.Rotated(1), tying.Rotated(5)),
        (tying.Rotated(1), tying.Rotated(-3)),
        (tying.Flipped((-1,)), tying.Flipped((1,))),
        (tying.Rotated(2), tying.Flipped((0, 1))),
        (tying.Scaled(1.0), tying.Scaled(0.5)),  # the scale is stored: init is not read
    ],
    ids=repr,
)
def test_another_spelling_of_the_same_relation_loads(saved, here):
    src = _model(saved)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.25)
    m = _model(here, seed=1)
    m.load_state_dict(src.state_dict())
    x = torch.randn(2, 4)
    torch.testing.assert_close(m.b(x), src.b(x))
