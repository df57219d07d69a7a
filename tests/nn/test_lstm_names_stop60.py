"""``nn.LSTM``'s keywords and positionals on a :class:`TiedGateLSTM` name what to do (stop 60).

``num_layers=``, ``bidirectional=``, ``bias=False``, ``dropout=`` got Python's bare
"unexpected keyword argument"; ``TiedGateLSTM(3, 5, 2)`` "takes 3 positional arguments
but 4 were given". Each advice is followed against ``nn.LSTM`` here.
"""

import pytest
import torch
from torch import nn

from tying.nn import TiedGateLSTM


def _one_layer(ref: nn.LSTM, suffix: str, input_size: int) -> nn.LSTM:
    """A one-layer nn.LSTM holding ``ref``'s weights of one layer/direction."""
    one = nn.LSTM(input_size, ref.hidden_size, batch_first=ref.batch_first).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(one, f"{name}_l0").copy_(getattr(ref, f"{name}_{suffix}"))
    return one


def test_num_layers_advice_matches_a_stacked_lstm():
    with pytest.raises(
        TypeError, match=r"no keyword 'num_layers' here; .*second\(first\(x\)\[0\]\)\[0\]"
    ):
        TiedGateLSTM(3, 4, num_layers=2)
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, num_layers=2, batch_first=True).double()
    first = TiedGateLSTM.from_lstm(_one_layer(ref, "l0", 3), tie_gates=False)
    second = TiedGateLSTM.from_lstm(_one_layer(ref, "l1", 4), tie_gates=False)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(second(first(x)[0])[0], ref(x)[0])


@pytest.mark.parametrize("batch_first", [True, False])
def test_bidirectional_advice_matches_a_bidirectional_lstm(batch_first):
    with pytest.raises(TypeError, match=r"no keyword 'bidirectional' here; .*x.flip\(1\)"):
        TiedGateLSTM(3, 4, bidirectional=True)
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, bidirectional=True, batch_first=batch_first).double()
    fwd = TiedGateLSTM.from_lstm(_one_layer(ref, "l0", 3), tie_gates=False)
    bwd = TiedGateLSTM.from_lstm(_one_layer(ref, "l0_reverse", 3), tie_gates=False)
    t = 1 if batch_first else 0  # the advice's flip(1), flip(0) time-first
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    got = torch.cat([fwd(x)[0], bwd(x.flip(t))[0].flip(t)], -1)
    torch.testing.assert_close(got, ref(x)[0])


def test_bias_false_advice_matches_lstm_without_bias_and_stays_frozen():
    with pytest.raises(TypeError, match=r"no keyword 'bias' here; .*layer.bias.data.zero_\(\)"):
        TiedGateLSTM(3, 4, bias=False)
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, bias=False, batch_first=True).double()
    layer = TiedGateLSTM.from_lstm(ref, tie_gates=False)
    layer.bias.data.zero_()
    layer.bias.requires_grad_(False)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out = layer(x)[0]
    torch.testing.assert_close(out, ref(x)[0])
    out.sum().backward()
    assert layer.bias.grad is None and not layer.bias.any()


@pytest.mark.parametrize("name", ["dropout", "proj_size", "device", "dtype"])
def test_other_lstm_keywords_named(name):
    with pytest.raises(TypeError, match=f"^TiedGateLSTM: no keyword '{name}' here; "):
        TiedGateLSTM(3, 4, **{name: None})


def test_lstm_positionals_named_and_by_keyword_they_are_taken_or_named():
    with pytest.raises(
        TypeError,
        match=r"takes 2 positional arguments .* but 5 were given, nn.LSTM's num_layers=1, bias=True, batch_first=False; .*pass them by keyword",
    ):
        TiedGateLSTM(3, 4, 1, True, False)
    assert TiedGateLSTM(3, 4, batch_first=False).batch_first is False
    with pytest.raises(TypeError, match="no keyword 'num_layers' here"):
        TiedGateLSTM(3, 4, num_layers=1)


def test_unknown_keyword_keeps_pythons_message():
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        TiedGateLSTM(3, 4, colour=1)


def test_nn_lstm_state_layout_names_the_fix_and_it_matches_nn_lstm():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, batch_first=True).double()
    layer = TiedGateLSTM.from_lstm(ref, tie_gates=False)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    h0, c0 = torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64)
    with pytest.raises(
        ValueError,
        match=r"nn.LSTM's \(num_layers=1, B, H\) layout: pass state=\(h0\[0\], c0\[0\]\)",
    ):
        layer(x, (h0, c0))
    out, (h, c) = layer(x, (h0[0], c0[0]))
    want, (wh, wc) = ref(x, (h0, c0))
    torch.testing.assert_close(out, want)
    torch.testing.assert_close((h, c), (wh[0], wc[0]))
