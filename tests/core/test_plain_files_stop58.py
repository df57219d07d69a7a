"""``tying.load`` of files other tools wrote: both ends of a tie stored (an untied model's
``safetensors.torch.save_file``), and transformers' sharded folders.

A file holding both ends with values the tie gives back exactly loads, as
``load_state_dict`` loads it into the same model (it was refused, "the saved model did not
tie it"); ends that differ are refused with the difference (never a silent pick of one).
A sharded folder (``model.safetensors.index.json``) is read as one file (the folder was
refused with advice naming a ``model.safetensors`` that was not there).
"""

import json

import pytest
import safetensors.torch as st
import torch
from torch import nn

import tying


def _model():
    return nn.ModuleDict(
        {"embed": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False), "mid": nn.Linear(3, 3)}
    )


def _plan_tied():
    m = _model()
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    return m


def _hand_tied():
    m = _model()
    m["head"].weight = m["embed"].weight
    return m


def _ae(tied):
    m = nn.ModuleDict({"enc": nn.Linear(4, 3, bias=False), "dec": nn.Linear(3, 4, bias=False)})
    if tied:
        tying.Plan(
            [tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]
        ).apply(m)
    return m


def _untied_file(tmp_path, agree):
    torch.manual_seed(0)
    u = _model()
    if agree:
        u["head"].weight.data.copy_(u["embed"].weight.data)
    path = tmp_path / "untied.safetensors"
    st.save_file(u.state_dict(), str(path))
    return u, path


@pytest.mark.parametrize("build", [_plan_tied, _hand_tied], ids=["plan", "hand"])
def test_a_file_whose_tie_ends_agree_loads_as_load_state_dict_does(tmp_path, build):
    u, path = _untied_file(tmp_path, agree=True)
    anchor = build()
    anchor.load_state_dict(st.load_file(str(path)))
    m = build()
    tying.load(m, path, verify_hash=False)  # refused before: "stores it as its own tensor"
    assert m["head"].weight is m["embed"].weight or tying.verify(m) == 1
    for k, v in anchor.state_dict().items():
        assert torch.equal(m.state_dict()[k], v)
    assert torch.equal(m["head"].weight, u["head"].weight)
    m["head"](m["embed"](torch.tensor([1, 2]))).sum().backward()
    with torch.no_grad():  # an SGD step by hand (torch.optim's first step imports dynamo: 4 s)
        for p in (m["embed"].weight, m["head"].weight):
            p -= 0.1 * p.grad
    assert torch.equal(m["head"].weight, m["embed"].weight)  # still one tensor


def test_a_transposed_tie_loads_a_file_holding_both_ends_that_agree(tmp_path):
    torch.manual_seed(0)
    plain = _ae(tied=False)
    plain["dec"].weight.data.copy_(plain["enc"].weight.data.T)
    path = tmp_path / "ae.safetensors"
    st.save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(path))
    m = _ae(tied=True)
    tying.load(m, path, verify_hash=False)
    assert torch.equal(m["dec"].weight, plain["dec"].weight)
    assert torch.equal(m["enc"].weight, plain["enc"].weight)


@pytest.mark.parametrize("build", [_plan_tied, _hand_tied], ids=["plan", "hand"])
def test_tie_ends_that_differ_are_refused_with_the_difference_and_the_advice_works(tmp_path, build):
    u, path = _untied_file(tmp_path, agree=False)
    gap = (u["head"].weight - u["embed"].weight).abs().max().item()
    m = build()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=rf"head.weight is tied in this model \(to embed.weight\) but .* differs from the "
        rf"one the tie gives from the file's embed.weight \(largest difference {gap:.4g}\).*"
        r"tying.Plan\(\[tying.free\('head.weight'\)\]\).apply\(model\), then load",
    ):
        tying.load(m, path, verify_hash=False)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in before.items())
    tying.Plan([tying.free("head.weight")]).apply(m)  # the advice, followed
    tying.load(m, path, verify_hash=False)
    assert torch.equal(m["head"].weight, u["head"].weight)
    assert torch.equal(m["embed"].weight, u["embed"].weight)


def _sharded(tmp_path):
    torch.manual_seed(0)
    u = _model()
    sd = u.state_dict()
    folder = tmp_path / "sharded"
    folder.mkdir()
    shards = {"model-00001-of-00002.safetensors": ["embed.weight"]}
    shards["model-00002-of-00002.safetensors"] = ["head.weight", "mid.weight", "mid.bias"]
    for name, keys in shards.items():
        st.save_file({k: sd[k] for k in keys}, str(folder / name), metadata={"format": "pt"})
    weight_map = {k: name for name, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return u, folder


@pytest.mark.parametrize("which", ["folder", "index"])
def test_a_sharded_checkpoint_loads_as_one_file(tmp_path, which):
    u, folder = _sharded(tmp_path)
    path = folder if which == "folder" else folder / "model.safetensors.index.json"
    m = _model()
    tying.load(m, path, verify_hash=False)  # IsADirectoryError / "truncated" before
    for k, v in u.state_dict().items():
        assert torch.equal(m.state_dict()[k], v)


def test_one_shard_names_the_folder_and_the_advice_works(tmp_path):
    u, folder = _sharded(tmp_path)
    m = _model()
    with pytest.raises(tying.TieError, match=r"one of the 2 shards model.safetensors.index.json"):
        tying.load(m, folder / "model-00001-of-00002.safetensors", verify_hash=False)
    tying.load(m, str(folder), verify_hash=False)
    assert torch.equal(m["mid"].weight, u["mid"].weight)


def test_a_shard_the_index_names_but_the_folder_lacks_is_refused(tmp_path):
    _, folder = _sharded(tmp_path)
    (folder / "model-00002-of-00002.safetensors").unlink()
    m = _model()
    before = m["embed"].weight.clone()
    with pytest.raises(tying.TieError, match=r"names the shard 'model-00002-of-00002.safetensors'"):
        tying.load(m, folder, verify_hash=False)
    assert torch.equal(m["embed"].weight, before)


def test_a_folder_without_model_safetensors_names_a_file_that_is_there(tmp_path):
    st.save_file({"x": torch.zeros(1)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(IsADirectoryError, match=r"e.g. '.*weights.safetensors'"):
        tying.load(_model(), tmp_path)
    with pytest.raises(IsADirectoryError, match=r"holds no .safetensors file"):
        tying.load(_model(), tmp_path / "..")


def _other_end_file(tmp_path):
    """A plain file keeping head.weight of the tie and leaving embed.weight out."""
    torch.manual_seed(0)
    sd = {k: v for k, v in _model().state_dict().items() if k != "embed.weight"}
    path = tmp_path / "other_end.safetensors"
    st.save_file(sd, str(path))
    return sd, path


def test_a_hand_tie_loads_a_file_that_keeps_either_of_its_names(tmp_path):
    sd, path = _other_end_file(tmp_path)
    m = _hand_tied()
    tying.load(m, path, verify_hash=False)  # refused before: "stores it as its own tensor"
    assert m["head"].weight is m["embed"].weight
    assert torch.equal(m["embed"].weight, sd["head.weight"])


def test_a_plan_tie_given_its_other_end_names_the_tie_that_loads_it(tmp_path):
    sd, path = _other_end_file(tmp_path)
    m = _plan_tied()
    before = m["embed"].weight.clone()
    with pytest.raises(
        tying.TieError,
        match=r"stores head.weight and has no entry for embed.weight: it keeps the tie's "
        r"other end .*tying.Plan\(\[tying.free\('head.weight'\), "
        r"tying.share\('embed.weight', like='head.weight'\)\]\).apply\(model\), then load",
    ):
        tying.load(m, path, verify_hash=False)
    assert torch.equal(m["embed"].weight, before)
    tying.Plan([tying.free("head.weight"), tying.share("embed.weight", like="head.weight")]).apply(
        m
    )  # the advice, followed
    tying.load(m, path, verify_hash=False)
    assert torch.equal(m["embed"].weight, sd["head.weight"]) and tying.verify(m) == 1
