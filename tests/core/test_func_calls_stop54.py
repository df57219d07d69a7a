"""Stop 54: the search for a suspended ``_reparametrize_module`` (a walk of every object the
garbage collector tracks) ran once per slot after ``to_empty``: each slot found the old
source still held, by its sibling slots' own records, and searched. Those references are
the slots' own and are not counted now; a source really held by a suspended swap is still
found and refused (checked against the same layer tied by hand in plain PyTorch).
"""

import pytest
import torch
from torch.nn.utils.stateless import _reparametrize_module

import tying
import tying.core.func_calls as func_calls
from tying.nn import TiedGateLSTM


def _counted(monkeypatch) -> list:
    calls = []
    search = func_calls._suspended_reparametrize

    def counted(src):
        calls.append(src)
        return search(src)

    monkeypatch.setattr(func_calls, "_suspended_reparametrize", counted)
    return calls


def _hand_tied(layer: TiedGateLSTM) -> TiedGateLSTM:
    """The same layer untied, its gates tied by hand (``i`` and ``o`` are ``f``)."""
    hand = TiedGateLSTM(layer.input_size, layer.hidden_size, tie_gates=False)
    state = layer.state_dict()
    hand.load_state_dict(
        {**state, "weight_ih_i": state["weight_ih_f"], "weight_ih_o": state["weight_ih_f"]}
    )
    hand.weight_ih_i = hand.weight_ih_o = hand.weight_ih_f
    return hand


def test_slots_sharing_a_source_do_not_search_after_to_empty(monkeypatch):
    calls = _counted(monkeypatch)
    torch.manual_seed(0)
    with torch.device("meta"):
        layer = TiedGateLSTM(3, 4)  # two slots of one module read weight_ih_f
    layer = layer.to_empty(device="cpu")
    layer.reset_parameters()
    x = torch.randn(2, 5, 3)
    out, _ = layer(x)
    assert calls == []  # was one search per slot that met its sibling's record
    tying.verify(layer)
    torch.testing.assert_close(out, _hand_tied(layer)(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("to_empty", [False, True])
def test_a_source_swapped_under_tie_weights_false_is_still_refused_with_siblings(to_empty):
    torch.manual_seed(0)
    if to_empty:
        with torch.device("meta"):
            layer = TiedGateLSTM(3, 4)
        layer = layer.to_empty(device="cpu")
        layer.reset_parameters()
    else:
        layer = TiedGateLSTM(3, 4)
    x = torch.randn(2, 5, 3)
    want, _ = layer(x)  # every slot has read the model's own source
    hand = _hand_tied(layer)
    w = torch.randn(4, 3)
    with _reparametrize_module(hand, {"weight_ih_f": w}):
        hand(x)  # plain torch: the hand-tied partners keep the model's own tensor
    with _reparametrize_module(layer, {"weight_ih_f": w}):  # tie_weights=False
        with pytest.raises(tying.TieError, match=r"tie_weights=False"):
            layer(x)
    torch.testing.assert_close(layer(x)[0], want, rtol=0, atol=0)  # the model's own again
