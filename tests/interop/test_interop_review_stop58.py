"""Review of stop 58 (441c4a9, tying.interop): advice that, followed, still fails or changes
what the user asked for, and a user's exclusion that matches nothing and goes unreported.

- A config (or quantizer selection) that covers part of SEVERAL groups tied whole (a layer
  left out whole: its q and its o) was refused one group per try; the printed free() /
  exclude= fixed one group, and the next call named the next (a Llama MLP tied across layers
  with gate/up/down and layers_to_transform=[1]: 3 refusals). Every group is named at once.
- quantize_dynamic's printed exclude= dropped the caller's own exclusions: followed, a head
  the caller had excluded was quantized.
- target_parameters on a module tied whole that peft's LoRA cannot wrap (MoE experts with a
  raw Parameter, the case target_parameters exists for) advised target_modules=[...]; followed,
  peft raised "Target module Experts() is not supported".
- get_peft_model / from_pretrained on a model with a module tied whole: the user's own
  exclude_modules that matches nothing did not warn (tying's tied paths always matched),
  where plain peft warns.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import tying
from tests.interop.stack_models import StackNet

peft = pytest.importorskip("peft", reason="the interop extra (peft) is not installed")
from tying.interop import quantization  # noqa: E402
from tying.interop.lora import from_pretrained, get_peft_model, merge_and_unload  # noqa: E402

X = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
NOT_EXCLUDED = ".*no modules were excluded"


def Net() -> StackNet:
    return StackNet(head_out=8)


def _net() -> Net:
    net = Net().eval()
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(net)
    return net


def _config(**kw):
    return peft.LoraConfig(r=2, init_lora_weights=False, **kw)


def _follow(msg: str, net: nn.Module) -> None:
    code = re.findall(r"tying\.Plan\(\[.*?\]\)\.apply\(model\)", msg)
    assert code, msg
    for line in code:
        exec(line, {"tying": tying, "model": net})


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_layer_left_out_whole_is_named_once_and_its_free_fix_is_accepted():
    config = _config(target_modules=["q", "o"], layers_to_transform=[1], layers_pattern="layers")
    net = _net()
    with pytest.raises(tying.TieError, match=r"layers\.0\.o.*layers\.0\.q") as err:
        get_peft_model(net, config)
    _follow(str(err.value), net)
    pm = get_peft_model(net, config).eval()  # one try, not one per module of the layer
    with torch.no_grad():
        adapted = pm(X)
        merged = merge_and_unload(pm)(X)
    assert torch.allclose(merged, adapted, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_quantize_dynamic_exclude_fix_keeps_the_callers_exclusions_and_every_group():
    net = _net()
    with pytest.raises(tying.TieError, match="quantize_dynamic: the modules at") as err:
        quantization.quantize_dynamic(
            net, {nn.Linear}, dtype=torch.qint8, exclude={"head", "layers.2"}
        )
    fix = eval(re.search(r"exclude=(\{.*?\})", str(err.value)).group(1))
    q = quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8, exclude=fix)
    dyn = torch.ao.nn.quantized.dynamic.Linear
    assert not isinstance(q.head, dyn)  # the caller excluded it: still float
    assert not any(isinstance(m, dyn) for m in (q.layers[0].q, q.layers[2].o))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantize_names_every_group_a_filter_fn_splits():
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig

    with pytest.raises(tying.TieError, match=r"layers\.0\.o.*likewise.*layers\.0\.q"):
        quantization.quantize_(
            _net(),
            Int8WeightOnlyConfig(),
            filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and not fqn.startswith("layers.2"),
        )


class Experts(nn.Module):  # MoE experts: a raw Parameter, what target_parameters is for
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 8, 8) * 0.3)

    def forward(self, x):
        return torch.einsum("bti,eio->bto", x, self.w)


class MoE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([Experts() for _ in range(3)])

    def forward(self, x):
        for layer in self.layers:
            x = x + torch.tanh(layer(x))
        return x


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_target_parameters_on_tied_experts_gives_a_fix_peft_accepts():
    def moe():
        net = MoE().eval()
        tying.Plan([tying.share("layers.*", like="layers.0")]).apply(net)
        return net

    config = _config(target_modules=[], target_parameters=["w"])
    with pytest.raises(tying.TieError, match="target_parameters entry 'w'") as err:
        get_peft_model(moe(), config)
    msg = str(err.value)
    named = re.search(r"target_modules=(\[.*?\])", msg)
    if named:  # the advice given: it must work
        get_peft_model(moe(), _config(target_modules=eval(named.group(1))))
    net = moe()
    _follow(msg, net)
    pm = get_peft_model(net, config).eval()
    with torch.no_grad():
        adapted = pm(X)
        merged = merge_and_unload(pm)(X)
    assert torch.allclose(merged, adapted, atol=1e-6)


def test_a_users_exclusion_matching_nothing_warns_on_a_model_tied_whole(tmp_path):
    config = _config(target_modules=["q"], exclude_modules=["nothing"])
    with pytest.warns(UserWarning, match=NOT_EXCLUDED):
        pm = get_peft_model(_net(), config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=NOT_EXCLUDED):
        from_pretrained(_net(), str(tmp_path))
    with warnings.catch_warnings():  # an exclusion that matches: no such warning
        warnings.filterwarnings("error", message=NOT_EXCLUDED)
        get_peft_model(_net(), _config(target_modules=["q", "head"], exclude_modules=["head"]))
