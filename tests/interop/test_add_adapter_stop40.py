"""``add_adapter`` on a model from tying's ``get_peft_model``: all or nothing (stop 40).

peft's ``add_adapter`` wraps the new targets in place. A new adapter on a module in a
tie it cannot serve (the source or the user of a ``Transposed`` tie) was accepted, and
the model was left broken: every later forward, and ``tying.verify``, raised that the
tie's module had moved under the wrapper. ``get_peft_model`` refuses such a target up
front; ``add_adapter`` now refuses it too and leaves the model exactly as it was.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tying
from tying import TieError

peft = pytest.importorskip("peft", reason="the interop extra: pip install 'tying[interop]'")

from tying.interop.lora import get_peft_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Linear(8, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 8),  # 2: tied whole to 0 (one shared adapter)
        torch.nn.Linear(8, 8),  # 3: source of a Transposed tie
        torch.nn.Linear(8, 8),  # 4: reads 3.weight transposed
        torch.nn.Linear(8, 8),  # 5: untied
    )
    plan = tying.Plan(
        [
            tying.share("2", like="0"),
            tying.share("4.weight", like="3.weight", relation=tying.Transposed()),
        ]
    )
    plan.apply(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(m, peft.LoraConfig(r=2, target_modules=["0", "2"]))


def _snapshot(pm):
    return (
        [(n, type(v)) for n, v in pm.named_modules()],
        {k: v.detach().clone() for k, v in pm.state_dict().items()},
        sorted(pm.peft_config),
        [(n, p.requires_grad) for n, p in pm.named_parameters()],
    )


def _assert_unchanged(pm, snap, x, y0):
    mods, state, configs, grads = _snapshot(pm)
    assert mods == snap[0]
    assert state.keys() == snap[1].keys()
    assert all(torch.equal(state[k], snap[1][k]) for k in state)
    assert configs == snap[2] and grads == snap[3]
    assert torch.equal(pm(x), y0)
    tying.verify(pm)


@pytest.mark.parametrize("targets", [["3"], ["4"], ["0", "3"], ["5", "4"]])
def test_an_adapter_on_a_tie_it_cannot_serve_is_refused_and_nothing_changes(targets):
    pm = _model()
    x = torch.randn(3, 8)
    y0 = pm(x)
    snap = _snapshot(pm)
    with pytest.raises(TieError, match=r"add_adapter\('new'\): .*the model was left as it was"):
        pm.add_adapter("new", peft.LoraConfig(r=2, target_modules=targets))
    _assert_unchanged(pm, snap, x, y0)


def test_an_adapter_peft_can_serve_is_added_and_reaches_every_use():
    pm = _model()
    pm.add_adapter("more", peft.LoraConfig(r=2, target_modules=["0", "2", "5"]))
    assert sorted(pm.peft_config) == ["default", "more"]
    base = pm.base_model.model
    assert base[2] is base[0] and "more" in base[0].lora_A and "more" in base[5].lora_A
    tying.verify(pm)


def test_deep_copies_and_pickles_keep_the_guard_on_their_own_copy():
    pm = _model()
    for other in (copy.deepcopy(pm), pickle.loads(pickle.dumps(pm))):
        assert other.add_adapter.pm is other
        with pytest.raises(TieError, match="the adapter was not added"):
            other.add_adapter("new", peft.LoraConfig(r=2, target_modules=["3"]))
        assert sorted(other.peft_config) == ["default"]


@settings(derandomize=True, deadline=None, max_examples=10)
@given(st.sets(st.sampled_from(["0", "2", "3", "4", "5"]), min_size=1))
def test_property_refused_exactly_when_a_target_sits_on_the_transposed_tie(targets):
    """Brute-force reference: the targets that take part in the Transposed tie (3, 4)."""
    pm = _model()
    x = torch.randn(2, 8)
    y0 = pm(x)
    snap = _snapshot(pm)
    config = peft.LoraConfig(r=2, target_modules=sorted(targets))
    if targets & {"3", "4"}:
        with pytest.raises(TieError, match="the adapter was not added"):
            pm.add_adapter("new", config)
        _assert_unchanged(pm, snap, x, y0)
    elif targets == {"2"}:  # peft lists a module seated twice at its first path only
        with pytest.raises(ValueError, match="not found in the base model"):
            pm.add_adapter("new", config)
        _assert_unchanged(pm, snap, x, y0)
    else:
        pm.add_adapter("new", config)
        tying.verify(pm)
        assert torch.equal(pm(x), y0)  # the new adapter is not active: "default" still is
