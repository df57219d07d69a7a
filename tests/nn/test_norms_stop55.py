"""weight_norm / spectral_norm on a tied slot of a tying.nn layer (stop 55).

The old-style ``torch.nn.utils.weight_norm`` / ``spectral_norm`` died on a bare
``KeyError: 'weight'`` (the slot is served by the tie, not stored on its module): each is
now a ``TieError`` (still a ``KeyError``) naming the layer, the slot, what it reads and
the fix, raised before torch changes anything. The ``parametrizations`` APIs keep torch's
``ValueError``, whose text prints the module with its ties. The fix the message gives
(untie, then normalise) is checked against the normalised weight built by hand.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations
from torch.nn.utils import spectral_norm as hook_spectral_norm
from torch.nn.utils import weight_norm as hook_weight_norm

import tying
import tying.nn as tnn
from tying.core import TieError

# (layer, module path of the tied slot, slot, what it reads, an input)
CASES = {
    "HashedLinear": (
        lambda: tnn.HashedLinear(6, 4, 9),
        "",
        "weight",
        "weight_physical",
        lambda: (torch.randn(3, 6),),
    ),
    "TiedGateLSTM": (
        lambda: tnn.TiedGateLSTM(3, 4),
        "",
        "weight_ih_i",
        "weight_ih_f",
        lambda: (torch.randn(2, 5, 3),),
    ),
    "SymmetricConv1d": (
        lambda: tnn.SymmetricConv1d(2, 3, 5),
        "",
        "weight",
        "weight_physical",
        lambda: (torch.randn(2, 2, 9),),
    ),
    "GroupConv2d": (
        lambda: tnn.GroupConv2d(2, 3, 3, group="C4"),
        "kernels",
        "r_r",
        "kernels.e_e",
        lambda: (torch.randn(1, 2, 4, 6, 6),),
    ),
    "LiftingConv2d": (
        lambda: tnn.LiftingConv2d(2, 3, 3),
        "kernels",
        "r",
        "kernels.e",
        lambda: (torch.randn(1, 2, 6, 6),),
    ),
    "TiedAutoencoder": (
        lambda: tnn.TiedAutoencoder(6, 3),
        "decoder",
        "weight",
        "encoder.weight",
        lambda: (torch.randn(2, 6),),
    ),
    "Siamese": (
        lambda: tnn.Siamese(nn.Linear(4, 3)),
        "right",
        "bias",
        "left.bias",
        lambda: (torch.randn(2, 4), torch.randn(2, 4)),
    ),
    "MultiHopGraphConv": (
        lambda: tnn.MultiHopGraphConv(4, 3, 2),
        "hops.2",
        "weight",
        "hops.0.weight",
        lambda: (torch.randn(3, 4), tnn.normalized_adjacency(torch.tensor([[0, 1], [1, 2]]), 3)),
    ),
    "TiedUNet": (
        lambda: tnn.TiedUNet(1, 2, (4, 8)),
        "up.0",
        "weight",
        "down.0.weight",
        lambda: (torch.randn(1, 1, 8, 8),),
    ),
}
HOOK_NORMS = {"weight_norm(hooks)": hook_weight_norm, "spectral_norm(hooks)": hook_spectral_norm}
NORMS = {
    **HOOK_NORMS,
    "weight_norm": parametrizations.weight_norm,
    "spectral_norm": parametrizations.spectral_norm,
}


def _module(layer, path):
    return layer.get_submodule(path) if path else layer


def _snapshot(layer):
    return type(layer), {k: v.clone() for k, v in layer.state_dict().items()}


def _assert_unchanged(layer, snap, path, slot):
    cls, state = snap
    assert type(layer) is cls
    now = layer.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], v) for k, v in state.items())
    module = _module(layer, path)
    assert not module._forward_pre_hooks  # no norm hook left behind
    assert slot not in module._parameters  # still served by the tie
    tying.verify(layer)


def _call(norm, module, slot):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old API's deprecation notice
        NORMS[norm](module, slot)


@pytest.mark.parametrize("norm", sorted(HOOK_NORMS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_an_old_style_norm_on_a_tied_slot_names_the_tie_and_the_fix(name, norm):
    make, path, slot, source, inputs = CASES[name]
    torch.manual_seed(0)
    layer = make().eval()
    x = inputs()
    out = layer(*x)
    snap = _snapshot(layer)
    full = ".".join(p for p in (name, path, slot) if p)
    with pytest.raises(
        TieError, match=rf"^{full} is tied \(it reads {source} via .*untie first"
    ) as e:
        _call(norm, _module(layer, path), slot)
    assert isinstance(e.value, KeyError)  # old handlers of torch's KeyError still catch it
    _assert_unchanged(layer, snap, path, slot)
    first = out[0] if isinstance(out, tuple) else out
    again = layer(*x)
    torch.testing.assert_close(again[0] if isinstance(again, tuple) else again, first)


@pytest.mark.parametrize("norm", ["weight_norm", "spectral_norm"])
@pytest.mark.parametrize("name", ["HashedLinear", "TiedGateLSTM", "GroupConv2d"])
def test_a_parametrization_norm_on_a_tied_slot_keeps_torchs_error_naming_the_tie(name, norm):
    make, path, slot, source, _ = CASES[name]
    layer = make()
    snap = _snapshot(layer)
    with pytest.raises(ValueError, match=rf"tied: .*{slot} <- "):
        _call(norm, _module(layer, path), slot)
    _assert_unchanged(layer, snap, path, slot)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_names_its_tied_slots_too(how):
    lstm = tnn.TiedGateLSTM(3, 4)
    twin = copy.deepcopy(lstm) if how == "deepcopy" else pickle.loads(pickle.dumps(lstm))
    with pytest.raises(TieError, match=r"TiedGateLSTM.weight_ih_o is tied \(it reads weight_ih_f"):
        hook_spectral_norm(twin, "weight_ih_o")
    assert twin._parameters.keys() == lstm._parameters.keys()
    # a name that is neither stored nor tied is torch's plain KeyError, as before
    with pytest.raises(KeyError, match="weight_ih_x") as e:
        hook_spectral_norm(twin, "weight_ih_x")
    assert not isinstance(e.value, TieError)


def test_the_fix_untie_then_normalise_equals_the_hand_normalised_weight():
    torch.manual_seed(1)
    layer = tnn.HashedLinear(6, 4, 9).double()
    dense = layer.weight.detach().clone()  # the logical (4, 6) weight the buckets give
    with pytest.raises(TieError, match="untie first"):
        _call("weight_norm(hooks)", layer, "weight")
    tying.untie(layer)
    assert torch.equal(layer.weight, dense)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        hook_weight_norm(layer)  # now the layer's own parameter: torch's normalisation
    with torch.no_grad():
        layer.weight_g.mul_(2.0)  # g moves the norm of each row, v its direction
    x = torch.randn(5, 6, dtype=torch.float64)
    ref_w = 2.0 * dense  # g = 2‖v‖ per row: g · v / ‖v‖ = 2 v
    torch.testing.assert_close(layer(x), F.linear(x, ref_w, layer.bias), atol=1e-12, rtol=0)
    # after untie the slot is a stored name: a second norm is torch's own refusal
    with pytest.raises(RuntimeError, match="two weight_norm hooks"):
        _call("weight_norm(hooks)", layer, "weight")


def test_a_nested_tied_slot_is_named_by_its_path_from_the_outer_layer():
    net = tnn.Siamese(tnn.TiedAutoencoder(6, 3))
    snap = _snapshot(net)
    with pytest.raises(TieError, match=r"^Siamese\.left\.decoder\.weight is tied \(it reads left"):
        _call("spectral_norm(hooks)", net.left.decoder, "weight")
    with pytest.raises(TieError, match=r"^Siamese\.right\.weight is tied \(it reads left\.weight"):
        _call("weight_norm(hooks)", tnn.Siamese(tnn.HashedLinear(6, 3, 7)).right, "weight")
    _assert_unchanged(net, snap, "left.decoder", "weight")
