"""A model prepared once by ``prepare_fx``/``prepare_qat_fx`` is refused by a second prepare.

torch's FX prepare leaves a ``qconfig`` on the model's modules and reads it before the
mapping the next time: ``prepare_fx(x86)`` then ``prepare_qat_fx(qnnpack)`` of the same
tied model gave layer 0 the first call's per-channel observer instead of a fake-quant,
outputs 0.005 from a fresh model's, with no error. The anchor is torch's own
``prepare_qat_fx`` of a fresh, untied copy with the same weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization import (
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    quantize_fx,
)

import tying
from tying.interop.graph_quantization import prepare_fx, prepare_qat_fx

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning",
    "ignore:torch.ao.quantization is deprecated",
    "ignore:Please use quant_min and quant_max",
)
X = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))


def _tied():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)).eval()
    tying.Plan([tying.share("2", like="0")]).apply(m)
    return m


def _anchor_qat(model):
    """torch itself on a fresh untied copy with the same weights."""
    plain = copy.deepcopy(model)
    tying.untie(plain)
    return quantize_fx.prepare_qat_fx(
        plain.train(), get_default_qat_qconfig_mapping("qnnpack"), (X,)
    )


def test_a_second_prepare_of_the_same_model_is_refused_and_changes_nothing():
    model = _tied()
    prepare_fx(model, get_default_qconfig_mapping("x86"), (X,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    left = {p: m.qconfig for p, m in model.named_modules() if getattr(m, "qconfig", None)}
    with pytest.raises(
        ValueError,
        match=r"prepare_qat_fx: \d module\(s\) of the model carry a qconfig other than the "
        r"qconfig_mapping gives them \('0'",
    ):
        prepare_qat_fx(model, get_default_qat_qconfig_mapping("qnnpack"), (X,))
    assert {p: m.qconfig for p, m in model.named_modules() if getattr(m, "qconfig", None)} == left
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_copy_taken_after_a_prepare_is_refused_too():
    model = _tied()
    prepare_fx(model, get_default_qconfig_mapping("x86"), (X,))
    late = copy.deepcopy(model)  # carries torch's qconfig with it
    with pytest.raises(ValueError, match=r"carry a qconfig .*copy\.deepcopy\(model\)"):
        prepare_qat_fx(late.train(), get_default_qat_qconfig_mapping("qnnpack"), (X,))


def test_a_fresh_copy_prepares_as_torch_does_untied():
    model = _tied()
    float_model = copy.deepcopy(model)
    prepare_fx(model, get_default_qconfig_mapping("x86"), (X,))
    ours = prepare_qat_fx(float_model.train(), get_default_qat_qconfig_mapping("qnnpack"), (X,))
    anchor = _anchor_qat(_tied())
    ours.train(), anchor.train()
    torch.testing.assert_close(ours(X), anchor(X))


FLOWS = {
    "fx-x86": (prepare_fx, quantize_fx.prepare_fx, get_default_qconfig_mapping("x86")),
    "fx-qnnpack": (prepare_fx, quantize_fx.prepare_fx, get_default_qconfig_mapping("qnnpack")),
    "qat-qnnpack": (
        prepare_qat_fx,
        quantize_fx.prepare_qat_fx,
        get_default_qat_qconfig_mapping("qnnpack"),
    ),
}


@settings(derandomize=True, deadline=None, max_examples=9)
@given(first=st.sampled_from(sorted(FLOWS)), second=st.sampled_from(sorted(FLOWS)))
def test_a_second_prepare_equals_torch_on_a_fresh_copy_or_is_refused(first, second):
    """The kind of defect: whatever two flows run on one model, the second either gives
    what torch gives on a fresh untied copy (the same mapping: the leftover is what it
    would assign anyway) or is refused with the model's qconfigs left as they were."""
    model = _tied().train(first.startswith("qat"))
    FLOWS[first][0](model, FLOWS[first][2], (X,))
    ours, torch_fn, mapping = FLOWS[second]
    qat = second.startswith("qat")
    plain = _tied()
    tying.untie(plain)
    anchor = torch_fn(plain.train(qat), mapping, (X,))
    if first == second:
        prepared = ours(model.train(qat), mapping, (X,))
        torch.testing.assert_close(prepared(X), anchor(X))
    else:
        left = {p: m.qconfig for p, m in model.named_modules() if getattr(m, "qconfig", None)}
        with pytest.raises(ValueError, match="carry a qconfig other than"):
            ours(model.train(qat), mapping, (X,))
        assert {p: m.qconfig for p, m in model.named_modules() if getattr(m, "qconfig", None)} == (
            left
        )


def test_a_refused_prepare_leaves_no_qconfig_behind():
    """A failed call changes nothing: torch had attached its qconfig before tying refused
    the relation, and the second prepare (after the fix the message names) then read it."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    tying.Plan([tying.share("2.weight", relation=tying.Hashed(buckets=8))]).apply(m.eval())
    with pytest.raises(tying.TieError, match=r"prepare_fx: .*tying\.free\('2\.weight'\)"):
        prepare_fx(m, get_default_qconfig_mapping("qnnpack"), (X,))
    assert not [p for p, mod in m.named_modules() if getattr(mod, "qconfig", None)]
    tying.Plan([tying.free("2.weight")]).apply(m)  # the way out the message names
    prepared = prepare_fx(m, get_default_qconfig_mapping("qnnpack"), (X,))
    plain = copy.deepcopy(m)
    for mod in plain.modules():
        mod.__dict__.pop("qconfig", None)
    anchor = quantize_fx.prepare_fx(plain, get_default_qconfig_mapping("qnnpack"), (X,))
    torch.testing.assert_close(prepared(X), anchor(X))
