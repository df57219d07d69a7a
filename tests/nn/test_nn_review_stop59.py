"""Review of stop 59 (cacb0cd, tying.nn Attention ``batch_first=`` / ``key_padding_mask=``).

- An ``Attention`` pickled before stop 59 (``torch.save(model)``: no ``batch_first``
  attribute) raised AttributeError in forward and repr after the update.
- The refusal of ``nn.MultiheadAttention``'s 3-D ``(B*n_heads, T, S)`` attn_mask advised
  ``mask[:, None]``, which is refused again; a ``(B, S)`` padding mask (True = padding)
  passed as attn_mask was advised ``mask[:, None, None, :]``, which reads True as *may
  attend*: followed literally by a port of ``nn.MultiheadAttention`` it attended only to
  the padding (1.06 off, no error). Now both name the call that gives torch's numbers.
- A ``batch_first=False`` layer fed a batch-first input named no layout in its
  key-padding refusal (a batch-first layer fed ``(T, B, E)`` names batch_first=False).
"""

from __future__ import annotations

import pickle

import pytest
import torch

from tests.nn.mha_pairs import E, H
from tests.nn.mha_pairs import mha_and_attention as _pair
from tying.nn import Attention


def test_an_attention_pickled_before_stop59_still_runs_and_prints():
    torch.manual_seed(0)
    new = Attention(E, H, causal=True)
    old = Attention(E, H, causal=True)
    old.load_state_dict(new.state_dict())
    del old.__dict__["batch_first"]  # what unpickling a layer saved before stop 59 gives
    old = pickle.loads(pickle.dumps(old))
    x = torch.randn(2, 5, E)
    torch.testing.assert_close(old(x), new(x), rtol=0, atol=0)  # it was batch-first
    assert "batch_first" not in repr(old) and repr(old) == repr(new)


def test_multihead_attention_3d_mask_refusal_names_a_fix_that_gives_torchs_numbers():
    mha, att = _pair(batch_first=False)
    b, t = 3, 4
    x = torch.randn(t, b, E, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    masked = torch.rand(b * H, t, t, generator=torch.Generator().manual_seed(2)) > 0.6
    masked[..., 0] = False  # every query keeps a key (torch gives NaN rows otherwise)
    want = mha(x, x, x, attn_mask=masked, need_weights=False)[0]
    with pytest.raises(
        ValueError, match=r"\(B\*n_heads, T, S\) layout: pass mask\.view\(3, 2, 4, 4\).*~mask"
    ):
        att(x, attn_mask=masked)
    got = att(x, attn_mask=~masked.view(b, H, t, t))  # the advice, literally
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_padding_mask_passed_as_attn_mask_names_key_padding_mask():
    mha, att = _pair(batch_first=False)
    b, t = 3, 5  # B != T: the (B, S) mask is refused as an attn_mask
    x = torch.randn(t, b, E, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[0, 3:], pad[2, 4:] = True, True  # True = padding, nn.MultiheadAttention's
    want = mha(x, x, x, key_padding_mask=pad, need_weights=False)[0]
    with pytest.raises(ValueError, match=r"True = padding.*is key_padding_mask=mask") as info:
        att(x, attn_mask=pad)
    assert "mask[:, None, None, :] (True = may attend" in str(info.value)
    torch.testing.assert_close(att(x, key_padding_mask=pad), want, rtol=0, atol=1e-12)


def test_batch_first_input_on_a_sequence_first_layer_names_batch_first_true():
    torch.manual_seed(0)
    port = Attention(E, H, batch_first=False)
    x = torch.randn(2, 5, E)  # (B, T, E): a batch-first input
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    with pytest.raises(ValueError, match=r"got \(2, 5\); if x is \(batch, seq, d_model\), .*"
                       r"batch_first=True"):  # fmt: skip
        port(x, key_padding_mask=pad)
    fixed = Attention(E, H)  # the advice: batch_first=True (the default)
    fixed.load_state_dict(port.state_dict())
    want = port(x.transpose(0, 1), key_padding_mask=pad).transpose(0, 1)
    torch.testing.assert_close(fixed(x, key_padding_mask=pad), want)


def test_depth_refusal_does_not_call_an_untied_saved_net_weight_tied():
    from tying.nn import TiedResidualNet

    torch.manual_seed(0)
    saved = TiedResidualNet(2, 3, 1, tied=False)  # untied, depth 1: a tied net's keys
    net = TiedResidualNet(2, 3, 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"saved from a TiedResidualNet of depth 1 \(this one: "
                       r"depth 4\); its keys fit only because") as info:  # fmt: skip
        net.load_state_dict(saved.state_dict())
    assert "weight-tied TiedResidualNet of depth 1" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.load_state_dict(dict(saved.state_dict()))  # the advice, literally
    torch.testing.assert_close(net.steps[3].inner.weight, saved.steps[0].inner.weight)
