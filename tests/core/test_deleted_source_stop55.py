"""A tie's source deleted from its module, and a tied slot deleted from a
``ParameterDict`` (stop 55).

``del pd["x"]`` under ``share("y", like="x", relation=Scaled())``: ``tying.verify``
counted the tie as holding, and a read of ``pd["y"]`` said the *target* had no attribute
``y`` (an AttributeError raised inside the slot's property makes Python fall back to
``__getattr__``); under ``Same`` verify failed with that bare AttributeError. Now the
read and verify name the deleted source. ``pd.pop("y")`` of a tied slot dropped the key
from the dict's list, then failed: the dict no longer listed a tie it still held; it is
refused before anything changes.
"""

import pytest
import torch
from torch import nn

import tying


def _pd(rel):
    torch.manual_seed(0)
    pd = nn.ParameterDict({"x": nn.Parameter(torch.randn(3)), "y": nn.Parameter(torch.randn(3))})
    tying.Plan([tying.share("y", like="x", relation=rel)]).apply(pd)
    return pd


@pytest.mark.parametrize("rel", [tying.Same(), tying.Scaled(3.0), tying.Flipped((0,))], ids=repr)
def test_a_deleted_source_is_named_at_the_read_and_by_verify(rel, tmp_path):
    pd = _pd(rel)
    del pd["x"]
    with pytest.raises(
        tying.TieError, match=r"y reads x through a tie .* x is gone from its module"
    ):
        pd["y"]
    with pytest.raises(tying.TieError, match=r"y: reads x, which is no parameter of the model"):
        tying.verify(pd)
    with pytest.raises(tying.TieError, match=r"\bx\b"):
        tying.save(pd, tmp_path / "p.safetensors")
    assert not (tmp_path / "p.safetensors").exists()


def test_a_deleted_linear_source_is_named():
    m = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)})
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
    del m["a"].weight
    with pytest.raises(tying.TieError, match=r"b\.weight reads a\.weight .* gone"):
        m["b"](torch.ones(1, 2))


def test_popping_a_tied_slot_of_a_parameter_dict_is_refused_with_nothing_changed():
    pd = _pd(tying.Scaled(3.0))
    with pytest.raises(tying.TieError, match=r"del / pop of y, a tied slot .* untie it first"):
        pd.pop("y")
    assert list(pd.keys()) == ["x", "y"] and tying.verify(pd) == 1
    assert torch.equal(pd["y"], 3.0 * pd["x"])
    tying.Plan([tying.free("y")]).apply(pd)  # the fix it names
    pd.pop("y")
    assert list(pd.keys()) == ["x"]
