"""Stop 50: partial state dict loads (``strict=False``) into ``SymmetricConv1d`` follow
``nn.Conv1d``: the entries present are loaded, the absent ones reported missing.

A state dict saved from a tied layer records its filter length; a load of its bias alone
into a layer of another length was refused ("every filter would change") although no
filter was loaded, where ``nn.Conv1d`` loads the bias and reports the weight missing.
The same holds inside a larger model; the taps of another length are still refused. A
weight the tie cannot hold (not a palindrome) is still refused, with ``strict=False``
too, and nothing changes.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from tying.nn import SymmetricConv1d


def _saved(module: nn.Module) -> dict:
    # through torch.save, as a user's checkpoint is: the filter-length record travels
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("saved_k, k", [(6, 5), (5, 6), (4, 3)])
def test_the_bias_alone_of_another_filter_length_loads_as_nn_conv1d_loads_it(saved_k, k):
    torch.manual_seed(0)
    state = _saved(SymmetricConv1d(2, 3, saved_k))
    bias_only = {"bias": state["bias"]}
    bias_only = type(state)(bias_only)
    bias_only._metadata = state._metadata  # the record of length saved_k comes along
    conv = SymmetricConv1d(2, 3, k)
    taps = conv.weight_physical.detach().clone()
    result = conv.load_state_dict(bias_only, strict=False)
    anchor = nn.Conv1d(2, 3, k)  # the anchor: the same partial load into a plain conv
    anchor_result = anchor.load_state_dict({"bias": state["bias"]}, strict=False)
    assert result.missing_keys == ["weight_physical"] and result.unexpected_keys == []
    assert anchor_result.missing_keys == ["weight"]
    assert torch.equal(conv.bias, state["bias"]) and torch.equal(anchor.bias, state["bias"])
    assert torch.equal(conv.weight_physical, taps)  # the filters are not touched


@pytest.mark.parametrize("keys", [("bias",), ("weight_physical",), ()])
def test_a_partial_load_of_a_tied_state_loads_what_it_holds(keys):
    torch.manual_seed(1)
    source, conv = SymmetricConv1d(2, 3, 5), SymmetricConv1d(2, 3, 5)
    before = _state(conv)
    state = _saved(source)
    part = type(state)({k: state[k] for k in keys})
    part._metadata = state._metadata
    result = conv.load_state_dict(part, strict=False)
    assert sorted(result.missing_keys) == sorted(set(before) - set(keys))
    for name, value in conv.state_dict().items():
        expected = state[name] if name in keys else before[name]
        assert torch.equal(value, expected), name
    x = torch.randn(2, 2, 11)
    if "weight_physical" in keys:  # the loaded taps read as the source's filters
        assert torch.equal(conv.weight, source.weight)
        assert torch.allclose(conv(x) - conv.bias[:, None], source(x) - source.bias[:, None])


def test_a_palindromic_plain_conv_weight_alone_loads_and_the_bias_is_reported_missing():
    torch.manual_seed(2)
    anchor = nn.Conv1d(2, 3, 5)
    with torch.no_grad():
        anchor.weight.copy_((anchor.weight + anchor.weight.flip(-1)) / 2)
    conv = SymmetricConv1d(2, 3, 5)
    bias = conv.bias.detach().clone()
    result = conv.load_state_dict({"weight": anchor.weight.detach()}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == []
    assert torch.equal(conv.weight, anchor.weight) and torch.equal(conv.bias, bias)
    x = torch.randn(3, 2, 13)
    with torch.no_grad():
        anchor.bias.copy_(bias)
    assert torch.allclose(conv(x), anchor(x), atol=1e-6)


@pytest.mark.parametrize("strict", [True, False])
def test_a_weight_that_is_not_a_palindrome_is_refused_and_nothing_changes(strict):
    torch.manual_seed(3)
    anchor = nn.Conv1d(2, 3, 5)  # an ordinary conv would take it; the tie cannot hold it
    conv = SymmetricConv1d(2, 3, 5)
    before = _state(conv)
    with pytest.raises(RuntimeError, match=r"(?s)nothing was loaded.*weight is tied .*Mirrored"):
        conv.load_state_dict(anchor.state_dict(), strict=strict)
    for name, value in conv.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_inside_a_model_a_partial_load_without_the_taps_loads_and_with_them_is_refused():
    torch.manual_seed(4)
    saved = _saved(nn.Sequential(SymmetricConv1d(2, 3, 6), nn.Flatten(), nn.Linear(3, 2)))
    model = nn.Sequential(SymmetricConv1d(2, 3, 5), nn.Flatten(), nn.Linear(3, 2))
    taps = model[0].weight_physical.detach().clone()
    part = type(saved)({k: v for k, v in saved.items() if k != "0.weight_physical"})
    part._metadata = saved._metadata
    result = model.load_state_dict(part, strict=False)
    assert result.missing_keys == ["0.weight_physical"]
    assert torch.equal(model[0].bias, saved["0.bias"])
    assert torch.equal(model[2].weight, saved["2.weight"])
    assert torch.equal(model[0].weight_physical, taps)
    # the taps themselves are still refused, naming the layer's path and the fix
    with pytest.raises(ValueError, match=r"at '0'.*length 6.*kernel_size=6 and load into"):
        model.load_state_dict(saved, strict=False)
    assert torch.equal(model[0].weight_physical, taps)
