"""Review of stop 58 (commits 4a82144, d6c7157): two refusals whose advice took many tries
or named no device_map entry.

- ``tying.load`` of a plain file whose tie ends differ in several tied slots (an untied
  checkpoint of a shared stack) named one ``tying.free`` per refusal: a 4-layer shared stack
  took 6 loads, each refused, before the file loaded (ALBERT's 12 layers: one per tied
  parameter). Now one refusal names every slot whose ends differ and one plan that frees them.
- ``tying.hf.from_pretrained`` with a ``device_map`` that splits a Plan-tied stack
  (``transformer.h.0`` kept, ``transformer.h.1`` on ``"disk"``, as ``device_map="auto"`` with a
  small ``max_memory`` does) failed in ``plan.apply`` with "is on meta but its source ... is on
  cpu; move them to one device first", naming no device_map entry: the new refusal never ran.
  Now it names the entry and the map that loads.
"""

from __future__ import annotations

import re

import pytest
import safetensors.torch as st
import torch
from torch import nn

import tying


def _stack():
    return nn.ModuleDict({"layers": nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])})


def test_every_tie_whose_ends_differ_is_named_in_one_refusal_and_its_plan_loads(tmp_path):
    torch.manual_seed(0)
    untied = _stack()
    path = tmp_path / "untied.safetensors"
    st.save_file(untied.state_dict(), str(path))
    m = _stack()
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(m)
    with pytest.raises(tying.TieError, match=r"and 3 more tied slot\(s\) whose ends differ") as e:
        tying.load(m, path, verify_hash=False)
    plan = re.search(r"(tying\.Plan\(\[.*?\]\))\.apply\(model\)", str(e.value)).group(1)
    for slot in ("layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias"):
        assert f"tying.free({slot!r})" in plan
    eval(plan, {"tying": tying}).apply(m)  # the advice, followed once
    tying.load(m, path, verify_hash=False)
    for k, v in untied.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_a_stack_split_by_the_device_map_names_the_entry_and_the_advice_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    import tying.hf
    from tests.interop import models as M

    model = M.gpt2()
    M.GPT2_PLAN.apply(model)
    x = torch.arange(8)[None]
    with torch.no_grad():
        ref = model(x).logits
    tying.hf.save_pretrained(model, tmp_path / "m")
    split = {
        "transformer.wte": "cpu",
        "transformer.wpe": "cpu",
        "transformer.h.0": "cpu",
        "transformer.h.1": "disk",
        "transformer.h.2": "disk",
        "transformer.ln_f": "cpu",
        "lm_head": "cpu",
    }

    def load(device_map):
        return tying.hf.from_pretrained(
            transformers.GPT2LMHeadModel,
            tmp_path / "m",
            device_map=device_map,
            offload_folder=tmp_path / "off",
        )

    with pytest.raises(
        tying.TieError,
        match=r"device_map offloads 'transformer.h.1' \('disk'\), which holds .*"
        r"pass device_map with 'transformer.h.1': 'cpu', 'transformer.h.2': 'cpu'",
    ):
        load(split)  # was: "... is on meta but its source ... is on cpu", no entry named
    again = load(dict(split, **{"transformer.h.1": "cpu", "transformer.h.2": "cpu"}))
    with torch.no_grad():
        assert torch.equal(again(x).logits, ref)


def _three_names():
    m = nn.ModuleDict({"e": nn.Embedding(5, 3), "h1": nn.Linear(3, 5), "h2": nn.Linear(3, 5)})
    m["h1"].weight = m["e"].weight
    m["h2"].weight = m["e"].weight
    return m


@pytest.mark.parametrize("agree", [True, False])
def test_a_hand_tie_stored_under_two_of_its_three_names_loads_when_they_agree(tmp_path, agree):
    torch.manual_seed(0)
    w = torch.randn(5, 3)
    sd = {k: v.clone() for k, v in _three_names().state_dict().items() if k != "e.weight"}
    sd["h1.weight"], sd["h2.weight"] = w.clone(), w.clone() if agree else w + 1.0
    path = tmp_path / "two_names.safetensors"  # T5: encoder.embed_tokens + lm_head, no shared
    st.save_file(sd, str(path))
    m = _three_names()
    before = m["e"].weight.detach().clone()
    if not agree:  # never a silent pick of one of two different values
        with pytest.raises(tying.TieError, match=r"stores it as its own tensor"):
            tying.load(m, path, verify_hash=False)
        assert torch.equal(m["e"].weight, before)
        return
    tying.load(m, path, verify_hash=False)  # was refused: "stores it as its own tensor"
    assert m["h1"].weight is m["e"].weight and m["h2"].weight is m["e"].weight
    assert torch.equal(m["e"].weight, w)
    assert torch.equal(m["h1"].bias, sd["h1.bias"]) and torch.equal(m["h2"].bias, sd["h2.bias"])
