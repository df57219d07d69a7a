"""Ties on modules that carry torch's own hooks before ``Plan.apply`` (stop 55).

Old-style ``torch.nn.utils.spectral_norm`` keeps the raw weight as ``weight_orig`` and a
load pre-hook that converts state dicts without version metadata from the pre-2018
layout. A Plan tie of ``weight_orig`` leaves that key out of the state dict (a tied slot
is not stored), and ``tying.load`` handed ``load_state_dict`` a plain dict without the
model's versions, so the hook took the file for the old layout and refused it in torch's
words ("Missing key(s) in state_dict: b.weight_orig, b.weight"): a tied GAN
discriminator saved by ``tying.save`` did not load back. The anchor is the same model
tied by hand (``b.weight_orig = a.weight``).
"""

import safetensors.torch as st
import torch
from torch import nn

import tying


def _model(seed):
    torch.manual_seed(seed)
    m = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    nn.utils.spectral_norm(m["b"])
    return m


def _out(m, x):
    m.eval()  # no power iteration: the output is a function of the loaded values
    return m["b"](m["a"](x))


X = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))


def test_a_plan_tied_spectral_norm_weight_round_trips_through_tying_save(tmp_path):
    saved = _model(1)
    tying.Plan([tying.share("b.weight_orig", like="a.weight")]).apply(saved)
    saved["b"](saved["a"](X))  # a training forward moves weight_u
    path = tying.save(saved, tmp_path / "d.safetensors")
    fresh = _model(2)
    tying.load(fresh, path)
    assert fresh["b"].weight_orig is fresh["a"].weight
    assert torch.equal(fresh["b"].weight_u, saved["b"].weight_u)
    assert torch.equal(_out(fresh, X), _out(saved, X))
    # still one tensor after a step
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    fresh.train()
    fresh["b"](fresh["a"](X)).sum().backward()
    opt.step()
    assert fresh["b"].weight_orig is fresh["a"].weight and tying.verify(fresh) == 1


def test_a_plain_file_of_the_hand_tied_anchor_loads_into_the_plan_tied_model(tmp_path):
    anchor = _model(1)
    anchor["b"].weight_orig = anchor["a"].weight  # tied by hand
    anchor["b"](anchor["a"](X))
    path = tmp_path / "anchor.safetensors"
    st.save_model(anchor, str(path))  # stores the shared tensor once
    m = _model(3)
    tying.Plan([tying.share("b.weight_orig", like="a.weight")]).apply(m)
    tying.load(m, path, verify_hash=False)
    assert torch.equal(m["a"].weight, anchor["a"].weight)
    assert torch.equal(_out(m, X), _out(anchor, X))
