"""Stop 53: ``tying.hf.resize_token_embeddings`` under a plain ``DistributedDataParallel``.

Stop 52 refused the resize of a model that ``td.ddp`` or ``td.fully_shard`` holds; a model
wrapped by torch's own ``DistributedDataParallel(model)`` carries no mark, so the resize
went through: the wrapper kept all-reducing the old tables (HF-tied GPT-2: ``wte`` 64 -> 72
rows under a wrapper built for 64). It is refused now before any change, naming the wrapper
and the fix; once the wrapper is dropped, the resize runs.
"""

from __future__ import annotations

import gc

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

import tying
import tying.hf

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")


def gpt2(tie: bool):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg)


@pytest.mark.parametrize("tie", [True, False], ids=["hf-tied", "untied"])
def test_resize_under_plain_ddp_is_refused_before_any_change(group, tie):
    model = gpt2(tie)
    wrapped = DistributedDataParallel(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters(remove_duplicate=False))
    with pytest.raises(
        tying.TieError,
        match=r"resize_token_embeddings: the model is held by a torch DistributedDataParallel "
        r"wrapper.*drop the wrapper \(inner = wrapped\.module; del wrapped\).*nothing was changed",
    ):
        tying.hf.resize_token_embeddings(model, 72, mean_resizing=False)
    now = model.state_dict()
    assert set(now) == set(before)
    assert all(torch.equal(now[k], v) for k, v in before.items())
    assert dict(model.named_parameters(remove_duplicate=False)) == params
    assert model.config.vocab_size == 64
    # the fix as the message gives it: drop the wrapper, then the resize runs
    inner = wrapped.module
    del wrapped
    gc.collect()
    tying.hf.resize_token_embeddings(inner, 72, mean_resizing=False)
    assert inner.get_input_embeddings().weight.shape == (72, 16)
    assert (inner.lm_head.weight is inner.transformer.wte.weight) == tie
