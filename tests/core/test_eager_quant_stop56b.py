"""torch.ao's eager quantization on a Plan-tied module is refused by name (stop 56).

torch looks a module's exact class up in its mappings; a tied module's class is a
generated ``TiedLinear``, found in none, so ``prepare_qat``, ``prepare`` + ``convert``
and ``quantize_dynamic`` left it in float with no error while the same model tied by
hand came back quantized.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import tying


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        tq.QuantStub(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), tq.DeQuantStub()
    )


def _plan_tied():
    m = _model()
    tying.Plan([tying.share("3.weight", like="1.weight")]).apply(m)
    return m


def _hand_tied():
    m = _model()
    m[3].weight = m[1].weight
    return m


def _prepare_qat(m):
    m.qconfig = tq.get_default_qat_qconfig("x86")
    return tq.prepare_qat(m.train())


def _static(m):
    m.qconfig = tq.get_default_qconfig("x86")
    p = tq.prepare(m.eval())
    p(torch.randn(16, 8))
    return tq.convert(p)


def _dynamic_set(m):
    return tq.quantize_dynamic(m, {nn.Linear})


def _dynamic_dict(m):
    return tq.quantize_dynamic(m, {nn.Linear: tq.default_dynamic_qconfig})


def _dynamic_by_name(m):
    return tq.quantize_dynamic(m, {"3": tq.default_dynamic_qconfig})


TOOLS = {
    "prepare_qat": _prepare_qat,
    "prepare": _static,
    "quantize_dynamic": _dynamic_set,
    "quantize_dynamic-dict": _dynamic_dict,
    "quantize_dynamic-by-name": _dynamic_by_name,
}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_eager_quantization_of_a_tied_module_is_refused_where_the_hand_tie_is_quantized(tool):
    run = TOOLS[tool]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        anchor = run(_hand_tied())
        assert type(anchor[3]) is not nn.Linear  # the hand-tied module is quantized
        m = _plan_tied()
        before = copy.deepcopy(m.state_dict())
        name = tool.split("-")[0]
        with pytest.raises(
            tying.TieError,
            match=rf"quantization\.{name}: '3' is a tied module \(TiedLinear, a Linear whose "
            r"3\.weight reads 1\.weight.*leave it in float.*FX or PT2E.*tying\.untie",
        ):
            run(m)
    # inplace=False: torch worked on a copy; the model is as it was
    assert [type(c).__name__ for c in m] == [
        "QuantStub",
        "Linear",
        "ReLU",
        "TiedLinear",
        "DeQuantStub",
    ]
    assert all("qconfig" not in c.__dict__ for c in m.children())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert tying.verify(m) == 1


def test_a_tied_module_torch_would_not_quantize_is_let_through():
    # a tied Embedding under quantize_dynamic({nn.Linear}): float on the hand tie too
    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Embedding(5, 4), "b": nn.Embedding(5, 4), "c": nn.Linear(4, 4)})
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = tq.quantize_dynamic(m, {nn.Linear})
    assert q["c"]._get_name() == "DynamicQuantizedLinear"
    assert type(q["b"]).__name__ == "TiedEmbedding"
    assert q["b"].weight is q["a"].weight


def test_the_fix_the_message_names_quantizes_every_linear():
    m = _plan_tied()
    tying.untie(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = _prepare_qat(m)
    assert type(q[1]) is type(q[3]) is torch.ao.nn.qat.Linear
