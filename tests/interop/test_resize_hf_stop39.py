"""Stop 39: ``tying.hf.resize_token_embeddings`` keeps the kept tokens' rows, or refuses.

HF's resize keeps the first ``min(old, new)`` rows of every embedding table. A tie whose
relation does not keep each row where it was (``Flipped`` or ``Rotated(k=2)`` over the
vocabulary, ``Mirrored(dim=0)``, ``Hashed`` with new rows re-bucketed into the old ones)
was re-applied after the resize and silently gave the kept tokens other logits (0.03 to
0.4 away on a tiny GPT-2). It is refused now, naming the tie, with the model unchanged;
the anchor is plain HF resizing the same model untied (its kept logits are the old ones).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
V = 97  # M.gpt2's vocabulary
X = M.ids(60)  # token ids below every size resized to here


def _tied(rule):
    model = M.gpt2()
    tying.Plan([rule]).apply(model)
    return model


def _head(relation, like="transformer.wte.weight"):
    return tying.share("lm_head.weight", like=like, relation=relation)


def _plain_hf_kept_logits(model, new: int, **kw) -> torch.Tensor:
    """The anchor: plain HF resizing an untied copy of ``model``; logits of the kept tokens."""
    untied = copy.deepcopy(model)
    tying.untie(untied)
    untied.resize_token_embeddings(new, **kw)
    return M.logits(untied, X)[..., : min(V, new)]


def _snapshot(model):
    return (
        {k: v.clone() for k, v in hf.logical_state_dict(model).items()},
        M.logits(model, X),
        model.config.vocab_size,
    )


def _assert_unchanged(model, snap):
    state, out, vocab = snap
    now = hf.logical_state_dict(model)
    assert set(now) == set(state)
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert torch.equal(M.logits(model, X), out)
    assert model.config.vocab_size == vocab
    assert tying.verify(model) >= 1


MOVING = [
    pytest.param(_head(tying.Flipped(dims=(0,))), 110, "Flipped", id="flipped-vocab"),
    pytest.param(_head(tying.Flipped(dims=(0, 1))), 80, "Flipped", id="flipped-both-shrink"),
    pytest.param(_head(tying.Rotated(k=2)), 110, "Rotated", id="rotated-half-turn"),
    pytest.param(_head(tying.Mirrored(dim=0), like=None), 110, "Mirrored", id="mirrored-vocab"),
    pytest.param(_head(tying.Hashed(buckets=64), like=None), 110, "Hashed", id="hashed-grow"),
    pytest.param(
        tying.share("transformer.wte.weight", like="lm_head.weight", relation=tying.Flipped((0,))),
        110,
        "Flipped",
        id="flipped-other-way",
    ),
]


@pytest.mark.parametrize("rule, new, relation", MOVING)
def test_a_tie_that_moves_kept_rows_is_refused_naming_it_and_changes_nothing(rule, new, relation):
    model = _tied(rule)
    snap = _snapshot(model)
    target = re.escape(rule.target)
    with pytest.raises(
        tying.TieError,
        match=rf"resize_token_embeddings: after the resize, {target} no longer holds its kept "
        rf"values .*max \|diff\| .*: the tie {target} <- .*\({relation}\(.*does not keep each "
        rf"token's row .*tying\.free\({re.escape(repr(rule.target))}\).*nothing was changed",
    ):
        hf.resize_token_embeddings(model, new, mean_resizing=False)
    _assert_unchanged(model, snap)


KEEPING = [
    pytest.param(_head(tying.Same()), id="same"),
    pytest.param(_head(tying.Scaled(2.0)), id="scaled"),
    pytest.param(_head(tying.Flipped(dims=(1,))), id="flipped-hidden"),
    pytest.param(_head(tying.Mirrored(dim=-1), like=None), id="mirrored-hidden"),
]


@pytest.mark.parametrize("rule", KEEPING)
@pytest.mark.parametrize("new, pad", [(110, None), (80, None), (101, 8)])
def test_a_tie_that_keeps_rows_in_place_resizes_as_plain_hf_does(rule, new, pad):
    model = _tied(rule)
    before = M.logits(model, X)
    anchor = _plain_hf_kept_logits(model, new, pad_to_multiple_of=pad, mean_resizing=False)
    hf.resize_token_embeddings(model, new, pad_to_multiple_of=pad, mean_resizing=False)
    k = min(V, new)
    assert torch.equal(M.logits(model, X)[..., :k], anchor)
    assert torch.equal(anchor, before[..., :k])  # HF keeps the kept rows exactly
    tying.verify(model)
    assert model.config.vocab_size == (new if pad is None else -(-new // pad) * pad)


@pytest.mark.parametrize("reverse", [False, True], ids=["head-reads-embedding", "other-way"])
def test_a_trained_scale_is_kept_through_the_resize(reverse):
    # re-applying the Scaled tie made its scale anew at init: 3.0 came back as 2.0
    rule = (
        tying.share("transformer.wte.weight", like="lm_head.weight", relation=tying.Scaled(2.0))
        if reverse
        else _head(tying.Scaled(2.0))
    )
    model = _tied(rule)
    owner = model.transformer.wte if reverse else model.lm_head
    with torch.no_grad():
        owner.weight_scale.fill_(3.0)  # as training leaves it
    anchor = _plain_hf_kept_logits(model, 110, mean_resizing=False)
    hf.resize_token_embeddings(model, 110, mean_resizing=False)
    owner = model.transformer.wte if reverse else model.lm_head
    assert owner.weight_scale.item() == 3.0
    assert torch.equal(M.logits(model, X)[..., :V], anchor)
    tying.verify(model)


def test_hashed_shrinking_keeps_its_values_to_rounding_and_is_not_refused():
    # the buckets are re-averaged from entries that all held one bucket's value
    model = _tied(_head(tying.Hashed(buckets=64), like=None))
    before = M.logits(model, X)
    hf.resize_token_embeddings(model, 80, mean_resizing=False)
    torch.testing.assert_close(M.logits(model, X)[..., :80], before[..., :80])


# (source, relation, whether it keeps every row in place: then it must not be refused)
RELATIONS = st.sampled_from(
    [
        ("wte", tying.Same(), True),
        ("wte", tying.Scaled(0.5), True),
        ("wte", tying.Flipped(dims=(0,)), False),
        ("wte", tying.Flipped(dims=(1,)), True),
        ("wte", tying.Flipped(dims=(0, 1)), False),
        ("wte", tying.Rotated(k=2), False),
        ("own", tying.Mirrored(dim=0), False),
        ("own", tying.Mirrored(dim=1), True),
        ("own", tying.Scaled(0.5), True),
        ("own", tying.Hashed(buckets=32, seed=3), None),  # kept when shrinking only
    ]
)


@settings(derandomize=True, deadline=None, max_examples=16)
@given(
    rel=RELATIONS,
    reverse=st.booleans(),
    new=st.integers(60, 130),
    pad=st.sampled_from([None, 8]),
    trained=st.sampled_from([None, 1.75, -0.5]),
)
def test_any_relation_tie_either_keeps_plain_hfs_kept_logits_or_is_refused_unchanged(
    rel, reverse, new, pad, trained
):
    where, relation, keeps = rel
    if where == "own":
        rule = tying.share("lm_head.weight", relation=relation)
    elif reverse:
        rule = tying.share("transformer.wte.weight", like="lm_head.weight", relation=relation)
    else:
        rule = _head(relation)
    model = _tied(rule)
    if trained is not None:  # a relation's learned extras, as training leaves them
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("_scale"):
                    param.fill_(trained)
    anchor = _plain_hf_kept_logits(model, new, pad_to_multiple_of=pad, mean_resizing=False)
    snap = _snapshot(model)
    try:
        hf.resize_token_embeddings(model, new, pad_to_multiple_of=pad, mean_resizing=False)
    except tying.TieError as err:
        assert keeps is not True, f"{relation!r} keeps rows in place, yet was refused: {err}"
        assert "no longer holds its kept values" in str(err)
        _assert_unchanged(model, snap)
        return
    torch.testing.assert_close(M.logits(model, X)[..., : min(V, new)], anchor)
    tying.verify(model)
