"""A refusal at a tied slot names an untie that works from the model the user holds (stop 59).

The refusals of ``model.<slot> = p``, ``del``, ``register_buffer``, ``requires_grad_``,
``spectral_norm`` ... advised ``tying.Plan([tying.free('2.weight')]).apply(model)`` with the
path relative to the module the plan was applied to. When that module sits inside another
(the plan was applied to ``model["encoder"]``; the tied model was wrapped in an
``nn.Sequential``, a DDP-like ``.module`` wrapper, ``torch.compile``'s ``_orig_mod``), the
advice followed on the outer model was refused ("matches no parameter"), or, when the outer
model had a ``2.weight`` of its own, freed 0 slots with no error and the operation was
refused again. The advice now names the path from the outermost holder, says which module
``model`` is, and the root-relative call as well; each is followed literally here.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import tying
from tying.core import load_ancestors


def _tied():
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    tying.Plan([tying.share("2.weight", like="0.weight")]).apply(m)
    return m


class _Wrapper(nn.Module):  # what DDP / accelerate wrappers look like from outside
    def __init__(self, module):
        super().__init__()
        self.module = module


def _in_dict():
    outer = nn.ModuleDict({"encoder": nn.Sequential(), "decoder": nn.Linear(4, 4)})
    outer["encoder"] = inner = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    tying.Plan([tying.share("2.weight", like="0.weight")]).apply(inner)  # a plan on a part
    return outer, inner


def _in_sequential():  # the outer model has a 2.weight of its own: the old advice freed 0
    inner = _tied()
    return nn.Sequential(inner, nn.Tanh(), nn.Linear(4, 4)), inner


def _in_wrapper():
    inner = _tied()
    return _Wrapper(inner), inner


HOLDERS = {
    "dict": (_in_dict, "encoder"),
    "seq": (_in_sequential, "0"),
    "ddp": (_in_wrapper, "module"),
}

OPS = {
    "setattr": lambda mod: setattr(mod, "weight", nn.Parameter(torch.ones(4, 4))),
    "del": lambda mod: delattr(mod, "weight"),
    "register_parameter": lambda mod: mod.register_parameter(
        "weight", nn.Parameter(torch.ones(4, 4))
    ),
    "requires_grad_": lambda mod: mod.requires_grad_(False),
}

FREE = re.compile(r"tying\.Plan\(\[tying\.free\('([^']+)'\)\]\)\.apply\(model\)")
FROM_ROOT = re.compile(
    r"tying\.Plan\(\[tying\.free\('([^']+)'\)\]\)\.apply\(model\.get_submodule\('([^']+)'\)\)"
)


CASES = [("dict", "setattr"), ("seq", "setattr"), ("seq", "del"), ("ddp", "register_parameter")]
CASES += [("dict", "requires_grad_")]


@pytest.mark.parametrize(("holder", "op"), CASES)
def test_the_advice_works_from_the_outer_model(holder, op):
    make, prefix = HOLDERS[holder]
    outer, inner = make()
    with pytest.raises(tying.TieError, match=rf"free\('{prefix}\.2\.weight'\)") as err:
        OPS[op](inner[2])
    assert inner[2].weight is inner[0].weight  # refused: nothing changed
    path = FREE.search(str(err.value)).group(1)
    report = tying.Plan([tying.free(path)]).apply(outer)  # the advice, followed literally
    assert report.freed == [f"{prefix}.2.weight"]
    OPS[op](inner[2])  # now allowed
    if op == "del":
        assert "weight" not in dict(inner[2].named_parameters())
    else:
        assert inner[2].weight is not inner[0].weight


@pytest.mark.parametrize("holder", ["dict", "ddp"])
def test_the_root_relative_advice_works_too(holder):
    outer, inner = HOLDERS[holder][0]()
    text = _message(inner)
    assert "the paths above are relative to that Sequential" in text
    path, where = FROM_ROOT.search(text).groups()
    assert (path, where) == ("2.weight", HOLDERS[holder][1])
    tying.Plan([tying.free(path)]).apply(outer.get_submodule(where))
    del inner[2].weight
    assert not hasattr(inner[2], "weight")


def _message(inner) -> str:
    try:
        inner[2].weight = nn.Parameter(torch.ones(4, 4))
    except tying.TieError as e:
        return str(e)
    raise AssertionError("not refused")


def test_requires_grad_names_the_source_from_the_outer_model():
    outer, inner = _in_wrapper()
    with pytest.raises(tying.TieError, match=r"model\.get_parameter\('module\.0\.weight'\)"):
        inner[2].requires_grad_(False)
    outer.get_parameter("module.0.weight").requires_grad_(False)  # the advice, followed
    assert not inner[2].weight.requires_grad


def test_a_model_nobody_holds_keeps_the_short_advice():
    m = _tied()
    with pytest.raises(tying.TieError) as err:
        del m[2].weight
    assert "tying.Plan([tying.free('2.weight')]).apply(model))" in str(err.value)
    assert "relative to" not in str(err.value)


def test_a_tied_layer_wrapped_after_the_last_walk_has_its_parents():
    # the registration record holds the plain class (Linear) of a module a plan then gave a
    # class of its own (TiedLinear): the new parent was missed, ancestors() returned []
    _tied()  # the registration hook is installed
    load_ancestors._walk()
    inner = _tied()
    outer = nn.Sequential(inner)
    assert [m for m in load_ancestors.ancestors(inner[2])] == [inner, outer]


def test_the_prune_advice_prunes_the_tie_not_the_outer_models_own_layer():
    # the outer Sequential has a 2.weight of its own: prune(outer, "2.weight") pruned that
    # layer (8 zeros there, none in the tie) with no error
    from torch.nn.utils import prune

    from tying.interop.pruning import prune as tied_prune

    outer, inner = _in_sequential()
    own = outer[2].weight.detach().clone()
    with pytest.raises(tying.TieError, match=r"prune\(model, '0\.2\.weight', method") as err:
        prune.l1_unstructured(inner[2], "weight", amount=0.5)
    path = re.search(r"prune\(model, '([^']+)'", str(err.value)).group(1)
    tied_prune(outer, path, prune.l1_unstructured, amount=0.5)  # the advice, followed
    assert torch.equal(outer[2].weight, own)  # the outer model's own layer untouched
    assert int((inner[0].weight == 0).sum()) == 8 and torch.equal(inner[2].weight, inner[0].weight)
    assert tying.verify(outer) == 1


def test_the_optimizer_refusal_names_the_source_from_the_outer_model():
    # an optimizer over the tied layer alone leaves its source out; the advice named
    # model.get_parameter('0.weight'), which the outer model refused
    outer, inner = _in_sequential()
    opt = torch.optim.SGD(inner[2].parameters(), lr=0.1)
    outer(torch.randn(2, 4)).sum().backward()
    with pytest.raises(tying.TieError, match=r"model\.get_parameter\('0\.0\.weight'\)") as err:
        opt.step()
    path = re.search(r"get_parameter\('([^']+)'\)", str(err.value)).group(1)
    opt.add_param_group({"params": [outer.get_parameter(path)]})  # the advice, followed
    before = inner[0].weight.detach().clone()
    opt.step()
    assert not torch.equal(inner[0].weight, before) and inner[2].weight is inner[0].weight
