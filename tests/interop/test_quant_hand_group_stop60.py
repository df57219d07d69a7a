"""Quantizing a model whose one nn.Parameter sits in several modules: one refusal names them all (stop 60).

``tying.interop.quantization.quantize_dynamic`` / ``quantize_`` refuse a hand-made tie (one
``nn.Parameter`` in two modules) that touches a module to be quantized. The refusal named
one tie and one module per try: with the Parameter in three Linears, following its
``exclude=`` advice took three tries ({'1'}, then {'0'}, then {'2'}), and following its
plan took two. It now names every module of the Parameter, the ``exclude`` that covers
them, and one plan for all; either, followed once, is accepted.
"""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch

import tying
from tying.interop.quantization import quantize_dynamic

from .test_hand_tie_group_stop60 import _three_linears  # one Parameter in three Linears


def _refusal(model) -> str:
    with pytest.raises(tying.TieError, match=r"the same nn.Parameter is also at 2\.weight") as e:
        quantize_dynamic(model)
    return str(e.value)


def test_exclude_advice_covers_every_module_at_once():
    m = _three_linears(bias=True)
    msg = _refusal(m)
    exclude = eval(re.search(r"exclude=(\{.*?\})", msg).group(1))
    assert exclude == {"0", "1", "2"}
    q = quantize_dynamic(m, exclude=exclude)  # accepted at the first try (3 tries before)
    assert q[1].weight is q[0].weight and q[2].weight is q[0].weight  # still one Parameter
    assert type(q[3]).__module__.startswith("torch.ao.nn.quantized")
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.equal(q[:3](x), m[:3](x))  # the excluded modules stay float


def _follow_plans(m, msg: str) -> None:
    for plan in re.findall(r"tying\.Plan\(\[.*?\]\)", msg):
        eval(plan, {"tying": tying}).apply(m)


def _ao(m, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(m), {torch.nn.Linear})(x)


@pytest.mark.parametrize("bias", [True, False], ids=["own-biases", "no-bias"])
def test_plan_advice_keeps_the_model_and_is_accepted_at_once(bias):
    """The advice tied the Linears whole, biases included: each read the source's bias,
    0.069 off the model with no error (stop 60); now only modules whose every value agrees
    are tied whole, the rest get their own copy."""
    m = _three_linears(bias)
    x = torch.randn(5, 6)
    with torch.no_grad():
        before = m(x)
    want = _ao(m, x)
    msg = _refusal(m)
    assert ("1.bias" in msg) == bias
    _follow_plans(m, msg)
    with torch.no_grad():
        assert torch.equal(m(x), before)  # following the advice changed nothing
    q = quantize_dynamic(m)  # accepted at the first try (2 tries before)
    assert (q[1] is q[0] and q[2] is q[0]) == (not bias)  # tied whole: quantized once
    assert torch.equal(q(x), want)


def test_one_hand_tie_with_own_bias_advice_keeps_the_model():
    """One Parameter in two Linears with their own biases: the advice tied them whole and
    the model changed by 0.069, no error (stop 60); now it gives the module its own copy."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)).eval()
    m[1].weight = m[0].weight
    x = torch.randn(5, 6)
    with torch.no_grad():
        before = m(x)
    with pytest.raises(tying.TieError, match=r"'1' holds other values than '0' in 1\.bias") as e:
        quantize_dynamic(m)
    _follow_plans(m, str(e.value))
    with torch.no_grad():
        assert torch.equal(m(x), before)
    assert torch.equal(quantize_dynamic(m)(x), _ao(m, x))


def test_torchao_filter_fn_advice_names_every_fqn():
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig

    from tying.interop.quantization import quantize_

    m = _three_linears(bias=True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(tying.TieError, match=r"returning False for the fqn '0' or '1' or '2'"):
        quantize_(m, Int8WeightOnlyConfig())
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    quantize_(
        m,
        Int8WeightOnlyConfig(),
        filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Linear) and fqn not in {"0", "1", "2"},
    )
    assert m[1].weight is m[0].weight
