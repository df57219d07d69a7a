"""Property: any plan drawn from a pool of rules survives tying.hf's save/load exactly.

The defect class is "a tie the file or the loader does not know about"; each
rule in the pool is a different kind (whole modules, one tensor, a relation
with a learned extra, a self re-parametrisation, an exception by ``free``).
"""

from __future__ import annotations

import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
transformers = M.transformers

POOL = [
    tying.share("transformer.h.*", like="transformer.h.0"),
    tying.share("lm_head.weight", like="transformer.wte.weight"),
    tying.share(
        "transformer.h.2.mlp.c_proj.weight",
        like="transformer.h.1.mlp.c_fc.weight",
        relation=tying.Transposed(),
    ),
    tying.share(
        "transformer.h.1.attn.c_proj.weight",
        like="transformer.h.0.attn.c_proj.weight",
        relation=tying.Scaled(0.5),
    ),
    tying.share("transformer.h.1.ln_2.weight", relation=tying.Hashed(8, seed=3)),
    tying.free("transformer.h.*.ln_1"),
    tying.share("transformer.h.2.attn.c_attn.bias", like="transformer.h.0.attn.c_attn.bias"),
]


def _ties(model):
    return {(t.target, t.source, t.relation) for t in tying.ties(model)}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=5), st.booleans())
def test_any_plan_from_the_pool_round_trips_exactly_through_tying_hf(picks, hf_own_save):
    model = M.gpt2()
    plan = tying.Plan([POOL[i] for i in picks])
    try:
        plan.apply(model)
    except tying.TieError:
        return  # a combination the engine refuses (e.g. a relation on a tied slot)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 0:
                p.fill_(1.25)  # learned extras must come from the file, not the plan
    x = M.ids(97)
    with tempfile.TemporaryDirectory() as folder:
        if hf_own_save:
            model.save_pretrained(folder)
            again = hf.from_pretrained(transformers.GPT2LMHeadModel, folder, plan=plan)
        else:
            hf.save_pretrained(model, folder)
            again = hf.from_pretrained(transformers.GPT2LMHeadModel, folder)
        again.eval()
        assert torch.equal(M.logits(again, x), M.logits(model, x))
        assert _ties(again) == _ties(model)
        assert tying.count(again).physical == tying.count(model).physical
