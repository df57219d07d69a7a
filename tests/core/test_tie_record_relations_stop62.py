"""A strict load_state_dict refuses a state dict whose ties read through other relations.

The stop-59 record lists the tied slots only. A square ``Transposed`` tie and a ``Same``
(or ``Rotated``) tie of the same slot give the same keys and the same record, so
``load_state_dict`` loaded one model's state dict into the other with no error, and the
slot computed another function of the stored source (1.20 off). ``tying.load`` refused
the same file. The record now lists each non-``Same`` slot's relation too.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import tying


def _model(relation):
    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    tying.Plan([tying.share("b.weight", like="a.weight", relation=relation)]).apply(m)
    return m


@pytest.mark.parametrize(
    ("saved", "here"),
    [
        (tying.Transposed(), tying.Same()),
        (tying.Same(), tying.Transposed()),
        (tying.Transposed(), tying.Rotated(1)),
        (tying.Rotated(1), tying.Rotated(3)),
        (tying.Flipped((0,)), tying.Flipped((1,))),
    ],
    ids=repr,
)
def test_a_strict_load_with_other_relations_is_refused_before_any_change(saved, here):
    sd = _model(saved).state_dict()
    m = _model(here)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=r"load_state_dict into ModuleDict: the state dict was saved from a model that "
        r"ties the same slots through other relations \(b\.weight: saved via "
        + f"{saved!r}, this model via {here!r}".replace("(", r"\(").replace(")", r"\)"),
    ):
        m.load_state_dict(sd)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_weights_only_round_trip_keeps_the_relations():
    src = _model(tying.Transposed())
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    with pytest.raises(tying.TieError, match=r"other relations"):
        _model(tying.Same()).load_state_dict(sd)
    m = _model(tying.Transposed())
    m.load_state_dict(sd)  # the same relations load
    x = torch.randn(2, 4)
    torch.testing.assert_close(m.b(x), src.b(x))


def test_the_advice_works_and_equal_relations_and_old_records_load():
    src = _model(tying.Transposed())
    sd = src.state_dict()
    m = _model(tying.Same())
    m.load_state_dict(dict(sd))  # the advice: a plain dict, on purpose
    assert torch.equal(m.a.weight, src.a.weight)
    _model(tying.Scaled(init=1.0)).load_state_dict(_model(tying.Scaled(init=1.0)).state_dict())
    old = _model(tying.Transposed()).state_dict()
    del old._metadata[""]["tying.relations"]  # a state dict saved before stop 62
    _model(tying.Same()).load_state_dict(old)  # not checked, as before
    _model(tying.Same()).load_state_dict(sd, strict=False)  # strict=False: as before


def test_the_record_lists_only_relations_other_than_same():
    m = nn.ModuleDict({"e": nn.Embedding(5, 4), "h": nn.Linear(4, 5), "t": nn.Linear(5, 4)})
    tying.Plan(
        [
            tying.share("h.weight", like="e.weight"),
            tying.share("t.weight", like="h.weight", relation=tying.Transposed()),
        ]
    ).apply(m)
    meta = m.state_dict()._metadata[""]
    assert meta["tying.tied"] == ["h.weight", "t.weight"]
    assert meta["tying.relations"] == ['t.weight {"dims": [0, 1], "type": "Transposed"}']
    tying.untie(m)
    assert "tying.relations" not in m.state_dict()._metadata[""]
