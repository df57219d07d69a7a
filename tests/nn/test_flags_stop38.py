"""On/off settings of the layers are bools, not truth values (stop 38).

``bool(tied)`` read ``tied="no"`` (or ``"False"``, ``"off"``) as True: the tied layer
the caller switched off was built, and ``batch_first="no"`` read the batch as time,
with no error. Every such setting is refused unless it is ``True``/``False`` (NumPy's
``np.bool_`` too, and the ints 0/1 as ``nn.Linear(bias=0)`` takes them), naming the
layer and the argument; ``from_logits`` had the same
fix earlier in this stop (``test_settings_stop38.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
import tying.nn as tnn

# (layer, argument): build(value) -> layer
BUILDS = {
    ("Attention", "causal"): lambda v: tnn.Attention(8, 2, causal=v),
    ("Attention", "bias"): lambda v: tnn.Attention(8, 2, bias=v),
    ("TransformerBlock", "cross"): lambda v: tnn.TransformerBlock(8, 2, cross=v),
    ("Attention", "causal "): lambda v: tnn.TransformerBlock(8, 2, causal=v),  # via the block
    ("TiedAutoencoder", "tied"): lambda v: tnn.TiedAutoencoder(6, 3, tied=v),
    ("TiedAutoencoder", "bias"): lambda v: tnn.TiedAutoencoder(6, 3, bias=v),
    ("MultiHopGraphConv", "shared"): lambda v: tnn.MultiHopGraphConv(4, 3, 2, shared=v),
    ("MultiHopGraphConv", "bias"): lambda v: tnn.MultiHopGraphConv(4, 3, 2, bias=v),
    ("GroupConv2d", "tied"): lambda v: tnn.GroupConv2d(2, 3, 3, tied=v),
    ("GroupConv2d", "bias"): lambda v: tnn.GroupConv2d(2, 3, 3, bias=v),
    ("LiftingConv2d", "bias"): lambda v: tnn.LiftingConv2d(2, 3, 3, bias=v),
    ("TiedGateLSTM", "tie_gates"): lambda v: tnn.TiedGateLSTM(4, 5, tie_gates=v),
    ("TiedGateLSTM", "batch_first"): lambda v: tnn.TiedGateLSTM(4, 5, batch_first=v),
    ("TiedResidualNet", "tied"): lambda v: tnn.TiedResidualNet(3, 5, 4, tied=v),
    ("Siamese", "tied"): lambda v: tnn.Siamese(nn.Linear(4, 3), tied=v),
    ("SymmetricConv1d", "tied"): lambda v: tnn.SymmetricConv1d(2, 3, 5, tied=v),
    ("SymmetricConv1d", "bias"): lambda v: tnn.SymmetricConv1d(2, 3, 5, bias=v),
    ("TiedUNet", "tied"): lambda v: tnn.TiedUNet(1, 2, (4, 8), tied=v),
    ("LocallyConnected2d", "bias"): lambda v: tnn.LocallyConnected2d(2, 3, 6, 3, bias=v),
    ("HashedLinear", "bias"): lambda v: tnn.HashedLinear(6, 4, 9, bias=v),
    ("normalized_adjacency", "self_loops"): lambda v: tnn.normalized_adjacency(
        torch.tensor([[0, 1], [1, 2]]), 3, self_loops=v
    ),
    ("EncoderDecoder.kv_plan", "across_layers"): lambda v: tnn.EncoderDecoder(
        11, 8, 2, 2, 7
    ).kv_plan(across_layers=v),
}


@pytest.mark.parametrize(("layer", "arg"), list(BUILDS))
@pytest.mark.parametrize("value", ["no", "False", 2, -1, 1.0, None])
def test_a_setting_that_is_not_a_bool_is_refused_by_name(layer, arg, value):
    with pytest.raises(TypeError, match=rf"{layer}: {arg.strip()} must be True or False, got "):
        BUILDS[layer, arg](value)


@pytest.mark.parametrize("value", [0, 1, np.int64(0), np.int64(1)])
def test_the_ints_0_and_1_are_taken_as_torch_takes_bias_0(value):
    layer = tnn.HashedLinear(6, 4, 9, bias=value)
    assert (layer.bias is not None) == bool(value)
    assert tnn.TiedAutoencoder(6, 3, tied=value).tied is bool(value)


def test_tied_no_used_to_build_the_tied_layer():
    """The case that went wrong: "no" built the tie; False builds none."""
    with pytest.raises(TypeError, match=r"tied must be True or False, got 'no' \(str\)"):
        tnn.TiedUNet(1, 2, (4, 8), tied="no")
    untied = tnn.TiedUNet(1, 2, (4, 8), tied=False)
    c = tying.count(untied)
    assert c.logical == c.physical  # nothing tied


def test_batch_first_no_used_to_read_the_batch_as_time():
    torch.manual_seed(0)
    with pytest.raises(TypeError, match=r"TiedGateLSTM: batch_first must be True or False"):
        tnn.TiedGateLSTM(4, 5, batch_first="no")
    time_first = tnn.TiedGateLSTM(4, 5, batch_first=np.False_)  # NumPy's bools are bools
    assert time_first.batch_first is False
    x = torch.randn(3, 2, 4)  # (T, B, in)
    out, (h, _) = time_first(x)
    assert out.shape == (3, 2, 5) and h.shape == (2, 5)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    key=st.sampled_from(sorted(BUILDS)),
    value=st.one_of(
        st.booleans(),
        st.sampled_from([np.True_, np.False_]),
        st.text(max_size=6),
        st.integers(-2, 2),
        st.floats(allow_nan=True),
        st.none(),
    ),
)
def test_property_a_setting_is_built_exactly_as_its_bool_or_refused(key, value):
    """Built only from a bool, and then exactly as the Python bool builds it (same
    parameter names, shapes and tie count); anything else refused by name."""
    build = BUILDS[key]
    exact_int = isinstance(value, int) and not isinstance(value, bool) and value in (0, 1)
    if not isinstance(value, bool | np.bool_) and not exact_int:
        with pytest.raises(TypeError, match=rf"{key[1].strip()} must be True or False"):
            build(value)
        return
    torch.manual_seed(0)
    got = build(value)
    torch.manual_seed(0)
    want = build(bool(value))
    if key[0] == "normalized_adjacency":  # a tensor: the same entries
        torch.testing.assert_close(got.to_dense(), want.to_dense(), rtol=0, atol=0)
        return
    if key[0] == "EncoderDecoder.kv_plan":  # a plan: the same ties once applied
        built = []
        for plan in (got, want):
            torch.manual_seed(0)
            model = tnn.EncoderDecoder(11, 8, 2, 2, 7)
            plan.apply(model)
            c = tying.count(model)
            built.append((c.logical, c.physical))
        assert built[0] == built[1]
        return
    assert [(n, p.shape) for n, p in got.named_parameters()] == [
        (n, p.shape) for n, p in want.named_parameters()
    ]
    a, b = tying.count(got), tying.count(want)
    assert (a.logical, a.physical) == (b.logical, b.physical)
