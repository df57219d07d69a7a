"""A tie next to a BatchNorm under graph quantization: PT2E folds it as the untied copy, FX warns.

Stop 51: torchao's PT2E folds a BatchNorm into the conv before it by re-assigning the
attribute that conv reads. A tie is one attribute read at every use, so the fold reached
the use no BN follows (outputs 0.24 from eager after ``prepare_pt2e``, no error). And
``prepare_pt2e(..., qat=True)`` of any model with a BatchNorm failed in ``convert_pt2e``
(``KeyError: 'nn_module_stack'``). FX does not fuse a tied use with its own BN (stop 50
open): it now says so at prepare time, naming the tie and the fix.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx
from torch.ao.quantization.quantize_fx import prepare_fx as torch_prepare_fx

import tying
from tying.interop.graph_quantization import prepare_fx, prepare_pt2e, prepare_qat_fx

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning",
    "ignore:.*quantize_per_tensor",
    "ignore:Please use quant_min",
    "ignore:.*is an Enum subclass",
)


class UseThenBN(nn.Module):
    """c2 reads c0's weight; a BatchNorm follows c2 (the tied use) only."""

    def __init__(self):
        super().__init__()
        self.c0, self.c2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.c2(torch.relu(self.c0(x))))


class SourceThenBN(UseThenBN):
    """A BatchNorm follows c0 (the tie's source) only."""

    def forward(self, x):
        return self.c2(torch.relu(self.bn(self.c0(x))))


def _make(cls, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = cls()
    with torch.no_grad():  # a trained BatchNorm: folding it changes the weight
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.weight.uniform_(0.5, 2)
        m.bn.bias.uniform_(-1, 1)
    tying.Plan([tying.share("c2.weight", like="c0.weight")]).apply(m)
    return m


def _untied(m: nn.Module) -> nn.Module:
    ref = copy.deepcopy(m)
    tying.untie(ref)
    return ref


def _x86(qat: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    config = xiq.get_default_x86_inductor_quantization_config(is_qat=qat)
    return xiq.X86InductorQuantizer().set_global(config)


@pytest.mark.parametrize("cls", [UseThenBN, SourceThenBN], ids=["use_bn", "source_bn"])
def test_pt2e_folds_a_batchnorm_next_to_a_tie_as_on_the_untied_copy(cls):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e as torch_prepare_pt2e

    m = _make(cls).eval()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ours = prepare_pt2e(m, (x,), _x86())
    with torch.no_grad():
        # before: the BN-folded weight reached the other use too (0.24 off eager)
        torch.testing.assert_close(ours(x), m(x))  # observers only: eager outputs
    want = torch_prepare_pt2e(torch.export.export(_untied(m), (x,)).module(), _x86())
    want(x)  # calibrate
    assert torch.equal(convert_pt2e(ours)(x), convert_pt2e(want)(x))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert tying.verify(m) == 1


def test_pt2e_refuses_a_batchnorm_after_a_weight_a_relation_computes_naming_the_tie():
    torch.manual_seed(0)
    m = UseThenBN().eval()
    tying.Plan([tying.share("c2.weight", like="c0.weight", relation=tying.Scaled(0.5))]).apply(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    # before: torchao's bare "ValueError: Expected get_attr node, got call_function"
    with pytest.raises(
        tying.TieError, match=r"c2.weight <- c0.weight \(Scaled.*tying.free\('c2.weight'\)"
    ):
        prepare_pt2e(m, (x,), _x86())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def _qat_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()


def test_pt2e_qat_keeps_the_module_stack_torchao_finds_a_batchnorm_update_by():
    # CI size of the next test: convert_pt2e looks the BN's num_batches_tracked.add_(1)
    # up by the BatchNorm class in its nn_module_stack, which the annotation dropped
    # (checked on the graph prepare_pt2e hands to torchao: a QAT prepare takes a minute)
    from tying.interop.graph_quantization import _name_base_classes

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model = _qat_model()
    ours = torch.export.export(model, (x,)).module()
    _name_base_classes(ours, model)
    adds = [n for n in ours.graph.nodes if n.target == torch.ops.aten.add_.Tensor]
    assert adds
    for node in adds:
        classes = [cls for _, cls in node.meta["nn_module_stack"].values()]
        assert "torch.nn.modules.batchnorm.BatchNorm2d" in classes


@pytest.mark.slow  # torchao's QAT fold traces its conv-bn patterns: minutes on 2 cores
def test_pt2e_qat_of_a_model_with_a_batchnorm_converts_as_torchao():
    from torchao.quantization.pt2e.export_utils import _move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    # untied: the failure was in how every model's graph is annotated, tie or not
    m = _qat_model()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = prepare_pt2e(copy.deepcopy(m), (x,), _x86(qat=True), qat=True)
    want = prepare_qat_pt2e(torch.export.export(copy.deepcopy(m), (x,)).module(), _x86(True))
    assert torch.equal(ours(x), want(x))  # one training forward: BN statistics move
    _move_exported_model_to_eval(ours)
    _move_exported_model_to_eval(want)
    # before: KeyError: 'nn_module_stack' (BN's num_batches_tracked.add_ lost its stack)
    assert torch.equal(convert_pt2e(ours)(x), convert_pt2e(want)(x))


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
def test_fx_warns_at_prepare_that_a_tied_conv_is_not_fused_with_its_batchnorm(qat):
    m = _make(UseThenBN)
    m.train(qat)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    prepare = prepare_qat_fx if qat else prepare_fx
    mapping = get_default_qconfig_mapping("x86")
    with pytest.warns(
        UserWarning, match=r"'c2.weight' \(tied to 'c0.weight'\) before BatchNorm 'bn'"
    ):
        prepare(copy.deepcopy(m), mapping, (x,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # nothing to say: no quantization, or no tie
        prepare_fx(copy.deepcopy(m).eval(), QConfigMapping(), (x,))
        freed = copy.deepcopy(m).eval()
        tying.Plan([tying.free("c2.weight")]).apply(freed)  # the fix the warning names
        p = prepare_fx(freed, mapping, (x,))
    assert not [w for w in caught if "BatchNorm" in str(w.message)]
    p(x)
    want = torch_prepare_fx(_untied(m).eval(), mapping, (x,))
    want(x)
    assert torch.equal(convert_fx(p)(x), convert_fx(want)(x))
