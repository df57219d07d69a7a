"""tying.save/load keep the state dict's metadata, as torch.save does (stop 57).

A file saved from a C4 LiftingConv2d loaded into a D4 one with no error: the file kept no
state-dict metadata (the layer's ``tying.group``), and every tie it declares exists in
the D4 layer too, whose mirrored copies were left reading the C4 kernels. The anchor,
``torch.save(model.state_dict())`` + ``load_state_dict``, keeps ``_metadata`` and refuses.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import tying
from tying.core.file_format import HASH_KEY, STATE_METADATA_KEY, _digest
from tying.nn import LiftingConv2d

from .helpers import state_bytes


def _rewrite(path, out, change):
    """``path``'s tensors and header with ``change(meta)`` applied, re-hashed (an old
    tying's file, or one edited and re-hashed by hand)."""
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    change(meta)
    meta[HASH_KEY] = _digest(tensors, meta)
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.fixture(scope="module")
def c4_file(tmp_path_factory):
    torch.manual_seed(0)
    c4 = LiftingConv2d(2, 3, 3, group="C4")
    path = tying.save(c4, tmp_path_factory.mktemp("c4") / "c4.safetensors")
    return c4, path


def test_a_c4_file_is_refused_by_a_d4_layer_as_the_anchor_refuses_it(c4_file):
    c4, path = c4_file
    with pytest.raises(ValueError, match="saved from a layer over group 'C4'"):  # the anchor
        LiftingConv2d(2, 3, 3, group="D4").load_state_dict(c4.state_dict())
    d4 = LiftingConv2d(2, 3, 3, group="D4")
    snap = state_bytes(d4)
    with pytest.raises(
        tying.TieError,
        match=r"load: .*c4.safetensors.*saved from a layer over group 'C4' and this layer is "
        r"over group 'D4'.*group='C4'.*left as it was",
    ):
        tying.load(d4, path)
    assert state_bytes(d4) == snap
    fresh = LiftingConv2d(2, 3, 3, group="C4")
    tying.load(fresh, path)
    x = torch.randn(1, 2, 7, 7)
    assert torch.equal(fresh(x), c4(x))


def test_the_file_records_the_state_dicts_metadata(c4_file):
    c4, path = c4_file
    with safe_open(str(path), "pt") as f:
        recorded = json.loads(f.metadata()[STATE_METADATA_KEY])
    assert recorded == {k: dict(v) for k, v in c4.state_dict()._metadata.items()}


def test_a_file_without_the_record_is_refused_by_the_ties_it_lacks(c4_file, tmp_path):
    c4, path = c4_file
    old = _rewrite(path, tmp_path / "old.safetensors", lambda m: m.pop(STATE_METADATA_KEY))
    d4 = LiftingConv2d(2, 3, 3, group="D4")
    snap = state_bytes(d4)
    with pytest.raises(
        tying.TieError,
        match=r"load: biases.m is tied in this model \(to biases.e via Same\(\)\) \(and 7 "
        r"more: .*\) but .*old.safetensors' neither declares that tie nor stores biases.m",
    ):
        tying.load(d4, old)
    assert state_bytes(d4) == snap
    fresh = LiftingConv2d(2, 3, 3, group="C4")  # files saved before keep loading
    tying.load(fresh, old)
    x = torch.randn(1, 2, 7, 7)
    assert torch.equal(fresh(x), c4(x))


def test_a_model_with_a_tie_over_a_slot_the_file_never_had_is_refused(tmp_path):
    path = tying.save(nn.ModuleDict({"a": nn.Linear(3, 3)}), tmp_path / "a.safetensors")
    m = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)})
    tying.Plan([tying.share("b", like="a")]).apply(m)
    with pytest.raises(tying.TieError, match=r"load: b.bias is tied in this model .*neither"):
        tying.load(m, path)


def test_a_malformed_record_is_refused_by_name(c4_file, tmp_path):
    _, path = c4_file
    bad = _rewrite(
        path, tmp_path / "bad.safetensors", lambda m: m.update({STATE_METADATA_KEY: "[1]"})
    )
    m = LiftingConv2d(2, 3, 3, group="C4")
    with pytest.raises(tying.TieError, match=r"malformed tie metadata: field 'tying.state_meta"):
        tying.load(m, bad)


class _Seen(nn.Linear):
    """A module whose layout version is 2; its load records the version it is handed."""

    _version = 2
    seen: list = []

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        type(self).seen.append(local_metadata.get("version"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


class _Newer(_Seen):
    _version = 3


def test_a_module_is_handed_the_version_it_was_saved_with_as_torch_hands_it(tmp_path):
    saved = _Seen(2, 2)
    _Seen.seen = []
    _Newer(2, 2).load_state_dict(saved.state_dict())  # the anchor
    anchor = list(_Seen.seen)
    path = tying.save(saved, tmp_path / "v2.safetensors")
    _Seen.seen = []
    tying.load(_Newer(2, 2), path)
    assert anchor == [2] and _Seen.seen == anchor
