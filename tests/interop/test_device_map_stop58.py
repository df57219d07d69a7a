"""tying.hf.from_pretrained(device_map=...) that offloads one end of a tie (stop 58).

HF dispatches (accelerate's offload hooks) before tying re-creates the ties, so a tied
slot in an offloaded module kept a hook looking for its own weight in the offload index
(the file holds each tie once), and a tie's source offloaded to "disk" is a meta
placeholder outside its own forward. The loaded model failed at its first forward,
inside accelerate (``KeyError: 'lm_head.weight'``) or with a TieError whose advice
(``tying.untie``) raised the same error. Now refused at the load, naming the tie and the
device_map entry to change; the advice is followed below.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import tying
import tying.hf
from tests.interop import models as M

accelerate = pytest.importorskip("accelerate")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

X = torch.arange(8)[None]
HEAD = tying.Plan([tying.share("lm_head.weight", like="transformer.wte.weight")])
SPLIT = {
    "transformer.wte": "cpu",
    "transformer.wpe": "cpu",
    "transformer.h": "disk",
    "transformer.ln_f": "cpu",
    "lm_head": "cpu",
}


def _logits(model):
    with torch.no_grad():
        return model(X).logits


def _load(folder, tmp_path, device_map):
    return tying.hf.from_pretrained(
        transformers.GPT2LMHeadModel, folder, device_map=device_map, offload_folder=tmp_path / "off"
    )


def _saved(tmp_path, model):
    ref = _logits(model)
    tying.hf.save_pretrained(model, tmp_path / "m")
    return tmp_path / "m", ref


def test_a_plan_tied_stack_offloaded_to_disk_is_refused_at_the_load(tmp_path):
    model = M.gpt2()
    M.GPT2_PLAN.apply(model)
    folder, ref = _saved(tmp_path, model)
    with pytest.raises(
        tying.TieError,
        match=r"device_map offloads 'transformer.h' \('disk'\), which holds "
        r"'transformer.h.1.ln_1.weight' tied to 'transformer.h.0.ln_1.weight'.*"
        r"pass device_map with 'transformer.h': 'cpu'",
    ):
        _load(folder, tmp_path, SPLIT)
    # the advice, followed
    again = _load(folder, tmp_path, dict(SPLIT, **{"transformer.h": "cpu"}))
    assert torch.equal(_logits(again), ref)
    tying.verify(again)
    # the other advice: load without device_map, untie, then dispatch with the offload
    untied = tying.hf.from_pretrained(transformers.GPT2LMHeadModel, folder)
    tying.untie(untied)
    accelerate.dispatch_model(untied, SPLIT, main_device="cpu", offload_dir=tmp_path / "o2")
    assert torch.equal(_logits(untied), ref)


def test_hf_own_tie_with_one_end_on_disk_is_refused_naming_it(tmp_path):
    model = M.gpt2(tie_word_embeddings=True)
    folder, ref = _saved(tmp_path, model)
    with pytest.raises(
        tying.TieError,
        match=r"offloads 'lm_head' \('disk'\), which holds 'lm_head.weight' tied to "
        r"'transformer.wte.weight'.*'lm_head': 'cpu'",
    ):
        _load(folder, tmp_path, {"transformer": "cpu", "lm_head": "disk"})
    # both ends offloaded: accelerate serves HF's own tie (no false refusal)
    both = _load(folder, tmp_path, {"transformer": "disk", "lm_head": "disk"})
    assert torch.equal(_logits(both), ref)


def test_ties_kept_out_of_the_offload_load_exactly(tmp_path):
    model = M.gpt2()
    HEAD.apply(model)
    folder, ref = _saved(tmp_path, model)
    # the head tie on cpu, the untied blocks on disk: no refusal, same logits
    again = _load(folder, tmp_path, SPLIT)
    assert torch.equal(_logits(again), ref)
    assert again.lm_head.weight is again.transformer.wte.weight
