"""FX graph quantization of ties whose uses are quantized in part (stop 50), and the qconfig
check without torch's private helpers.

- A whole-block tie (``share("*", like="0")``) whose qconfig mapping leaves one tied use
  float (``set_module_name("1.2", None)``): FX traces every tied use to one ``get_attr``
  node of the source, ``convert_fx`` folded it into the quantized use and the float use
  failed, ``KeyError: '_0_2_weight'`` after calibration, naming no tie (``prepare_fx``
  and ``prepare_qat_fx`` alike). The anchor is torch's own flow on the untied copy.
- ``prepare_fx``'s check of a ``qconfig`` left by an earlier prepare uses torch's
  private ``_get_flattened_qconfig_dict`` (and two public helpers of the deprecated
  ``torch.ao.quantization``); without them it falls back to equivalents, compared here
  with torch's.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.ao.quantization import (
    QConfigMapping,
    get_default_qat_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig,
    get_default_qconfig_mapping,
    quantize_fx,
)

import tying
from tying.interop import graph_quantization as gq

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning",
    "ignore:torch.ao.quantization is deprecated",
    "ignore:Please use quant_min and quant_max",
    "ignore:.*quantize_per_tensor",
)
X = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))


def _blocks(rules, train: bool) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        *[nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)) for _ in range(3)]
    )
    m.train(train)
    tying.Plan(rules).apply(m)
    return m


RULES = {
    "blocks": [tying.share("*", like="0")],
    "transposed": [
        tying.share(f"{i}.2.weight", like="0.2.weight", relation=tying.Transposed()) for i in (1, 2)
    ],
}


@pytest.mark.parametrize("qat", [False, True], ids=["fx", "qat"])
@pytest.mark.parametrize("float_at", ["1.2", "0.2"])
@pytest.mark.parametrize("rules", sorted(RULES))
def test_a_tie_quantized_at_some_uses_converts_as_the_untied_copy(qat, float_at, rules):
    tied = _blocks(RULES[rules], qat)
    untied = copy.deepcopy(tied)
    tying.untie(untied)
    qconfig = get_default_qat_qconfig("x86") if qat else get_default_qconfig("x86")
    mapping = QConfigMapping().set_global(qconfig).set_module_name(float_at, None)
    ours = (gq.prepare_qat_fx if qat else gq.prepare_fx)(tied, copy.deepcopy(mapping), (X,))
    plain = (quantize_fx.prepare_qat_fx if qat else quantize_fx.prepare_fx)(
        untied, copy.deepcopy(mapping), (X,)
    )
    if rules == "transposed":
        # the tied use reads the source through a transposed view, the untied copy a
        # contiguous weight: the float matmul may round the last bit otherwise (6e-8 on an
        # AMD EPYC, 0 on the Intel machines of earlier stops); the quantized model below
        # must still be equal to the bit
        torch.testing.assert_close(ours(X), plain(X), rtol=0, atol=1e-6)
    else:
        assert torch.equal(ours(X), plain(X))
    ours.eval(), plain.eval()
    assert torch.equal(quantize_fx.convert_fx(ours)(X), quantize_fx.convert_fx(plain)(X))


def test_a_qat_step_with_a_float_use_trains_the_one_tensor_with_every_use():
    """The source swapped to a QAT module and the tied reads hold one Parameter, whose
    gradient is the sum over the uses, as on the untied copy."""
    tied = _blocks(RULES["blocks"], True)
    untied = copy.deepcopy(tied)
    tying.untie(untied)
    mapping = QConfigMapping().set_global(get_default_qat_qconfig("x86"))
    mapping.set_module_name("1.2", None)
    ours = gq.prepare_qat_fx(tied, copy.deepcopy(mapping), (X,))
    plain = quantize_fx.prepare_qat_fx(untied, copy.deepcopy(mapping), (X,))
    ours(X).square().sum().backward()
    plain(X).square().sum().backward()
    weight = tied[0][2].weight
    assert ours.get_submodule("0.2").weight is weight and tied[1][2].weight is weight
    want = sum(plain.get_submodule(f"{i}.2").weight.grad for i in range(3))
    torch.testing.assert_close(weight.grad, want)


# -- the qconfig check without torch's helpers ------------------------------------------

_PRIVATE = [
    ("torch.ao.quantization.fx.qconfig_mapping_utils", "_get_flattened_qconfig_dict"),
    ("torch.ao.quantization.qconfig", "qconfig_equals"),
    ("torch.ao.quantization.quantize", "propagate_qconfig_"),
]


def _tied() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)).eval()
    tying.Plan([tying.share("2", like="0")]).apply(m)
    return m


@pytest.mark.parametrize("missing", [None, *range(len(_PRIVATE))])
def test_the_qconfig_check_works_without_torchs_helpers(monkeypatch, missing):
    import importlib

    if missing is not None:  # a torch release without it: `from ... import` fails
        module, name = _PRIVATE[missing]
        monkeypatch.delattr(importlib.import_module(module), name)
    helpers = gq._qconfig_helpers()
    if missing is not None:
        assert helpers[missing].__module__ == gq.__name__
    m = _tied()
    gq.prepare_fx(m, get_default_qconfig_mapping("x86"), (X,))
    gq.prepare_fx(m, get_default_qconfig_mapping("x86"), (X,))  # same settings: accepted
    with pytest.raises(ValueError, match=r"carry a qconfig other than the qconfig_mapping"):
        gq.prepare_qat_fx(m, get_default_qat_qconfig_mapping("qnnpack"), (X,))


QCONFIGS = [
    None,
    get_default_qconfig("x86"),
    get_default_qconfig("qnnpack"),
    get_default_qat_qconfig("x86"),
    get_default_qat_qconfig("qnnpack"),
    torch.ao.quantization.float16_dynamic_qconfig,
    torch.ao.quantization.default_dynamic_qconfig,
]


def test_the_fallbacks_agree_with_torch():
    from torch.ao.quantization.fx.qconfig_mapping_utils import _get_flattened_qconfig_dict
    from torch.ao.quantization.qconfig import _add_module_to_qconfig_obs_ctr, qconfig_equals
    from torch.ao.quantization.quantize import propagate_qconfig_

    lin = nn.Linear(2, 2)
    checked = [_add_module_to_qconfig_obs_ctr(q, lin) for q in QCONFIGS]  # as prepare leaves
    for a, b in itertools.product(QCONFIGS + checked, repeat=2):
        assert gq._qconfig_equals(a, b) == qconfig_equals(a, b)
    mapping = (
        QConfigMapping()
        .set_global(QCONFIGS[1])
        .set_object_type(nn.ReLU, None)
        .set_module_name("1.0", QCONFIGS[2])
    )
    assert gq._flattened_qconfig_dict(mapping) == _get_flattened_qconfig_dict(mapping)
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    model[1][1].qconfig = QCONFIGS[3]  # a module's own qconfig wins
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    gq._propagate_qconfig(ours, gq._flattened_qconfig_dict(mapping))
    propagate_qconfig_(theirs, _get_flattened_qconfig_dict(mapping))
    for (p, a), (_, b) in zip(ours.named_modules(), theirs.named_modules(), strict=True):
        assert qconfig_equals(a.qconfig, b.qconfig), p
