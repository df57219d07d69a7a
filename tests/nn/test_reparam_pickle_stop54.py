"""weight_norm / spectral_norm on the layers, and pickling a tied LocallyConnected2d (stop 54).

- ``torch.save(layer)`` of a tied ``LocallyConnected2d`` (``tie_filters``) died in
  torch.nn.utils.parametrize ("Serialization of parametrized modules is only supported
  through state_dict()"), though the untied layer saved: it now saves as the tie it is.
- ``weight_norm`` / ``spectral_norm`` (both torch APIs) on a layer's plain parameter give
  the anchor's output (``nn.LSTM`` / ``F.conv2d`` with the normalised weight built by hand);
  on a tied slot, or on the source a tied slot reads, they are refused, never silently
  ignored.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.nn.utils import spectral_norm as hook_spectral_norm
from torch.nn.utils import weight_norm as hook_weight_norm

from tying.core import TieError
from tying.nn import HashedLinear, LiftingConv2d, LocallyConnected2d, SymmetricConv1d, TiedGateLSTM


def _sgd_step(module: nn.Module, lr: float = 0.5) -> None:
    """An SGD step by hand (torch.optim's first step imports dynamo: tens of seconds)."""
    with torch.no_grad():
        for p in module.parameters():
            p.sub_(lr * p.grad)


class _Scale(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


# ---- pickling a tied LocallyConnected2d -------------------------------------------------
def test_tied_locally_connected_pickles_whole_and_stays_tied():
    torch.manual_seed(0)
    lc = LocallyConnected2d(2, 3, (6, 7), 3, stride=2, padding=1).tie_filters().eval()
    x = torch.randn(2, 2, 6, 7)
    buf = io.BytesIO()
    torch.save(lc, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert back.is_tied and not back.training
    assert sum(p.numel() for p in back.parameters()) == 3 * 2 * 3 * 3 + 3  # one filter, one bias
    conv = lc.to_conv()  # the anchor: the one shared filter as a convolution
    torch.testing.assert_close(back(x), conv(x))
    # the original is untouched by being pickled, and the copy is independent of it
    torch.testing.assert_close(lc(x), conv(x))
    back.train()
    back(x).square().sum().backward()
    _sgd_step(back)
    assert torch.equal(back.weight, back.weight[0, 0].expand_as(back.weight))  # tie holds
    torch.testing.assert_close(lc(x), conv(x))
    # saved as one filter, not one per position (the untied layer's file is larger)
    untied = LocallyConnected2d(2, 3, (6, 7), 3, stride=2, padding=1)
    assert len(pickle.dumps(lc)) < len(pickle.dumps(untied))


def test_locally_connected_pickle_refuses_other_parametrizations_by_name():
    lc = LocallyConnected2d(2, 3, 5, 3).tie_filters()
    parametrize.register_parametrization(lc, "weight", _Scale())  # stacked on the tie
    with pytest.raises(TypeError, match=r"LocallyConnected2d: pickling .*'weight': \['_Scale'\]"):
        pickle.dumps(lc)
    x = torch.randn(1, 2, 5, 5)
    assert lc(x).shape == (1, 3, 3, 3)  # the layer works as before the refusal


def test_deepcopy_of_a_tied_locally_connected_has_its_own_tie():
    # torch's deepcopy of a parametrized module shared the class parametrize made: removing
    # the copy's tie deleted the original's weight ("has no attribute 'weight'")
    torch.manual_seed(3)
    lc = LocallyConnected2d(2, 3, (5, 6), 3).tie_filters().eval()
    x = torch.randn(2, 2, 5, 6)
    conv = lc.to_conv()
    twin = copy.deepcopy(lc)
    assert type(twin) is not type(lc) and twin.is_tied and not twin.training
    assert sum(p.numel() for p in twin.parameters()) == 3 * 2 * 3 * 3 + 3
    torch.testing.assert_close(twin(x), conv(x))
    parametrize.remove_parametrizations(twin, "weight")
    torch.testing.assert_close(lc(x), conv(x))  # the original still tied and working
    assert lc.is_tied
    plain = LocallyConnected2d(2, 3, (5, 6), 3)
    plain_twin = copy.deepcopy(plain)  # an untied layer copies as any module does
    assert plain_twin.weight.data_ptr() != plain.weight.data_ptr()
    torch.testing.assert_close(plain_twin(x), plain(x))
    scaled = LocallyConnected2d(2, 3, (5, 6), 3).tie_filters()
    parametrize.register_parametrization(scaled, "weight", _Scale())  # not only the tie
    torch.testing.assert_close(copy.deepcopy(scaled)(x), scaled(x))  # copied as torch does


# ---- weight_norm / spectral_norm ----------------------------------------------------------
def _wn(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """weight_norm by hand (dim=0): ``g · v / ‖v‖`` per output row."""
    return g * v / v.flatten(1).norm(dim=1).view(-1, *[1] * (v.ndim - 1))


@pytest.mark.parametrize("api", ["hooks", "parametrizations"])
def test_weight_norm_on_lstm_weight_hh_equals_nn_lstm(api):
    torch.manual_seed(1)
    lstm = TiedGateLSTM(3, 4)
    x = torch.randn(2, 5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the hook API
        if api == "hooks":
            hook_weight_norm(lstm, "weight_hh")
        else:
            parametrizations.weight_norm(lstm, "weight_hh")
    lstm(x)[0].sum().backward()
    _sgd_step(lstm)  # g and v move: the anchor must read the new ones
    if api == "hooks":
        v, g = lstm.weight_hh_v, lstm.weight_hh_g
    else:
        v = lstm.parametrizations.weight_hh.original1
        g = lstm.parametrizations.weight_hh.original0
    ref = nn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        w_ih = [lstm.weight_ih_i, lstm.weight_ih_f, lstm.weight_ih_g, lstm.weight_ih_o]
        ref.weight_ih_l0.copy_(torch.cat(w_ih))
        ref.weight_hh_l0.copy_(_wn(v, g))
        ref.bias_ih_l0.copy_(lstm.bias)
        ref.bias_hh_l0.zero_()
        torch.testing.assert_close(lstm.eval()(x)[0], ref(x)[0])
    assert lstm.weight_ih_i is lstm.weight_ih_f  # the gate tie is untouched


@pytest.mark.parametrize("api", ["hooks", "parametrizations"])
def test_weight_norm_on_untied_lifting_kernel_equals_conv(api):
    torch.manual_seed(2)
    layer = LiftingConv2d(2, 3, 3, tied=False)
    x = torch.randn(2, 2, 7, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if api == "hooks":
            hook_weight_norm(layer.kernels, "r")
        else:
            parametrizations.weight_norm(layer.kernels, "r")
    layer(x).sum().backward()
    _sgd_step(layer)
    with torch.no_grad():
        k = layer.kernels
        r = _wn(k.r_v, k.r_g) if api == "hooks" else k.r
        blocks = [k.e, r, k.r2, k.r3]  # untied: each orientation its own block
        bank = torch.stack(blocks, 1).reshape(12, 2, 3, 3)
        bias = torch.stack([getattr(layer.biases, g) for g in ("e", "r", "r2", "r3")], 1)
        ref = F.conv2d(x, bank, bias.reshape(-1), padding=1).view(2, 3, 4, 7, 7)
        torch.testing.assert_close(layer.eval()(x), ref)


NORMS = {
    "weight_norm(hooks)": hook_weight_norm,
    "spectral_norm(hooks)": hook_spectral_norm,
    "weight_norm": parametrizations.weight_norm,
    "spectral_norm": parametrizations.spectral_norm,
}


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: SymmetricConv1d(2, 3, 5), "weight"),
        (lambda: HashedLinear(8, 4, 10), "weight"),
        (lambda: TiedGateLSTM(3, 4), "weight_ih_i"),
    ],
    ids=["symmetric", "hashed", "lstm_tied_gate"],
)
def test_norm_on_a_tied_slot_is_refused_and_leaves_the_layer(make, name, norm):
    layer = make()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # the hook API: the layer's own refusal naming the tie (stop 55; a bare KeyError
        # before); parametrize: torch's ValueError, which prints the module with its ties
        if "hooks" in norm:
            with pytest.raises(TieError, match=rf"\.{name} is tied \(it reads .*untie first"):
                NORMS[norm](layer, name)
        else:
            with pytest.raises(ValueError, match=rf"tied: .*{name} <- .*name '{name}'"):
                NORMS[norm](layer, name)
    assert layer.state_dict().keys() == before.keys()
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_norm_on_a_tie_source_is_refused_by_name_at_the_call(norm):
    lstm = TiedGateLSTM(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        NORMS[norm](lstm, "weight_ih_f")
    with pytest.raises(TieError, match=r"weight_ih_i reads weight_ih_f, which is no longer"):
        lstm(torch.randn(2, 5, 3))
