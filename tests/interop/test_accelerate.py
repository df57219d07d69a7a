"""accelerate's offload hooks on tied models: a read of an offloaded tie source is refused.

accelerate loads a module's weights for that module's own forward only. A module that
reads them through a tying slot (an lm_head tied to the embedding) ran on the meta
placeholder, and ``F.linear(cpu_input, meta_weight)`` returns uninitialised memory
without an error: logits 5e19 off (stop 31).
"""

from __future__ import annotations

import pytest
import torch

import tying
from tests.interop import models as M

accelerate = pytest.importorskip("accelerate")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _logits(model, x):
    with torch.no_grad():
        return model(x).logits


@pytest.mark.parametrize(
    "rule, reader",
    [
        (tying.share("lm_head.weight", like="transformer.wte.weight"), "lm_head"),
        (tying.share("transformer.h.*", like="transformer.h.0"), "transformer.h.1"),
    ],
)
def test_an_offloaded_tie_source_read_through_the_tie_is_refused(rule, reader):
    model = M.gpt2()
    tying.Plan([rule]).apply(model)
    x = torch.arange(8)[None]
    accelerate.cpu_offload(model, execution_device="cpu")
    with pytest.raises(tying.TieError, match=f"{reader}.* reads .* accelerate has offloaded"):
        _logits(model, x)


def test_offload_after_untie_gives_the_tied_models_logits():
    model = M.gpt2()
    M.GPT2_PLAN.apply(model)
    x = torch.arange(8)[None]
    ref = _logits(model, x)
    tying.untie(model)
    accelerate.cpu_offload(model, execution_device="cpu")
    assert torch.equal(_logits(model, x), ref)


def test_hf_own_tie_offloads_as_before():
    model = M.gpt2(tie_word_embeddings=True)
    x = torch.arange(8)[None]
    ref = _logits(model, x)
    accelerate.cpu_offload(model, execution_device="cpu")
    assert torch.equal(_logits(model, x), ref)
