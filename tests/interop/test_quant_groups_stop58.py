"""A quantizer selection holding some paths of a module tied whole: the group is named (stop 58).

``tying.interop.quantization`` refused such a selection pair by pair: "'layers.2.q' is tied
whole to 'layers.0.q' but only one of them is selected for quantization; select both or
neither". Followed with "neither" (excluding 'layers.0.q' too), it named 'layers.1.q' next:
an ALBERT-style stack of n layers took n - 1 tries, and the message named neither
``exclude=`` nor ``filter_fn``. Now the whole group is named with the argument that fixes it,
and following it is accepted (outputs equal to torch.ao on an untied copy).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import tying
from tests.interop.stack_models import StackNet
from tying.interop import quantization

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
GROUP = r"\['layers.0.q', 'layers.1.q', 'layers.2.q'\]"
X = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))


def Net() -> StackNet:
    """An ALBERT-style stack of three blocks (tied by _stack) and an untied head."""
    return StackNet(head_out=11)


def _stack():
    net = Net().eval()
    untied = copy.deepcopy(net)
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(net)
    for layer in untied.layers[1:]:  # the untied reference computes what the tied model does
        layer.load_state_dict(untied.layers[0].state_dict())
    return net, untied


@pytest.mark.parametrize("exclude", [{"layers.2.q"}, {"layers.0.q"}, {"layers.0.q", "layers.1.q"}])
def test_quantize_dynamic_names_the_group_and_its_exclude_fix_is_accepted(exclude):
    net, untied = _stack()
    with torch.no_grad():
        before = net(X)
    with pytest.raises(
        tying.TieError,
        match=rf"quantize_dynamic: the modules at {GROUP} are one module tied whole .* "
        rf"and {re.escape(str(sorted(exclude)))} are not; select all of them or none",
    ) as err:
        quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8, exclude=exclude)
    with torch.no_grad():
        assert torch.equal(net(X), before)  # nothing changed
    fix = re.search(r"exclude=(\{.*?\})", str(err.value)).group(1)
    q = quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8, exclude=eval(fix))
    ref = torch.ao.quantization.quantize_dynamic(untied, {nn.Linear}, dtype=torch.qint8)
    for layer in ref.layers:  # as the fix says: every q of the group left in float
        layer.q = untied.layers[0].q
    assert type(q.layers[2].q) is not type(q.layers[0].o)
    with torch.no_grad():
        assert torch.equal(q(X), ref(X))


def test_quantize_names_the_group_and_its_filter_fn():
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig

    net, _ = _stack()
    with pytest.raises(
        tying.TieError,
        match=rf"quantize_: the modules at {GROUP} .* a filter_fn that returns the same for "
        r"every one of these fqns",
    ):
        quantization.quantize_(
            net,
            Int8WeightOnlyConfig(),
            filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn != "layers.2.q",
        )
