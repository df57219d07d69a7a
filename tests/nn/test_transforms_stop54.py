"""Stop 54: tied layers under the autograd tools a training loop wraps them in.

Each layer is compared with an anchor written by hand in plain PyTorch from the layer's
*physical* parameters, the shared weight expanded explicitly (the tied LSTM gates as one
matrix read three times, the tied locally connected filter as one ``F.conv2d``, the tied
decoder as the encoder's transpose, the tied residual steps as one field applied
``depth`` times). Checked: per-example gradients (``vmap`` of ``grad`` over
``functional_call``), ``torch.utils.checkpoint`` in both modes, gradient accumulation
after ``zero_grad(set_to_none=False)``, and a float16/bfloat16 ``.to()`` and back.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.utils.checkpoint import checkpoint

import tying
from tying.nn import LocallyConnected2d, TiedAutoencoder, TiedGateLSTM, TiedResidualNet

F64 = torch.float64


def _lstm_anchor(p, x):
    # nn.LSTM's equations by hand (it does not run under vmap), one matrix W read by the
    # i, f and o gates: the stacked input weight is [W; W; W_g; W]
    w = p["weight_ih_f"]
    w_ih = torch.cat([w, w, p["weight_ih_g"], w])  # (4H, in), gates i, f, g, o
    h = c = x.new_zeros(x.shape[0], 4)
    outs = []
    for t in range(x.shape[1]):
        i, f, g, o = (x[:, t] @ w_ih.T + h @ p["weight_hh"].T + p["bias"]).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, dim=1)  # (B, T, H)


def _lc_anchor(p, x):
    # every position reads one filter: the convolution with it
    w, b = p["parametrizations.weight.original"], p["parametrizations.bias.original"]
    return F.conv2d(x, w, b, padding=1)


def _ae_anchor(p, x):
    w = p["encoder.weight"]  # (latent, in): the decoder reads its transpose
    return F.linear(F.linear(x, w, p["encoder.bias"]), w.T, p["decoder.bias"])


def _rn_anchor(p, x):
    # one field applied depth=3 times with step t1/depth
    for _ in range(3):
        hid = torch.tanh(F.linear(x, p["steps.0.inner.weight"], p["steps.0.inner.bias"]))
        x = x + (1.0 / 3) * F.linear(hid, p["steps.0.outer.weight"], p["steps.0.outer.bias"])
    return x


def _first(out):
    return out[0] if isinstance(out, tuple) else out


CASES = {
    "lstm": (lambda: TiedGateLSTM(3, 4), (4, 5, 3), _lstm_anchor),
    "locally_connected": (
        lambda: LocallyConnected2d(2, 3, input_size=5, kernel_size=3, padding=1).tie_filters(),
        (4, 2, 5, 5),
        _lc_anchor,
    ),
    "autoencoder": (lambda: TiedAutoencoder(6, 3, bias=True), (4, 6), _ae_anchor),
    "residual": (lambda: TiedResidualNet(4, 8, 3), (4, 4), _rn_anchor),
}


def _setup(name):
    make, shape, anchor = CASES[name]
    torch.manual_seed(0)
    layer = make().to(F64)
    x = torch.randn(*shape, dtype=F64)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    return layer, x, params, anchor


def _anchor_grads(anchor, params, x):
    return grad(lambda p: anchor(p, x).square().sum())(params)


@pytest.mark.parametrize("name", list(CASES))
def test_per_example_gradients_match_the_anchor(name):
    layer, x, params, anchor = _setup(name)
    assert torch.allclose(_first(layer(x)), anchor(params, x), atol=1e-12)
    ours = vmap(
        grad(lambda p, xi: _first(functional_call(layer, p, (xi[None],))).square().sum()),
        in_dims=(None, 0),
    )(params, x)
    ref = vmap(grad(lambda p, xi: anchor(p, xi[None]).square().sum()), in_dims=(None, 0))(params, x)
    for k in params:
        assert ours[k].shape == (x.shape[0], *params[k].shape)
        torch.testing.assert_close(ours[k], ref[k], atol=1e-12, rtol=1e-10, msg=k)


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_checkpointed_forward_and_backward_match_the_anchor(name, reentrant):
    layer, x, params, anchor = _setup(name)
    ref = _anchor_grads(anchor, params, x)
    xx = x.clone().requires_grad_(reentrant)  # the reentrant mode needs an input with grad
    out = _first(checkpoint(layer, xx, use_reentrant=reentrant))
    torch.testing.assert_close(out, anchor(params, x), atol=1e-12, rtol=1e-10)
    out.square().sum().backward()
    for k, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, ref[k], atol=1e-12, rtol=1e-10, msg=k)


@pytest.mark.parametrize("name", list(CASES))
def test_two_backward_passes_accumulate_as_the_anchor(name):
    layer, x, params, anchor = _setup(name)
    ref = _anchor_grads(anchor, params, x)
    layer.zero_grad(set_to_none=False)
    for _ in range(2):
        _first(layer(x)).square().sum().backward()
    for k, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, 2 * ref[k], atol=1e-12, rtol=1e-10, msg=k)
    layer.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in layer.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_round_trip_keeps_the_tie_and_the_representable_values(name, dtype):
    layer, x, params, anchor = _setup(name)
    n_physical = len(params)
    layer.to(dtype)
    assert {p.dtype for p in layer.parameters()} == {dtype}
    tying.verify(layer)
    rounded = {k: v.to(dtype) for k, v in params.items()}
    got = _first(layer(x.to(dtype)))
    assert got.dtype == dtype and got.isfinite().all()
    layer.to(F64)
    back = dict(layer.named_parameters())
    assert len(back) == n_physical  # the tie still stores one tensor
    for k, v in rounded.items():
        assert torch.equal(back[k].detach(), v.to(F64)), k  # exact: every value representable
    tying.verify(layer)
    rounded64 = {k: v.to(F64) for k, v in rounded.items()}
    torch.testing.assert_close(_first(layer(x)), anchor(rounded64, x), atol=1e-12, rtol=1e-10)
    # a step on the physical tensors keeps every slot reading them
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    _first(layer(x)).square().sum().backward()
    opt.step()
    tying.verify(layer)
    now = {k: v.detach() for k, v in layer.named_parameters()}
    torch.testing.assert_close(_first(layer(x)), anchor(now, x), atol=1e-12, rtol=1e-10)
