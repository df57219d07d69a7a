"""Stop 60: a plan over a member under ``torch.nn.utils.parametrize`` (``weight_norm``'s
parametrizations form on the source, the usual GAN/WaveNet layer) advised
"call parametrize.remove_parametrizations(module, 'weight') first; closest: b.weight": no
module was named (and ``b.weight`` was the rule's own target). The advice now names the
module by its path, and, followed as written, lets the plan through with the value kept.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import tying


@pytest.mark.parametrize(
    "rule", [("dec.1.weight", "enc.0.weight"), ("enc.0.weight", "dec.1.weight")]
)
def test_the_advice_names_the_module_and_works_when_followed(rule):
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "enc": nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 4))),
            "dec": nn.Sequential(nn.ReLU(), nn.Linear(4, 4)),
        }
    )
    normed = model.enc[0].weight.detach().clone()
    target, source = rule
    plan = tying.Plan([tying.share(target, like=source)])
    with pytest.raises(tying.TieError) as err:
        plan.apply(model)
    msg = str(err.value)
    fix = (
        "torch.nn.utils.parametrize.remove_parametrizations(model.get_submodule('enc.0'), 'weight')"
    )
    assert fix in msg and "closest" not in msg and "(module," not in msg
    eval(fix, {"torch": torch, "model": model})  # the advice, followed as written
    plan.apply(model)
    assert model.dec[1].weight is model.enc[0].weight and tying.verify(model) == 1
    if source == "enc.0.weight":
        torch.testing.assert_close(model.dec[1].weight.detach(), normed)


def test_a_parametrized_member_at_the_root_names_the_model():
    model = parametrizations.weight_norm(nn.Linear(3, 3))
    model.register_parameter("extra", nn.Parameter(torch.zeros(3, 3)))
    plan = tying.Plan([tying.share("extra", like="weight")])
    fix = "torch.nn.utils.parametrize.remove_parametrizations(model, 'weight')"
    with pytest.raises(tying.TieError) as err:
        plan.apply(model)
    assert fix in str(err.value)
    eval(fix, {"torch": torch, "model": model})
    plan.apply(model)
    assert model.extra is model.weight
