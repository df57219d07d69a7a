"""FX quantization of a tie read through a relation or a pruning mask: as the untied copy (stop 39).

Before: a tie whose source was pruned by ``torch.nn.utils.prune`` failed at the
first calibration call (``AttributeError: 'LinearReLU' object has no attribute
'weight_orig'``: the read of ``weight_orig`` was not re-pointed past fusion), and
then in ``convert_fx`` (``KeyError: _0_weight_orig``). A ``Transposed`` or
``Scaled`` tie ran, but FX observed the relation's ops as activations (per tensor)
before the weight observer, so the tied use was quantized 0.010 (``Transposed``)
and 0.029 (``Scaled``) away from the untied copy, with no error.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx
from torch.ao.quantization.quantize_fx import prepare_fx as torch_prepare_fx
from torch.ao.quantization.quantize_fx import prepare_qat_fx as torch_prepare_qat_fx
from torch.nn.utils import prune as torch_prune

import tying
from tying.interop.graph_quantization import prepare_fx, prepare_qat_fx

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore:.*quantize_per_tensor", "ignore:Please use quant_min"
)

RELATIONS = {"same": None, "transposed": tying.Transposed, "scaled": lambda: tying.Scaled(2.0)}


def _float(d_in: int, d_hid: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, d_hid), nn.ReLU(), nn.Linear(d_hid, d_in))


def _pair(relation: str, amount: float, d_in: int = 16, d_hid: int = 8, seed: int = 0):
    """A tied model (``2.weight`` reads ``0.weight``) and its untied anchor built by hand.

    The anchor's ``2.weight`` is what the tie computes, in plain PyTorch: the masked
    source, transposed or scaled; ``0.weight`` holds the mask made permanent.
    """
    if relation != "transposed":
        d_hid = d_in
    tied = _float(d_in, d_hid, seed).eval()
    untied = _float(d_in, d_hid, seed).eval()
    rel = RELATIONS[relation]
    rule = tying.share("2.weight", like="0.weight", **({"relation": rel()} if rel else {}))
    tying.Plan([rule]).apply(tied)
    if amount:
        torch_prune.l1_unstructured(tied[0], "weight", amount=amount)
    w = tied[0].weight_orig * tied[0].weight_mask if amount else tied[0].weight
    with torch.no_grad():
        untied[0].weight.copy_(w)
        untied[2].weight.copy_({"same": w, "transposed": w.T, "scaled": 2.0 * w}[relation])
    return tied, untied


def _convert(prepare, model, x, mapping):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(model, mapping, (x,))
        prepared(x)  # calibrate
        return convert_fx(prepared)


@pytest.mark.parametrize("relation", ["same", "transposed"])
def test_fx_on_a_pruned_tie_source_equals_the_untied_copy_with_the_mask_made_permanent(relation):
    tied, untied = _pair(relation, amount=0.5)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(tied(x), untied(x))  # the float models agree
    mapping = get_default_qconfig_mapping("x86")
    q = _convert(prepare_fx, tied, x, mapping)  # before: AttributeError ... 'weight_orig'
    want = _convert(torch_prepare_fx, untied, x, mapping)  # anchor: plain torch, untied
    assert torch.equal(q(x), want(x))
    assert tying.verify(tied) == 1 and hasattr(tied[0], "weight_mask")  # model as it was


@pytest.mark.parametrize("relation", ["transposed", "scaled"])
def test_fx_quantizes_a_relation_tie_as_the_untied_copy(relation):
    tied, untied = _pair(relation, amount=0.0)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    mapping = get_default_qconfig_mapping("x86")
    q = _convert(prepare_fx, tied, x, mapping)
    want = _convert(torch_prepare_fx, untied, x, mapping)
    # before: 0.010 (Transposed) and 0.029 (Scaled) away, the relation observed per tensor
    assert torch.equal(q(x), want(x))


@pytest.mark.parametrize("relation", ["transposed", "scaled"])
def test_qat_fx_fake_quantizes_a_relation_tie_once_as_the_untied_copy(relation):
    tied, untied = _pair(relation, amount=0.0)
    tied.train()
    untied.train()
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    mapping = get_default_qat_qconfig_mapping("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = prepare_qat_fx(tied, mapping, (x,))
        want = torch_prepare_qat_fx(untied, mapping, (x,))
    assert torch.equal(ours(x), want(x))  # before: 0.014 / 0.026 away
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt.zero_grad()
    ours(x).pow(2).mean().backward()
    opt.step()
    assert tying.verify(tied) == 1  # the model's tie holds the trained tensor
    assert torch.equal(tied[0].weight, dict(ours.named_parameters())["_tying_0_weight"])


@settings(derandomize=True, deadline=None, max_examples=8)
@given(
    relation=st.sampled_from(sorted(RELATIONS)),
    amount=st.sampled_from([0.0, 0.3, 0.7]),
    d_hid=st.integers(4, 12),
    seed=st.integers(0, 2**16),
)
def test_fx_quantizes_any_tied_read_as_plain_torch_quantizes_the_untied_copy(
    relation, amount, d_hid, seed
):
    # the kind of defect: a tied use's weight quantized otherwise than the untied
    # layer's (observed twice, or read from a module that fusion replaced)
    tied, untied = _pair(relation, amount, d_in=12, d_hid=d_hid, seed=seed)
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(seed))
    mapping = get_default_qconfig_mapping("x86")
    q = _convert(prepare_fx, tied, x, mapping)
    want = _convert(torch_prepare_fx, untied, x, mapping)
    assert torch.equal(q(x), want(x))


def _x86():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    return xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())


@pytest.mark.filterwarnings("ignore:The tensor attribute")  # export, on prune's hook
@pytest.mark.parametrize("relation", ["same", "transposed"])
def test_pt2e_on_a_pruned_tie_source_equals_plain_torchao_on_the_untied_pruned_copy(relation):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e as torch_prepare_pt2e

    from tying.interop.graph_quantization import prepare_pt2e

    tied, untied = _pair(relation, amount=0.5)
    mask = tied[0].weight_mask.clone()
    with torch.no_grad():  # the anchor: both layers pruned by plain torch, the same mask
        untied[0].weight.copy_(tied[0].weight_orig)
        untied[2].weight.copy_(tied[0].weight_orig if relation == "same" else tied[0].weight_orig.T)
    torch_prune.custom_from_mask(untied[0], "weight", mask)
    torch_prune.custom_from_mask(untied[2], "weight", mask if relation == "same" else mask.T)
    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    # before: ValueError "to is not an aten linear operator" (the source's mask.to(dtype),
    # read by the tied use too, counted inside the source's nn.Linear partition)
    ours = prepare_pt2e(tied, (x,), _x86())
    want = torch_prepare_pt2e(torch.export.export(untied, (x,)).module(), _x86())
    ours(x), want(x)  # calibrate
    assert torch.equal(convert_pt2e(ours)(x), convert_pt2e(want)(x))
