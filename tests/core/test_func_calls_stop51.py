"""The gate in front of the search for a suspended ``_reparametrize_module``
(``func_calls._held_elsewhere``) on interpreters that count references differently.

``sys.getrefcount`` of a local or an argument is 1 more per holder on 3.11, and may be
less on 3.14 (borrowed references). The gate compared with a count tuned to 3.11: where an
interpreter counts one fewer, a source still held by torch's swap looked held by the slot
alone, the search was skipped and ``_reparametrize_module(..., tie_weights=False)``
served the given tensor to the tied slot silently. The count is now measured on the
interpreter; here the interpreter is simulated by shifting ``sys.getrefcount``.
"""

import importlib
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module

import tying
import tying.core.func_calls as func_calls

_REAL = sys.getrefcount


def _shifted(by):
    # the lambda's own argument adds one reference to what _REAL sees: take it off too
    return lambda obj: _REAL(obj) - 1 + by


@pytest.fixture(params=[-2, -1, 0, 1], ids=lambda b: f"counts{b:+d}")
def interpreter(request):
    """``func_calls`` as on an interpreter whose getrefcount counts ``by`` more."""
    sys.getrefcount = _shifted(request.param)
    try:
        importlib.reload(func_calls)  # measures again, in the module's own namespace
        yield request.param
    finally:
        sys.getrefcount = _REAL
        importlib.reload(func_calls)


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    tying.Plan([tying.share("2.weight", like="0.weight")]).apply(m)
    return m


def test_the_gate_counts_holders_on_this_interpreter(interpreter):
    slot = func_calls._Alone()
    seen = slot._seen
    assert func_calls._held_elsewhere(slot, seen) is False  # the slot and this local
    holder = [seen]
    assert func_calls._held_elsewhere(slot, seen) is True  # one more: searched
    del holder
    assert func_calls._held_elsewhere(slot, seen) is False


def test_reparametrize_module_is_refused_whatever_the_count(interpreter):
    m, x = _model(), torch.randn(3, 4)
    m(x)  # the slot records the model's own source
    own = m[0].weight.detach().clone()
    with pytest.raises(tying.TieError, match=r"tie_weights=False\) replaced 0\.weight"):
        with _reparametrize_module(m, {"0.weight": torch.randn(4, 4)}):
            m(x)
    assert torch.equal(m[0].weight, own) and m[2].weight is m[0].weight


def test_a_source_replaced_outside_any_call_is_not_searched_whatever_the_count(
    interpreter, monkeypatch
):
    calls = []
    real = func_calls._suspended_reparametrize
    monkeypatch.setattr(
        func_calls, "_suspended_reparametrize", lambda s: calls.append(s) or real(s)
    )
    m, x = _model(), torch.randn(2, 4)
    m(x)
    m[0].weight = nn.Parameter(torch.randn(4, 4))
    assert torch.allclose(m(x), m[2](m[1](m[0](x))))
    assert calls == [] and m[2].weight is m[0].weight
