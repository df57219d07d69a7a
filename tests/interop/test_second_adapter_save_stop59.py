"""A second adapter on a tied stack, saved and loaded alone (stop 59).

``pm.add_adapter`` on a model from :func:`tying.interop.lora.get_peft_model` lands in the
wrapper the first adapter already shares over a whole-module tie (peft lists one module
once), so in memory every tied use gets the new delta. But its config excluded only the
pairs no adapter wrapped yet: ``adapter_config.json`` did not mark the already-shared
paths as sharing, and loading that adapter alone on a fresh tied model
(``from_pretrained(..., subfolder=name)``) let peft wrap them apart; the load was refused
with an error about modules moved by ``nn.Sequential.insert`` (a legitimate round trip
refused, naming the wrong cause).
"""

from __future__ import annotations

import json

import pytest
import torch

import tying

peft = pytest.importorskip("peft", reason="the interop extra: pip install 'tying[interop]'")

from tying.interop import lora  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _tied():
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    )
    tying.Plan([tying.share("2", like="0")]).apply(m)  # 2 is 0's weights, tied whole
    return m


def _perturb(pm, name: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in pm.named_parameters():
            if "lora_B" in key and f".{name}." in key:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("second", [["0", "2", "3"], ["0", "2"]])
def test_a_second_adapter_on_an_already_shared_pair_loads_alone_with_the_same_outputs(
    tmp_path, second
):
    pm = lora.get_peft_model(_tied(), peft.LoraConfig(r=2, target_modules=["0", "2"]))
    _perturb(pm, "default", 1)
    # the user's own exclusion: the saved config then excludes something (no fallback)
    pm.add_adapter("b", peft.LoraConfig(r=2, target_modules=second, exclude_modules=["1"]))
    _perturb(pm, "b", 2)
    pm.set_adapter("b")
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = pm(x)
    pm.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    assert "2" in saved["exclude_modules"]  # marked as sharing 0's adapter

    again = lora.from_pretrained(_tied(), tmp_path, subfolder="b", adapter_name="b")
    model = again.base_model.model
    assert model[2] is model[0] and tying.verify(again) > 0
    with torch.no_grad():
        assert torch.equal(again(x), want)
