"""Stop 60: ``tying.load`` of a deeper tied stack's file (6 layers into 4) printed the first
rule that failed, "pattern 'layers.4.weight' matches no parameter or module; closest:
layers.3.weight", which reads as a typo in a pattern the user never wrote. The refusal now
names the slots the model does not have and the fix; a file whose slots all exist keeps the
rule's own message (a shape that does not fit, say).
"""

import pytest
import torch
from torch import nn

import tying


def _stack(n: int) -> nn.ModuleDict:
    torch.manual_seed(n)
    return nn.ModuleDict(
        {"norm": nn.BatchNorm1d(4), "layers": nn.ModuleList(nn.Linear(4, 4) for _ in range(n))}
    )


_PLAN = tying.Plan([tying.share("layers.*", like="layers.0")])


@pytest.mark.parametrize("tied", [False, True])
def test_a_deeper_stack_is_named_by_its_missing_slots(tmp_path, tied):
    deep = _stack(6)
    _PLAN.apply(deep)
    path = tying.save(deep, tmp_path / "deep.safetensors")
    model = _stack(4)
    if tied:
        _PLAN.apply(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=r"do not fit this model: the file ties or stores 4 slot\(s\) this model does not "
        r"have \(layers\.4\.\*, layers\.5\.\*\).*build the model the file was saved from",
    ):
        tying.load(model, path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    deeper = _stack(6)  # the advice, followed
    tying.load(deeper, path)
    assert tying.verify(deeper) == 10 and torch.equal(
        deeper.layers[5].weight, deep.layers[0].weight
    )


def test_a_file_whose_slots_all_exist_keeps_the_rules_message(tmp_path):
    ae = nn.ModuleDict({"enc": nn.Linear(4, 2), "dec": nn.Linear(2, 4)})
    tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]).apply(
        ae
    )
    path = tying.save(ae, tmp_path / "ae.safetensors")
    square = nn.ModuleDict({"enc": nn.Linear(4, 2), "dec": nn.Linear(2, 3)})
    with pytest.raises(tying.TieError, match=r"do not fit this model: rule 0 .*shape") as err:
        tying.load(square, path)
    assert "does not have" not in str(err.value)


@pytest.mark.parametrize(
    "rule",
    [
        tying.share("b.weight", like="a.weight"),
        tying.share("b.weight", like="a.weight", relation=tying.Scaled()),
        tying.share("b.weight", relation=tying.Mirrored()),
    ],
)
def test_a_parametrized_slot_of_the_same_architecture_is_not_another_architecture(tmp_path, rule):
    # review of stop 60: b.weight (under parametrize) and the relation's own storage
    # (b.weight_scale, b.weight_physical) were counted as "slots this model does not have"
    # and the refusal advised building "the model the file was saved from", which this is
    from torch.nn.utils import parametrize

    class Identity(nn.Module):
        def forward(self, x):
            return x

    torch.manual_seed(0)
    saved = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    tying.Plan([rule]).apply(saved)
    path = tying.save(saved, tmp_path / "ab.safetensors")
    model = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    parametrize.register_parametrization(model["b"], "weight", Identity())
    with pytest.raises(tying.TieError, match=r"do not fit this model: rule 0 .*parametrize") as err:
        tying.load(model, path)
    assert "does not have" not in str(err.value)
    parametrize.remove_parametrizations(model.get_submodule("b"), "weight")  # the advice
    tying.load(model, path)
    assert tying.verify(model) == 1
