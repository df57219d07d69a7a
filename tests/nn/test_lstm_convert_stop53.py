"""Stop 53: ``TiedGateLSTM.to_lstm`` / ``from_lstm`` convert to and from ``nn.LSTM``.

The anchor is ``torch.nn.LSTM`` itself: outputs and final states of the converted
layer equal the original's on inputs and states neither was built from.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
from tying.nn import TiedGateLSTM


def _data(batch_first, b=3, t=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, t, 4) if batch_first else (t, b, 4), generator=g, dtype=torch.float64)
    h0 = torch.randn(b, 5, generator=g, dtype=torch.float64)
    c0 = torch.randn(b, 5, generator=g, dtype=torch.float64)
    return x, h0, c0


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("tie_gates", [True, False])
def test_to_lstm_gives_nn_lstm_with_the_same_outputs(batch_first, tie_gates):
    torch.manual_seed(0)
    ours = TiedGateLSTM(4, 5, tie_gates=tie_gates, batch_first=batch_first).double()
    ref = ours.to_lstm()
    assert isinstance(ref, nn.LSTM) and ref.batch_first == batch_first
    assert ref.weight_ih_l0.dtype == torch.float64
    x, h0, c0 = _data(batch_first)
    out, (h, c) = ours(x, (h0, c0))
    out_ref, (h_ref, c_ref) = ref(x, (h0[None], c0[None]))
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_ref[0], rtol=1e-12, atol=1e-12)
    # a copy: training it leaves the tied layer as it was
    before = ours.weight_ih_f.detach().clone()
    with torch.no_grad():
        ref.weight_ih_l0.add_(1.0)
    assert torch.equal(ours.weight_ih_f, before)


@pytest.mark.parametrize("bias", [True, False])
def test_from_lstm_untied_matches_nn_lstm(bias):
    torch.manual_seed(0)
    ref = nn.LSTM(4, 5, bias=bias).double()  # time-first, as nn.LSTM's default
    ours = TiedGateLSTM.from_lstm(ref, tie_gates=False)
    assert not ours.batch_first and tying.count(ours).logical == tying.count(ours).physical
    x, h0, c0 = _data(False)
    out, (h, c) = ours(x, (h0, c0))
    out_ref, (h_ref, c_ref) = ref(x, (h0[None], c0[None]))
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_ref[0], rtol=1e-12, atol=1e-12)


def test_from_lstm_tied_round_trips_and_keeps_the_tie_through_a_step():
    torch.manual_seed(0)
    tied = TiedGateLSTM(4, 5).double()
    back = TiedGateLSTM.from_lstm(tied.to_lstm())
    assert back.weight_ih_i is back.weight_ih_f and back.weight_ih_o is back.weight_ih_f
    x, h0, c0 = _data(True)
    torch.testing.assert_close(back(x, (h0, c0))[0], tied(x, (h0, c0))[0], rtol=0, atol=1e-14)
    opt = torch.optim.SGD(back.parameters(), lr=0.1)
    back(x)[0].square().sum().backward()
    opt.step()
    tying.verify(back)
    assert back.weight_ih_i is back.weight_ih_f


def test_from_lstm_refuses_what_it_cannot_tie_or_hold():
    torch.manual_seed(0)
    ref = nn.LSTM(4, 5)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    with pytest.raises(ValueError, match=r"tie_gates=True needs .* equal .* apart; pass tie_gates"):
        TiedGateLSTM.from_lstm(ref)  # a trained nn.LSTM's gates differ: no silent averaging
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items())
    for bad in (nn.LSTM(4, 5, num_layers=2), nn.LSTM(4, 5, bidirectional=True)):
        with pytest.raises(ValueError, match=r"one layer, one direction, no projection; got"):
            TiedGateLSTM.from_lstm(bad, tie_gates=False)
    with pytest.raises(TypeError, match=r"expected a torch.nn.LSTM, got GRU"):
        TiedGateLSTM.from_lstm(nn.GRU(4, 5), tie_gates=False)
