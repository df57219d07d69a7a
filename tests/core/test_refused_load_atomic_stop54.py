"""Stops 53-54: a load that torch refuses (a size mismatch, missing or unexpected keys) leaves a
model that ``tying`` guards exactly as it was: every value, every Parameter's identity.

torch copies module after module and raises only at the end, so before stop 53 a C4
``GroupConv2d`` state dict loaded into a D4 layer copied the biases, then refused the
weights. The root's check before loading now finds what torch would refuse first, with
torch's rules, and raises torch's kind of error with nothing copied.

Stop 54: the rules that depend on the state dict's version (a batch norm fills
``num_batches_tracked`` only for a file older than version 2; an instance norm refuses
running stats it keeps none of), a meta entry copied into a real tensor, and the
``tying.nn`` layers that hold no module (an untied ``TiedGateLSTM``, ``SymmetricConv1d``,
``LocallyConnected2d``: now guarded from their ``__init__``). The anchor is plain torch on
the same model tied by hand: the same verdict and the same words.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

import tying
import tying.nn as tnn
from tests.nn.test_flags_stop38 import BUILDS


def _snapshot(model: nn.Module) -> dict:
    return {k: (v.detach().clone(), id(v)) for k, v in model.state_dict(keep_vars=True).items()}


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    now = _snapshot(model)
    assert now.keys() == before.keys()
    for key, (value, ident) in before.items():
        assert now[key][1] == ident, f"{key}: a new Parameter after a refused load"
        assert torch.equal(now[key][0], value), f"{key}: copied by a refused load"


def _refused_unchanged(model, state_dict, match, **kwargs) -> None:
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match=match):
        model.load_state_dict(state_dict, **kwargs)
    _assert_unchanged(model, before)


def _other_values(state_dict: dict) -> dict:
    return {k: v + 1.0 if v.is_floating_point() else v for k, v in state_dict.items()}


def test_a_c4_group_conv_state_dict_into_a_d4_layer_is_refused_with_nothing_copied():
    for tied in (True, False):
        layer = tnn.GroupConv2d(2, 3, 3, group="D4", tied=tied)
        c4 = _other_values(tnn.GroupConv2d(2, 3, 3, group="C4", tied=tied).state_dict())
        _refused_unchanged(layer, c4, r"nothing was loaded\):\n\tMissing key\(s\).*kernels\.")


def test_a_kernel_3_lifting_conv_state_dict_into_a_kernel_5_layer_is_refused():
    layer = tnn.LiftingConv2d(2, 3, 5)
    small = _other_values(tnn.LiftingConv2d(2, 3, 3).state_dict())
    match = (
        r"size mismatch for kernels\.e: copying a param with shape torch\.Size\(\[3, 2, 3, 3\]\)"
    )
    _refused_unchanged(layer, small, match)
    _refused_unchanged(layer, small, match, strict=False)  # shapes are checked either way


def test_a_tied_lstm_state_dict_into_an_untied_one_in_a_model_is_refused():
    model = nn.Sequential(nn.Linear(3, 3), tnn.TiedGateLSTM(3, 5, tie_gates=False))
    tied = nn.Sequential(nn.Linear(3, 3), tnn.TiedGateLSTM(3, 5))
    sd = _other_values(tied.state_dict())
    _refused_unchanged(
        model, sd, r'Missing key\(s\) in state_dict: "1\.weight_ih_i", "1\.weight_ih_o"'
    )


def _plan_model() -> nn.Module:
    model = nn.Module()
    model.a, model.b, model.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3)
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(model)
    return model


def test_a_plan_tied_model_refuses_a_wrong_shape_missing_or_unexpected_key_before_copying():
    model = _plan_model()
    good = _other_values(_plan_model().state_dict())
    assert "b.weight" not in good  # tying stores the tied entry once
    wrong = {**good, "c.weight": torch.randn(4, 3)}
    _refused_unchanged(model, wrong, r"nothing was loaded\):\n\tsize mismatch for c\.weight")
    missing = {k: v for k, v in good.items() if k != "c.bias"}
    _refused_unchanged(model, missing, r'Missing key\(s\) in state_dict: "c\.bias"\. ')
    extra = {**good, "c.scale": torch.ones(3), "d.weight": torch.ones(1)}
    # in torch's order (the root's own keys first): plain torch names them the same way
    _refused_unchanged(
        model, extra, r'Unexpected key\(s\) in state_dict: "d\.weight", "c\.scale"\. '
    )
    # every problem is named at once
    both = {**wrong, "zz": torch.ones(1)}
    both.pop("a.bias")
    _refused_unchanged(model, both, r'(?s)Missing.*"a\.bias".*Unexpected.*"zz".*size mismatch')
    # an untied model's state dict (the tied entry held twice, agreeing) is still accepted
    untied = {**good, "b.weight": good["a.weight"].clone()}
    model.load_state_dict(untied)
    assert torch.equal(model.b.weight, good["a.weight"])
    assert torch.equal(model.c.weight, good["c.weight"])


def test_strict_false_and_assign_keep_their_meaning():
    model = _plan_model()
    good = _other_values(_plan_model().state_dict())
    missing = {k: v for k, v in good.items() if k != "c.bias"}
    result = model.load_state_dict({**missing, "zz": torch.ones(1)}, strict=False)
    assert result.missing_keys == ["c.bias"] and result.unexpected_keys == ["zz"]
    assert torch.equal(model.c.weight, good["c.weight"])  # the rest loaded, as torch does
    _refused_unchanged(model, {**good, "c.weight": torch.ones(4, 3)}, "size mismatch", strict=False)
    _refused_unchanged(model, {**good, "c.weight": torch.ones(4, 3)}, "size mismatch", assign=True)
    fresh = _other_values(good)
    model.load_state_dict(fresh, assign=True)
    assert model.c.weight.data_ptr() == fresh["c.weight"].data_ptr()  # assigned, not copied
    assert torch.equal(model.b.weight, fresh["a.weight"])


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))  # 0-dim: torch accepts a [1] entry
        self.register_buffer("cache", torch.zeros(2), persistent=False)
        self.norm = nn.BatchNorm1d(3)


def test_torch_allowances_still_load_and_non_persistent_buffers_are_unexpected():
    model = nn.Module()
    model.a, model.b, model.s = nn.Linear(3, 3), nn.Linear(3, 3), _Scaled()
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(model)
    sd = OrderedDict(_other_values(model.state_dict()))
    sd["s.scale"] = torch.tensor([5.0])  # torch's 0-dim allowance
    del sd["s.norm.num_batches_tracked"]  # an old file: the batch norm fills it
    sd._metadata = {"s.norm": {"version": 1}}
    model.load_state_dict(sd)
    assert model.s.scale.item() == 5.0
    assert torch.equal(model.a.weight, sd["a.weight"])
    _refused_unchanged(model, {**sd, "s.cache": torch.ones(2)}, r'Unexpected.*"s\.cache"')


@pytest.mark.parametrize(
    ("layer", "arg"), [k for k in BUILDS if k[0][0].isupper() and "." not in k[0]]
)
def test_property_a_layer_given_another_configuration_loads_fully_or_changes_nothing(layer, arg):
    for value in (True, False):
        for wrapped in (False, True):
            torch.manual_seed(1)
            model = BUILDS[layer, arg](value)
            torch.manual_seed(2)
            other = BUILDS[layer, arg](not value)
            if wrapped:  # a module loaded before the layer shows a half load
                model = nn.Sequential(nn.Linear(2, 2), model)
                other = nn.Sequential(nn.Linear(2, 2), other)
            sd = _other_values(other.state_dict())
            before = _snapshot(model)
            try:
                model.load_state_dict(sd)
            except RuntimeError as err:
                assert "Error(s) in loading state_dict" in str(err)
                _assert_unchanged(model, before)
                continue
            for key, want in sd.items():  # loaded: every entry holds the file's value
                assert torch.equal(model.state_dict()[key], want), key


def _hand_tied(extra: nn.Module) -> nn.Module:
    """The anchor: plain torch, ``b.weight = a.weight`` by hand (no hook of tying's)."""
    model = nn.Module()
    model.a, model.b, model.x = nn.Linear(3, 3), nn.Linear(3, 3), extra
    model.b.weight = model.a.weight
    return model


def _plan_tied(extra: nn.Module) -> nn.Module:
    model = nn.Module()
    model.a, model.b, model.x = nn.Linear(3, 3), nn.Linear(3, 3), extra
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(model)
    return model


def _same_refusal_as_torch(make_extra, edit, **kwargs) -> None:
    """Refused with every value and Parameter kept, in plain torch's words (plain torch on
    the hand-tied model refuses the same state dict, after copying what came first)."""
    model, hand = _plan_tied(make_extra()), _hand_tied(make_extra())
    sd = OrderedDict(_other_values(model.state_dict()))
    sd._metadata = model.state_dict()._metadata
    edit(sd)
    hand_sd = OrderedDict({**sd, "b.weight": sd["a.weight"]})
    hand_sd._metadata = sd._metadata
    with pytest.raises(RuntimeError) as torch_err:
        hand.load_state_dict(hand_sd, **kwargs)
    want = str(torch_err.value).replace(":\n\t", " (nothing was loaded):\n\t", 1)
    _refused_unchanged(model, sd, "^" + re.escape(want) + "$", **kwargs)


def test_a_batch_norm_fills_num_batches_tracked_only_for_a_file_older_than_version_2():
    def drop(version):
        def edit(sd):
            del sd["x.num_batches_tracked"]
            sd._metadata = {**sd._metadata, "x": {"version": version}}

        return edit

    # version 2 (this torch's own files): the buffer is missing, as plain torch says; it
    # used to be taken as filled, and the load copied a.weight, a.bias, b.bias first
    _same_refusal_as_torch(lambda: nn.BatchNorm1d(3), drop(2))
    for version in (1, None):  # an old file: the batch norm fills it, the load goes on
        model = _plan_tied(nn.BatchNorm1d(3))
        sd = OrderedDict(_other_values(model.state_dict()))
        del sd["x.num_batches_tracked"]
        sd._metadata = {"x": {"version": version}} if version else {}
        model.load_state_dict(sd)
        assert torch.equal(model.x.running_mean, sd["x.running_mean"])


def test_an_instance_norm_given_running_stats_it_keeps_none_of_is_refused_before_copying():
    def stats(sd):
        sd["x.running_mean"], sd["x.running_var"] = torch.ones(3), torch.ones(3)
        sd._metadata = None  # a file with no version: torch's instance norm refuses them

    _same_refusal_as_torch(lambda: nn.InstanceNorm1d(3), stats)

    def stats_and_shape(sd):
        stats(sd)
        sd["a.bias"] = torch.ones(5)

    _same_refusal_as_torch(lambda: nn.InstanceNorm1d(3), stats_and_shape)


def test_a_meta_entry_copied_into_a_real_parameter_is_refused_before_copying():
    def meta(sd):
        sd["x.weight"] = torch.empty(2, 2, device="meta")

    _same_refusal_as_torch(lambda: nn.Linear(2, 2), meta)
    _same_refusal_as_torch(lambda: nn.Linear(2, 2), meta, strict=False)
    model = _plan_tied(nn.Linear(2, 2))  # assigned, not copied: loads, as in torch
    sd = _other_values(model.state_dict())
    model.load_state_dict({**sd, "x.weight": torch.empty(2, 2, device="meta")}, assign=True)
    assert model.x.weight.is_meta


#: the tying.nn layers that hold no module (nothing registers with them): each is guarded
#: from its own __init__ (stop 54); the last entry in the state dict is the wrong one, so a
#: half load shows in the entries before it
ALONE = {
    "TiedGateLSTM untied": lambda: tnn.TiedGateLSTM(3, 4, tie_gates=False),
    "TiedGateLSTM tied": lambda: tnn.TiedGateLSTM(3, 4),
    "SymmetricConv1d untied": lambda: tnn.SymmetricConv1d(2, 3, 5, tied=False),
    "SymmetricConv1d tied": lambda: tnn.SymmetricConv1d(2, 3, 5),
    "LocallyConnected2d": lambda: tnn.LocallyConnected2d(2, 3, 6, 3),
    "LocallyConnected2d no bias": lambda: tnn.LocallyConnected2d(2, 3, 6, 3, bias=False),
}


@pytest.mark.parametrize("name", list(ALONE))
def test_a_layer_alone_refuses_a_bad_load_with_nothing_copied_and_takes_a_good_one(name):
    torch.manual_seed(0)
    layer = ALONE[name]()
    good = _other_values(ALONE[name]().state_dict())
    last = list(good)[-1]
    # a size mismatch of the last entry, a missing last entry, an unexpected extra key
    shape = {**good, last: torch.ones(*good[last].shape, 2)}
    _refused_unchanged(layer, shape, rf"nothing was loaded\):\n\tsize mismatch for {last}:")
    _refused_unchanged(layer, shape, "size mismatch", strict=False)
    missing = {k: v for k, v in good.items() if k != last}
    _refused_unchanged(layer, missing, rf'Missing key\(s\) in state_dict: "{last}"')
    _refused_unchanged(layer, {**good, "zz": torch.ones(1)}, r'Unexpected key\(s\).*"zz"')
    ids = {k: id(v) for k, v in layer.state_dict(keep_vars=True).items()}
    layer.load_state_dict(good)  # the good one loads, into the same Parameters
    for key, value in layer.state_dict(keep_vars=True).items():
        assert torch.equal(value, good[key]), key
        assert id(value) == ids[key], key
