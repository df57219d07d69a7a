"""A re-parametrisation removed from a tie's *source* names a way out that works.

``share("b", like="a")`` over two weight-normed (spectral-normed, orthogonal) layers, then
``remove_parametrizations(model.a, "weight")`` / ``remove_weight_norm(model.a)`` (the
HiFi-GAN inference idiom walks every layer): ``b`` reads tensors no longer in the model.
Before stop 62 every read, ``untie``, ``verify`` and ``count`` blamed "a quantizer, an
adapter, a copy or an assignment" or a ``del`` and advised re-applying the plan, putting
the module back then untying, or ``tying.retie``: each refused on that model.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import tying

from .test_reparametrized_wrapped_review61 import _pair as _tied_pair


def _old_weight_norm(mod):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.nn.utils.weight_norm(mod)


STYLES = {
    "weight_norm": (_old_weight_norm, torch.nn.utils.remove_weight_norm),
    "spectral_norm": (torch.nn.utils.spectral_norm, torch.nn.utils.remove_spectral_norm),
    "parametrizations.weight_norm": (
        parametrizations.weight_norm,
        lambda m: parametrize.remove_parametrizations(m, "weight"),
    ),
    "parametrizations.orthogonal": (
        parametrizations.orthogonal,
        lambda m: parametrize.remove_parametrizations(m, "weight"),
    ),
}
OLD = {"weight_norm", "spectral_norm"}


def _pair(style):
    return _tied_pair(STYLES[style][0])


def _removed(style):
    m = _pair(style)
    STYLES[style][1](m.a)
    return m


_WHY = r"the tie's source, was removed after the tie was made \(torch\.nn\.utils\."


@pytest.mark.parametrize("style", STYLES)
def test_every_route_names_the_removal_from_the_source(style):
    m = _removed(style)
    x = torch.randn(3, 4)
    for call in (lambda: m.b(x), lambda: tying.verify(m), lambda: tying.untie(m)):
        with pytest.raises(tying.TieError, match=_WHY) as err:
            call()
        text = str(err.value)
        assert "quantizer" not in text and "put the module it replaced back" not in text
        assert "tying.Plan([tying.free('b')]).apply(model)" in text


@pytest.mark.parametrize("style", STYLES)
def test_the_order_the_message_gives_works_when_followed(style):
    m = _removed(style)
    with pytest.raises(tying.TieError) as err:
        tying.verify(m)
    calls = re.search(r"tie the plain tensors again: (.*)\.$", str(err.value)).group(1)
    fresh = _pair(style)
    x = torch.randn(3, 4)
    out_a = fresh.a(x)
    for call in calls.split("; "):
        eval(call, {"tying": tying, "torch": torch, "model": fresh})
    assert not parametrize.is_parametrized(fresh.a) and not parametrize.is_parametrized(fresh.b)
    assert fresh.b.weight is fresh.a.weight and tying.verify(fresh) == 2
    torch.testing.assert_close(fresh.a(x), out_a)
    torch.testing.assert_close(fresh.b(x), out_a)
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    (fresh.a(x).sum() + fresh.b(x).sum()).backward()
    opt.step()
    assert fresh.b.weight is fresh.a.weight


@pytest.mark.parametrize("style", sorted(OLD))
def test_old_style_undo_advice_restores_the_tie(style):
    m = _removed(style)
    x = torch.randn(3, 4)
    with pytest.raises(tying.TieError, match=r"to undo that, apply it again") as err:
        m.b(x)
    call = re.search(r"apply it again \((.*?)\): the tie", str(err.value)).group(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        eval(call, {"torch": torch, "model": m})
    assert tying.verify(m) >= 2
    torch.testing.assert_close(m.b(x), m.b(x))


@pytest.mark.parametrize("style", sorted(set(STYLES) - OLD))
def test_new_style_says_it_cannot_be_undone_and_each_undo_is_refused(style):
    m = _removed(style)
    with pytest.raises(tying.TieError, match=r"on this model that cannot be undone"):
        tying.verify(m)
    for undo in (
        lambda: tying.untie(m),
        lambda: tying.retie(m),
        lambda: tying.Plan([tying.free("b")]).apply(m),
    ):
        with pytest.raises(tying.TieError):
            undo()


def test_a_parameter_deleted_by_hand_keeps_the_delete_message():
    m = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    m.a.weight_v = nn.Parameter(torch.zeros(4))
    m.b.weight_v = nn.Parameter(torch.zeros(4))
    tying.Plan([tying.share("b", like="a")]).apply(m)
    del m.a.weight_v
    with pytest.raises(tying.TieError, match=r"gone from its module \(deleted") as err:
        m.b.weight_v  # noqa: B018
    assert "weight_norm" not in str(err.value)
