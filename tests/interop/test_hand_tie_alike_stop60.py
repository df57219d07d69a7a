"""Hand-tie advice followed on modules sharing more than one Parameter (stop 60 review).

Three Linears sharing their weight and their bias by hand (``m[1].bias = m[0].bias``
too): the whole-module advice freed the weights only, so the biases stayed hand ties and
the ``share`` was refused at the next try; followed on, ``quantize_dynamic`` was still
refused after 5 tries. ``target_parameters`` named one module per refusal (three tries
for three Linears). The advice now frees every tensor the modules hold alike and names
every module at once; followed once, the call is accepted and outputs are kept.
"""

from __future__ import annotations

import re

import pytest
import torch

import tying

peft = pytest.importorskip("peft")
lora = pytest.importorskip("tying.interop.lora")
quantization = pytest.importorskip("tying.interop.quantization")


def _model(bias_too: bool = True) -> torch.nn.Sequential:
    torch.manual_seed(0)
    m = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)])
    m[1].weight = m[2].weight = m[3].weight = m[0].weight
    if bias_too:
        m[1].bias = m[2].bias = m[3].bias = m[0].bias
    return m


def _apply_plans(model, msg: str) -> None:
    plans = re.findall(r"tying\.Plan\(\[.*?\]\)", msg)
    assert plans, msg
    for plan in plans:
        eval(plan, {"tying": tying}).apply(model)  # the advice, as printed


X = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))


def test_quantize_dynamic_advice_frees_the_bias_held_alike_and_works_in_one_step():
    model = _model()
    before = model(X)
    with pytest.raises(tying.TieError, match=r"tying\.free\('1\.bias'\)") as err:
        quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    assert model[1].bias is model[0].bias  # nothing changed
    _apply_plans(model, str(err.value))
    torch.testing.assert_close(model(X), before, rtol=0, atol=0)
    q = quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    assert q[1] is q[0] and q[3] is q[0]
    assert (q(X) - before).abs().max().item() < 0.05


def test_target_parameters_names_every_module_and_its_advice_works_once():
    model = _model()
    config = peft.LoraConfig(r=2, target_modules=[], target_parameters=["0.weight"])
    with pytest.raises(
        tying.TieError, match=r"also at 1\.weight, 2\.weight.*instead of target_parameters"
    ) as err:
        lora.get_peft_model(model, config)
    msg = str(err.value)
    _apply_plans(model, msg)
    (targets,) = re.findall(r"pass target_modules=(\[[^\]]*\])", msg)
    pm = lora.get_peft_model(model, peft.LoraConfig(r=2, target_modules=eval(targets)))
    inner = pm.base_model.model
    assert inner[1] is inner[0] and inner[3] is inner[0]  # one adapter serves every use


def test_target_parameters_with_own_biases_gives_copies_in_one_step():
    model = _model(bias_too=False)
    before = model(X)
    config = lambda: peft.LoraConfig(r=2, target_modules=[], target_parameters=["0.weight"])  # noqa: E731
    with pytest.raises(tying.TieError, match=r"holds other values than '0' in 1\.bias") as err:
        lora.get_peft_model(model, config())
    _apply_plans(model, str(err.value))
    pm = lora.get_peft_model(model, config())
    torch.testing.assert_close(pm(X), before, rtol=0, atol=0)


def test_get_peft_model_advice_on_weight_and_bias_held_alike_works_in_one_step():
    model = _model()
    before = model(X)
    with pytest.raises(tying.TieError, match=r"tying\.free\('3\.bias'\)") as err:
        lora.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["0"]))
    msg = str(err.value)
    _apply_plans(model, msg)
    (targets,) = re.findall(r"pass target_modules=(\[[^\]]*\])", msg)
    pm = lora.get_peft_model(model, peft.LoraConfig(r=2, target_modules=eval(targets)))
    torch.testing.assert_close(pm(X), before, rtol=0, atol=0)
    assert tying.verify(pm) > 0
