"""FX and PT2E quantization of tied models: every use quantized as an untied copy's, no fused source."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.ao.quantization import (
    QConfigMapping,
    get_default_qat_qconfig_mapping,
    get_default_qconfig,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import convert_fx
from torch.ao.quantization.quantize_fx import prepare_fx as torch_prepare_fx

import tying
from tying.interop.graph_quantization import prepare_fx, prepare_pt2e, prepare_qat_fx

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore:.*quantize_per_tensor", "ignore:Please use quant_min"
)


class Stack(nn.Module):
    """ALBERT-style: three Linear layers, the last two tied whole to the first."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16, 16) for _ in range(3)])
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.out(x)


class ConvBN(nn.Module):
    """c2 reads c1's weight; c1 is followed by a BatchNorm that FX folds into it."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.c2(self.bn(self.c1(x)))


def _stack(seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    m = Stack()
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(m)
    return m


def _sequential(seed: int = 0) -> nn.Sequential:
    # Linear + ReLU modules: FX fuses the source into a LinearReLU
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    tying.Plan([tying.share("2", like="0")]).apply(m)
    return m


def _conv_bn(seed: int = 0) -> ConvBN:
    torch.manual_seed(seed)
    m = ConvBN()
    with torch.no_grad():  # a trained BatchNorm: folding it changes the weight
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.weight.uniform_(0.5, 2)
    tying.Plan([tying.share("c2.weight", like="c1.weight")]).apply(m)
    return m


def _untied(m):
    ref = copy.deepcopy(m)
    tying.untie(ref)
    return ref


def _fx(prepare, m, x, mapping):
    prepared = prepare(copy.deepcopy(m), mapping, (x,))
    prepared(x)  # calibrate
    return convert_fx(prepared)


def _observers(prepared) -> int:
    return sum(
        n.op == "call_module" and "activation_post_process" in n.target
        for n in prepared.graph.nodes
    )


@pytest.mark.parametrize("make", [_stack, _sequential], ids=["stack", "linear_relu"])
@pytest.mark.parametrize("object_type", [False, True], ids=["default", "object_type"])
def test_fx_quantizes_every_tied_use_as_an_untied_copy(make, object_type):
    m = make().eval()
    x = torch.randn(32, 16)
    if object_type:
        mapping = QConfigMapping().set_object_type(nn.Linear, get_default_qconfig("x86"))
        if make is _sequential:  # torch itself refuses to fuse Linear (qconfig) + ReLU (none)
            mapping.set_object_type(nn.ReLU, get_default_qconfig("x86"))
    else:
        mapping = get_default_qconfig_mapping("x86")
    q = _fx(prepare_fx, m, x, mapping)
    want = _fx(torch_prepare_fx, _untied(m), x, mapping)  # anchor: an untied copy, plain torch
    assert torch.equal(q(x), want(x))
    tying.verify(m)  # the model itself is as it was


def test_plain_fx_fails_on_a_tied_stack_naming_nothing_and_leaves_tied_uses_float():
    # the defect the wrapper fixes, pinned on plain torch
    m = _stack().eval()
    x = torch.randn(8, 16)
    with pytest.raises(TypeError, match="not method"):
        _fx(torch_prepare_fx, m, x, get_default_qconfig_mapping("x86"))(x)
    mapping = QConfigMapping().set_object_type(nn.Linear, get_default_qconfig("x86"))
    plain = torch_prepare_fx(copy.deepcopy(m), mapping, (x,))
    ours = prepare_fx(m, mapping, (x,))
    untied = torch_prepare_fx(_untied(m), mapping, (x,))
    # plain: the tied layers' functional linears took no qconfig (4 observers, not 8);
    # ours observes them too (and their weights, which untied modules observe inside)
    assert _observers(plain) == 4 and _observers(untied) == 8 and _observers(ours) == 9


def test_fx_fusing_a_conv_bn_source_no_longer_feeds_the_folded_weight_to_the_tied_use():
    m = _conv_bn().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = m(x)
        plain = torch_prepare_fx(copy.deepcopy(m), QConfigMapping(), (x,))  # fusion only
        assert (plain(x) - want).abs().max() > 0.1  # c2 read the BN-folded c1 weight
        ours = prepare_fx(m, QConfigMapping(), (x,))
        torch.testing.assert_close(ours(x), want)
    mapping = get_default_qconfig_mapping("x86")
    q = _fx(prepare_fx, m, x, mapping)
    assert torch.equal(q(x), _fx(torch_prepare_fx, _untied(m), x, mapping)(x))


def test_qat_fx_trains_one_tensor_at_every_use_and_converts():
    m = _stack().train()
    x = torch.randn(32, 16)
    prepared = prepare_qat_fx(m, get_default_qat_qconfig_mapping("x86"), (x,))
    untied = prepare_qat_fx(_untied(m), get_default_qat_qconfig_mapping("x86"), (x,))
    assert torch.equal(prepared(x), untied(x))  # every use fake-quantized as the untied layers
    assert len(list(prepared.parameters())) == 4  # one weight and bias for the three layers
    opt = torch.optim.SGD(prepared.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        prepared(x).pow(2).mean().backward()
        opt.step()
    tying.verify(m)  # the model's own tie still holds: it shares the trained tensor
    assert torch.equal(
        m.layers[2].weight, dict(prepared.named_parameters())["_tying_layers_0_weight"]
    )
    prepared.eval()
    with torch.no_grad():
        fake = prepared(x)
    q = convert_fx(prepared)
    assert (q(x) - fake).abs().max() < 0.02


def test_fx_refuses_a_qconfig_mapping_it_cannot_read():
    with pytest.raises(
        TypeError, match="qconfig_mapping must be a torch.ao.quantization.QConfigMapping"
    ):
        prepare_fx(_stack().eval(), get_default_qconfig("x86"), (torch.randn(2, 16),))


def _x86(qat: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    return xiq.X86InductorQuantizer().set_global(
        xiq.get_default_x86_inductor_quantization_config(is_qat=qat)
    )


def _lm(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.body = nn.Embedding(20, 16), nn.Linear(16, 16)
            self.head = nn.Linear(16, 20, bias=False)

        def forward(self, tok):
            return self.head(torch.relu(self.body(self.embed(tok))))

    m = LM()
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    return m


def _autoencoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 16))
    tying.Plan([tying.share("2.weight", like="0.weight", relation=tying.Transposed())]).apply(m)
    return m


@pytest.mark.parametrize(
    "make, x",
    [
        (_stack, torch.randn(32, 16)),
        (_lm, torch.randint(0, 20, (3, 5))),
        (_autoencoder, torch.randn(32, 16)),
    ],
    ids=["stack", "lm_head", "transposed"],
)
def test_pt2e_quantizes_every_tied_use_as_an_untied_copy(make, x):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e as torch_prepare_pt2e

    m = make().eval()

    def converted(prepared):
        prepared(x)
        out = convert_pt2e(prepared)
        float_linears = [
            n
            for n in out.graph.nodes
            if n.target == torch.ops.aten.linear.default
            and "dequantize" not in str(n.args[1].target)  # a float weight
        ]
        return out, len(float_linears)

    ours, ours_float = converted(prepare_pt2e(m, (x,), _x86()))
    ref = _untied(m)
    want, want_float = converted(
        torch_prepare_pt2e(torch.export.export(ref, (x,)).module(), _x86())
    )
    assert (ours_float, want_float) == (0, 0)
    assert torch.equal(ours(x), want(x))
    # the defect, pinned on plain torchao: the tied uses stayed float without a word
    _, plain_float = converted(torch_prepare_pt2e(torch.export.export(m, (x,)).module(), _x86()))
    assert plain_float == (2 if make is _stack else 1)


def test_pt2e_qat_keeps_one_tensor_and_fake_quantizes_every_use():
    m = _stack().train()
    x = torch.randn(32, 16)
    prepared = prepare_pt2e(m, (x,), _x86(qat=True), qat=True)
    assert len(list(prepared.parameters())) == 4
    fake_quant = [n for n in prepared.graph.nodes if "activation_post_process" in n.name]
    untied = prepare_pt2e(_untied(m), (x,), _x86(qat=True), qat=True)
    assert (
        len(fake_quant)
        == len([n for n in untied.graph.nodes if "activation_post_process" in n.name]) - 2
    )  # the untied copy observes its two extra weights; the tie reads one, observed per use
    assert torch.equal(prepared(x), untied(x))
