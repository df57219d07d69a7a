"""LSTM with tied gate input weights (B11)."""

from __future__ import annotations

import math

import pytest
import torch

import tying
from tying.nn import TiedGateLSTM


def _copy_to_torch(lstm: TiedGateLSTM, batch_first: bool = True) -> torch.nn.LSTM:
    ref = torch.nn.LSTM(lstm.input_size, lstm.hidden_size, batch_first=batch_first).double()
    with torch.no_grad():
        w_ih = torch.cat([getattr(lstm, f"weight_ih_{g}") for g in "ifgo"])
        ref.weight_ih_l0.copy_(w_ih)
        ref.weight_hh_l0.copy_(lstm.weight_hh)
        ref.bias_ih_l0.copy_(lstm.bias)
        ref.bias_hh_l0.zero_()
    return ref


@pytest.mark.parametrize("tie_gates", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_equals_torch_lstm_with_the_same_weights(tie_gates, batch_first):
    torch.manual_seed(0)
    lstm = TiedGateLSTM(5, 7, tie_gates=tie_gates, batch_first=batch_first).double()
    ref = _copy_to_torch(lstm, batch_first)
    x = torch.randn(3, 6, 5, dtype=torch.float64)  # (B, T, in)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()  # (T, B, in)
    h0, c0 = torch.randn(3, 7).double(), torch.randn(3, 7).double()
    out, (h, c) = lstm(x, (h0, c0))
    ref_out, (ref_h, ref_c) = ref(x, (h0[None], c0[None]))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h[0])
    torch.testing.assert_close(c, ref_c[0])


def test_tie_counts_and_survives_a_step():
    lstm = TiedGateLSTM(10, 20)
    c = tying.count(lstm)
    assert c.logical - c.physical == 2 * 20 * 10
    assert c.logical == tying.count(TiedGateLSTM(10, 20, tie_gates=False)).physical
    opt = torch.optim.Adam(lstm.parameters(), lr=0.1)
    out, _ = lstm(torch.randn(2, 4, 10))
    out.sum().backward()
    opt.step()
    assert lstm.weight_ih_i is lstm.weight_ih_f and lstm.weight_ih_o is lstm.weight_ih_f
    assert lstm.weight_ih_g is not lstm.weight_ih_f


def test_gradient_of_the_tied_matrix_is_the_sum_over_three_gates():
    torch.manual_seed(1)
    tied = TiedGateLSTM(3, 4).double()
    untied = TiedGateLSTM(3, 4, tie_gates=False).double()
    with torch.no_grad():
        for g in "ifgo":
            getattr(untied, f"weight_ih_{g}").copy_(getattr(tied, f"weight_ih_{g}"))
        untied.weight_hh.copy_(tied.weight_hh)
        untied.bias.copy_(tied.bias)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    tied(x)[0].pow(2).sum().backward()
    untied(x)[0].pow(2).sum().backward()
    summed = untied.weight_ih_i.grad + untied.weight_ih_f.grad + untied.weight_ih_o.grad
    torch.testing.assert_close(tied.weight_ih_f.grad, summed)


def test_untie_switches_it_off_and_keeps_outputs():
    torch.manual_seed(2)
    lstm = TiedGateLSTM(3, 4)
    x = torch.randn(2, 5, 3)
    before = lstm(x)[0]
    tying.untie(lstm)
    assert lstm.weight_ih_i is not lstm.weight_ih_f
    torch.testing.assert_close(lstm(x)[0], before)


def test_fan_in_and_init_bound():
    lstm = TiedGateLSTM(12, 4)
    assert tying.fan_in(lstm) == 16
    bound = 1 / math.sqrt(16)
    assert all(float(p.detach().abs().max()) <= bound for p in lstm.parameters())


def test_shape_errors():
    lstm = TiedGateLSTM(3, 4)
    with pytest.raises(
        ValueError, match=r"expected input of shape \(batch, seq, 3\), got \(2, 5\)"
    ):
        lstm(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"state \(h0, c0\) of shape \(2, 4\) each, got \(2, 3\)"):
        lstm(torch.randn(2, 5, 3), (torch.zeros(2, 3), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int, got 0"):
        TiedGateLSTM(3, 0)


def test_compiles_with_aot_eager():
    torch.manual_seed(3)
    lstm = TiedGateLSTM(3, 4)
    x = torch.randn(2, 3, 3)
    compiled = torch.compile(lstm, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x)[0], lstm(x)[0])


@pytest.mark.parametrize("batch_first", [True, False])
def test_an_empty_sequence_passes_the_state_through(batch_first):
    # stop 26: T = 0 raised torch.stack's "expects a non-empty TensorList"
    lstm = TiedGateLSTM(3, 4, batch_first=batch_first)
    h0, c0 = torch.randn(2, 4), torch.randn(2, 4)
    x = torch.randn(2, 0, 3) if batch_first else torch.randn(0, 2, 3)
    out, (h, c) = lstm(x, (h0, c0))
    assert out.shape == ((2, 0, 4) if batch_first else (0, 2, 4))
    assert torch.equal(h, h0) and torch.equal(c, c0)


def test_a_state_that_is_not_a_pair_of_tensors_is_refused():
    # one (2, B, H) tensor (a bidirectional nn.LSTM's h0, or h0 and c0 stacked) unpacked
    # into h = state[0], c = state[1] with no error
    lstm = TiedGateLSTM(3, 4)
    x = torch.randn(2, 5, 3)
    with pytest.raises(
        ValueError,
        match=r"state must be a pair \(h0, c0\) of tensors of shape \(2, 4\) each, got a "
        r"tensor of shape \(2, 2, 4\); pass state=\(h0, c0\)",
    ):
        lstm(x, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"got tuple of length 3"):
        lstm(x, (torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4)))
    h0, c0 = torch.randn(2, 4), torch.randn(2, 4)
    out, _ = lstm(x, (h0, c0))
    assert torch.equal(lstm(x, [h0, c0])[0], out)
