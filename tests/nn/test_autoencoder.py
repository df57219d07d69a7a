"""Tied linear autoencoder, W_dec = W_encᵀ (C2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tying
from tying.nn import TiedAutoencoder


def test_decoder_is_the_transpose_after_training_steps():
    torch.manual_seed(0)
    ae = TiedAutoencoder(12, 3, bias=True)
    opt = torch.optim.Adam(ae.parameters(), lr=0.05)
    x = torch.randn(64, 12)
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(ae(x), x).backward()
        opt.step()
    assert torch.equal(ae.decoder.weight, ae.encoder.weight.T)
    c = tying.count(ae)
    assert (c.logical, c.physical) == (2 * 36 + 3 + 12, 36 + 3 + 12)
    assert sum(p.numel() for p in ae.parameters()) == c.physical


def test_gradient_equals_hand_written_tied_autoencoder():
    torch.manual_seed(1)
    ae = TiedAutoencoder(8, 2).double()
    w = ae.encoder.weight.detach().clone().requires_grad_(True)
    x = torch.randn(16, 8, dtype=torch.float64)
    F.mse_loss(ae(x), x).backward()
    F.mse_loss(F.linear(F.linear(x, w), w.t()), x).backward()
    torch.testing.assert_close(ae.encoder.weight.grad, w.grad)


def test_untied_baseline_and_untie():
    untied = TiedAutoencoder(8, 2, tied=False)
    assert tying.count(untied).physical == 32
    ae = TiedAutoencoder(8, 2)
    x = torch.randn(4, 8)
    before = ae(x)
    tying.untie(ae)
    assert tying.count(ae).physical == 32
    torch.testing.assert_close(ae(x), before)


def test_xavier_init_fits_both_uses():
    ae = TiedAutoencoder(30, 6)
    bound = math.sqrt(6 / 36)
    assert float(ae.encoder.weight.detach().abs().max()) <= bound
    assert tying.fan_in(ae) == 30


def test_save_load_roundtrip(tmp_path):
    ae = TiedAutoencoder(8, 2)
    tying.save(ae, tmp_path / "ae.safetensors")
    other = TiedAutoencoder(8, 2)
    tying.load(other, tmp_path / "ae.safetensors")
    assert torch.equal(other.decoder.weight, ae.encoder.weight.T)


def test_shape_errors():
    ae = TiedAutoencoder(8, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 8\), got \(4, 7\)"):
        ae(torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"expected a code of shape \(\.\.\., 2\), got \(4, 3\)"):
        ae.decode(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"latent must be a positive int, got 0"):
        TiedAutoencoder(8, 0)


def test_compiles_with_aot_eager():
    ae = TiedAutoencoder(8, 2)
    x = torch.randn(4, 8)
    compiled = torch.compile(ae, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), ae(x))
