"""A second peft adapter on modules tied whole that the first adapter left unwrapped (stop 53).

``pm.add_adapter`` on a model from ``tying.interop.lora.get_peft_model`` wrapped each path
of a whole-module tie apart and was refused with "'0', which held it, moved to
'0.base_layer'" (stop 52, open). Now the pair gets one shared wrapper, as with
``get_peft_model``; the anchor is plain peft on the untied model with the adapter weights
copied to both uses.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import tying
from tying import TieError

peft = pytest.importorskip("peft", reason="the interop extra: pip install 'tying[interop]'")

from tying.interop.lora import get_peft_model, merge_and_unload, unload  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _untied():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 8),  # 2: tied whole to 0
        torch.nn.Linear(8, 8),  # 3: untied, the first adapter's target
    )


def _tied_pm():
    m = _untied()
    tying.Plan([tying.share("2", like="0")]).apply(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(m, peft.LoraConfig(r=2, target_modules=["3"]))


def _second():
    return peft.LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False)


def test_a_second_adapter_on_an_unwrapped_whole_tie_is_shared_and_equals_the_untied_anchor():
    pm = _tied_pm()
    x = torch.randn(5, 8)
    pm.add_adapter("second", _second())
    base = pm.base_model.model
    assert base[2] is base[0] and "second" in base[0].lora_A
    assert tying.verify(pm) > 0
    pm.set_adapter("second")
    # anchor: plain peft on the untied model (2 a copy of 0), both adapters holding 0's factors
    anchor_base = _untied()
    with torch.no_grad():
        anchor_base[2].load_state_dict(anchor_base[0].state_dict())
    anchor = peft.get_peft_model(anchor_base, peft.LoraConfig(r=2, target_modules=["3"]))
    anchor.add_adapter("second", _second())
    anchor.set_adapter("second")
    ab = anchor.base_model.model
    with torch.no_grad():
        for i in (0, 2):
            ab[i].lora_A["second"].weight.copy_(base[0].lora_A["second"].weight)
            ab[i].lora_B["second"].weight.copy_(base[0].lora_B["second"].weight)
    y, y_anchor = pm(x), anchor(x)
    assert torch.equal(y, y_anchor)
    with pm.disable_adapter():
        assert torch.equal(pm(x), _untied_with_tie()(x))
    merged = merge_and_unload(copy.deepcopy(pm))
    assert merged[2].weight is merged[0].weight
    torch.testing.assert_close(merged(x), y, rtol=1e-6, atol=1e-6)


def _untied_with_tie():
    m = _untied()
    tying.Plan([tying.share("2", like="0")]).apply(m)
    return m


def test_unload_after_a_shared_second_adapter_gives_the_tied_base_back():
    pm = _tied_pm()
    x = torch.randn(3, 8)
    pm.add_adapter("second", _second())
    base = unload(pm)
    assert base[2] is not base[0] and base[2].weight is base[0].weight
    assert torch.equal(base(x), _untied_with_tie()(x))


@pytest.mark.parametrize("targets", [["0"], ["2", "3"]])
def test_one_module_of_an_unwrapped_whole_tie_is_refused_by_name_and_nothing_changes(targets):
    pm = _tied_pm()
    x = torch.randn(3, 8)
    y0 = pm(x)
    mods = [(n, type(v)) for n, v in pm.named_modules()]
    state = {k: v.clone() for k, v in pm.state_dict().items()}
    with pytest.raises(
        TieError,
        # the group is named whole since stop 58 (pair by pair, the advice looped on 3+)
        match=r"add_adapter\('new'\): the modules at \['0', '2'\] are one module tied whole, "
        r"but the config targets \['[02]'\] .*Target every path .*nothing was changed",
    ):
        pm.add_adapter("new", peft.LoraConfig(r=2, target_modules=targets))
    assert sorted(pm.peft_config) == ["default"]
    assert [(n, type(v)) for n, v in pm.named_modules()] == mods
    assert all(torch.equal(v, state[k]) for k, v in pm.state_dict().items())
    assert torch.equal(pm(x), y0)
    tying.verify(pm)


@pytest.mark.parametrize("tied", [True, False])
def test_load_adapter_of_a_shared_adapter_is_shared_again_or_refused_when_the_tie_is_gone(
    tied, tmp_path
):
    # peft's load_adapter goes through add_adapter with the saved config, which excludes the
    # tied path (it shared its source's adapter): loaded into a model with the tie it is
    # shared again (equal to the model it was saved from); into one without, the tied path
    # would run without the delta (before: loaded, outputs off, no error)
    pm = _tied_pm()
    pm.add_adapter("second", _second())
    pm.set_adapter("second")
    x = torch.randn(3, 8)
    want = pm(x)
    pm.save_pretrained(tmp_path)
    if tied:
        other = _tied_pm()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = get_peft_model(_untied(), peft.LoraConfig(r=2, target_modules=["3"]))
    if tied:
        other.load_adapter(str(tmp_path / "second"), "second")
        other.set_adapter("second")
        assert other.base_model.model[2] is other.base_model.model[0]
        assert torch.equal(other(x), want)
        return
    y0 = other(x)
    with pytest.raises(
        TieError,
        match=r"add_adapter\('second'\): the adapter's config marks '2' as sharing its "
        r"source's adapter .* not tied whole .*the model was left as it was",
    ):
        other.load_adapter(str(tmp_path / "second"), "second")
    assert sorted(other.peft_config) == ["default"] and torch.equal(other(x), y0)


def test_a_second_adapter_giving_a_tied_module_another_rank_is_refused_as_in_get_peft_model():
    pm = _tied_pm()
    config = peft.LoraConfig(r=2, target_modules=["0", "2"], rank_pattern={"^2$": 4})
    with pytest.raises(
        TieError,
        match=r"^add_adapter\('new'\): rank_pattern gives '2' 4 but '0', whose adapter it "
        r"shares .* the adapter was not added and the model was left as it was$",
    ):
        pm.add_adapter("new", config)
    assert sorted(pm.peft_config) == ["default"]
    assert not isinstance(pm.base_model.model[0], peft.tuners.lora.LoraLayer)


def test_load_adapter_of_a_file_with_weights_under_the_tied_path_is_refused(tmp_path):
    # an adapter made on the untied model (2 a copy of 0, its own LoRA weights): sharing 0's
    # adapter at 2 would drop 2's weights (with the first fix alone: loaded, 4.5 off)
    untied = _untied()
    with torch.no_grad():
        untied[2].load_state_dict(untied[0].state_dict())
    torch.manual_seed(5)
    made = peft.get_peft_model(untied, _second())
    made.save_pretrained(tmp_path)
    pm = _tied_pm()
    x = torch.randn(3, 8)
    y0 = pm(x)
    with pytest.raises(
        TieError,
        match=r"add_adapter\('b'\): the adapter file holds weights of its own for '2', which "
        r"is tied whole to '0' .*the model was left as it was",
    ):
        pm.load_adapter(str(tmp_path), adapter_name="b")
    assert sorted(pm.peft_config) == ["default"] and torch.equal(pm(x), y0)
