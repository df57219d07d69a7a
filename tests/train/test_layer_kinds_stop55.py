"""Layer kinds and settings the stop-42 sweep does not build, in every mode, against a
per-example loop (stop 55): transposed convolutions with groups, a grouped and dilated
Conv3d, an even kernel under ``padding="same"``, ``LayerNorm(bias=False)`` (Opacus'
sampler failed at the backward with an ``AttributeError`` naming no layer), attention
with its own key/value sizes and no bias, and a frozen middle layer. Each pair either
equals the loop to 1e-5 or is refused with the message pinned here.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import tests.train.test_layer_sweep_stop42 as sweep
from tests.train.test_layer_sweep_stop42 import Head

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
pytestmark = [
    *sweep.pytestmark,
    # torch's note that an even kernel under padding="same" pads a copy (not a result)
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning"),
]


def _opacus_grads(model, x, y):
    """The sweep's, for the trainable parameters only (a frozen one has no grad_sample)."""
    from tying.train import grad_sample_module

    gsm = grad_sample_module(model, loss_reduction="sum")
    try:
        sweep.sq_err(gsm(x), y).sum().backward()
        return {n: p.grad_sample for n, p in model.named_parameters() if p.requires_grad}
    finally:
        gsm._close()


def _r(*shape):
    return lambda B, g: torch.randn(B, *shape, generator=g, dtype=torch.float64)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(
            4, 2, batch_first=True, bias=False, kdim=3, vdim=5, add_bias_kv=True
        )
        self.out = nn.Linear(4, 3)

    def forward(self, x):  # (B, T, 4)
        v = torch.cat([x, x[..., :1]], -1)  # (B, T, 5)
        return self.out(self.att(x, x[..., :3], v, need_weights=False)[0].mean(1))


class _FrozenMiddle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.b.weight.requires_grad_(False)  # its bias still trains

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


KINDS = {
    "conv_transpose2d_groups": (
        lambda: Head(nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1,
                                        groups=2), 4 * 6 * 8),
        _r(2, 3, 4)),
    "conv3d_groups_dilation": (
        lambda: Head(nn.Conv3d(4, 4, 2, groups=2, dilation=(1, 2, 1), stride=(1, 1, 2)),
                     4 * 2 * 1 * 2),
        _r(4, 3, 3, 4)),
    "conv1d_same_even_no_bias": (
        lambda: Head(nn.Conv1d(4, 6, 4, padding="same", bias=False), 6 * 8), _r(4, 8)),
    "layer_norm_no_bias": (
        lambda: Head(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4, bias=False)), 4 * 5),
        _r(5, 4)),
    "attention_kdim_vdim_no_bias": (_Attention, _r(5, 4)),
    "frozen_middle": (_FrozenMiddle, _r(4)),
}  # fmt: skip

_GHOST = r"ghost clipping cannot see every use of these trainable parameters: {}"
REFUSED = {
    ("conv_transpose2d_groups", "ghost"): _GHOST.format("body.weight"),
    ("conv3d_groups_dilation", "ghost"): _GHOST.format("body.weight"),
    ("conv1d_same_even_no_bias", "ghost"): _GHOST.format("body.weight"),
    ("layer_norm_no_bias", "ghost"): _GHOST.format("body.1.weight"),
    ("attention_kdim_vdim_no_bias", "ghost"): _GHOST.format("att.q_proj_weight"),
    ("layer_norm_no_bias", "opacus"): r"body.1 is a LayerNorm with bias=False.*force_functorch",
    # stop 56: refused at the wrapping (Opacus' functorch way takes the query alone)
    ("attention_kdim_vdim_no_bias", "opacus"): r"att \(MultiheadAttention\) needs the inputs "
    r"query, key, value.*DPMultiheadAttention",
}


@pytest.mark.parametrize("mode", sweep.MODES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_equals_a_per_example_loop_or_is_refused_by_name(kind, mode, monkeypatch):
    monkeypatch.setitem(sweep.LAYERS, kind, KINDS[kind])
    monkeypatch.setattr(sweep, "_opacus_grads", _opacus_grads)
    verdict, got = sweep.outcome(kind, mode, 3)
    if (kind, mode) in REFUSED:
        assert verdict == "refused", f"{kind} in mode {mode}: taken ({got:.2g} off the loop)"
        assert re.search(REFUSED[kind, mode], str(got)), f"{kind} in mode {mode}: {got}"
    else:
        assert verdict == "ok", f"{kind} in mode {mode}: refused: {got}"
        assert got <= 1e-5, f"{kind} in mode {mode}: {got:.3g} off the loop"
