"""Stop 38: ``tying.hf.resize_token_embeddings`` takes the integral sizes plain HF takes.

``numpy.int64(70)`` (a size read from a tokenizer's array, or ``len`` of a numpy vocab)
was refused as "not a positive int"; plain HF resizes with it and writes ``vocab_size``
as an int. Floats, bools and strings stay refused.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers
X = torch.tensor([[1, 2, 3, 96, 5]])


def _both():
    ours = M.gpt2()
    M.GPT2_PLAN.apply(ours)
    plain = M.gpt2(tie_word_embeddings=True)
    plain.load_state_dict(hf.logical_state_dict(ours))  # the same values, HF's own tie
    return ours, plain


@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint16])
def test_a_numpy_size_resizes_as_plain_hf_does(kind, tmp_path):
    ours, plain = _both()
    hf.resize_token_embeddings(ours, kind(101), pad_to_multiple_of=kind(8), mean_resizing=False)
    # (plain HF refuses a numpy pad_to_multiple_of; tying takes it as the int it is)
    plain.resize_token_embeddings(kind(101), pad_to_multiple_of=8, mean_resizing=False)
    assert type(ours.config.vocab_size) is int and ours.config.vocab_size == 104
    assert ours.lm_head.weight is ours.transformer.wte.weight
    with torch.no_grad():  # the new rows are HF's random init: compare the kept tokens
        plain.transformer.wte.weight.copy_(ours.transformer.wte.weight)
    assert torch.equal(ours(X).logits, plain(X).logits)
    folder = hf.save_pretrained(ours, tmp_path)
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 104
    again = hf.from_pretrained(T.GPT2LMHeadModel, folder).eval()
    assert torch.equal(again(X).logits, ours(X).logits)


@pytest.mark.parametrize("bad", [np.float64(70.0), np.bool_(True), np.int64(0), np.int64(-5)])
def test_a_numpy_value_that_is_no_size_is_still_refused_unchanged(bad):
    ours, _ = _both()
    before = ours.transformer.wte.weight.detach().clone()
    with pytest.raises(TypeError, match=r"new_num_tokens must be a positive int or None"):
        hf.resize_token_embeddings(ours, bad)
    assert torch.equal(ours.transformer.wte.weight, before) and ours.config.vocab_size == 97
    assert tying.verify(ours)


@settings(derandomize=True, deadline=None, max_examples=8)
@given(
    st.integers(1, 140),
    st.sampled_from([int, np.int64, np.int32]),
    st.sampled_from([None, 1, 8, 64]),
)
def test_any_integral_size_gives_the_same_model_as_the_python_int(n, kind, pad):
    """The brute-force reference: the same resize with a Python int."""
    a, _ = _both()
    b, _ = _both()
    kw = {"mean_resizing": False}
    hf.resize_token_embeddings(a, int(n), pad_to_multiple_of=pad, **kw)
    hf.resize_token_embeddings(
        b, kind(n), pad_to_multiple_of=None if pad is None else kind(pad), **kw
    )
    assert a.config.vocab_size == b.config.vocab_size and type(b.config.vocab_size) is int
    keep = min(n, 97)
    x = torch.arange(keep)[None][:, :32] % keep
    assert torch.equal(a(x).logits[..., :keep], b(x).logits[..., :keep])
    assert b.lm_head.weight is b.transformer.wte.weight
