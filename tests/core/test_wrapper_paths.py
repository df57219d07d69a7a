"""Ties and files across wrappers that insert a path segment (stop 36): activation
checkpointing's ``_checkpoint_wrapped_module``, ``torch.compile``'s ``_orig_mod``."""

import pytest
import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    apply_activation_checkpointing,
)

import tying
from tying.core.outside import canonical


def _model(relation=None, tie=True, seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    if tie:
        kw = {} if relation is None else {"relation": relation}
        tying.Plan([tying.share("2.weight", like="0.weight", **kw)]).apply(m)
    return m


def _checkpointed(m):
    apply_activation_checkpointing(m, check_fn=lambda mod: isinstance(mod, nn.Linear))
    return m


def _values(m):
    return {canonical(k): v.detach().clone() for k, v in m.state_dict().items()}


# torch.compile's first use imports torch.utils.mkldnn, which warns about torch.jit
COMPILE_IMPORT = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script.*` is deprecated:DeprecationWarning"
)
RELATIONS = [None, tying.Transposed(), tying.Scaled(2.0)]


@pytest.mark.parametrize("relation", RELATIONS)
def test_tie_declared_before_checkpoint_wrapping_verifies_and_trains(relation):
    m = _checkpointed(_model(relation))
    assert tying.verify(m) == 1  # was: "2.weight: no such parameter any more"
    x = torch.randn(3, 4)
    m(x).sum().backward()  # was refused: "'0' ... was replaced in the model"
    src = m[0]._checkpoint_wrapped_module.weight
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    if relation is None:
        want = src
    elif isinstance(relation, tying.Scaled):
        want = src * m[2]._checkpoint_wrapped_module.weight_scale
    else:
        want = src.T
    assert torch.equal(m[2]._checkpoint_wrapped_module.weight, want)
    assert tying.verify(m) == 1


def test_verify_after_checkpoint_wrapping_still_finds_a_broken_tie():
    m = _checkpointed(_model())
    m[2]._checkpoint_wrapped_module = nn.Linear(4, 4)
    with pytest.raises(
        tying.TieError, match=r"2\._checkpoint_wrapped_module\.weight: is an independent"
    ):
        tying.verify(m)


@COMPILE_IMPORT
@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("wrap", ["checkpoint", "compile"])
def test_file_saved_wrapped_loads_into_bare_and_back(tmp_path, relation, wrap):
    def wrapped(m):
        return _checkpointed(m) if wrap == "checkpoint" else torch.compile(m, backend="aot_eager")

    src = _model(relation)
    path = tying.save(wrapped(src), tmp_path / "w.safetensors")
    bare = _model(relation, tie=False, seed=1)
    tying.load(bare, path)  # was: "pattern '2._checkpoint_wrapped_module.weight' matches no ..."
    assert _values(bare).keys() == _values(src).keys()
    assert all(torch.equal(v, _values(src)[k]) for k, v in _values(bare).items())
    assert tying.verify(bare) == 1 and tying.ties(bare)[0].relation == tying.ties(src)[0].relation
    if relation is None:
        assert bare[2].weight is bare[0].weight

    back = tying.save(bare, tmp_path / "b.safetensors")
    inner = _model(relation, tie=False, seed=2)
    target = wrapped(inner)
    tying.load(target, back)
    assert all(torch.equal(v, _values(src)[k]) for k, v in _values(inner).items())
    assert tying.verify(target) == 1
    assert tying.verify(inner) == 1  # compile: declared on the wrapper, found from inside


def test_checkpoint_wrapped_model_loads_its_own_file_untied(tmp_path):
    m = _checkpointed(_model(tying.Scaled(2.0)))
    path = tying.save(m, tmp_path / "w.safetensors")
    fresh = _checkpointed(_model(tying.Scaled(2.0), tie=False, seed=3))
    tying.load(fresh, path)  # was: "missing in file: 2._checkpoint_wrapped_module.weight_scale"
    assert all(torch.equal(v, _values(m)[k]) for k, v in _values(fresh).items())
    assert tying.verify(fresh) == 1


def test_paths_equal_but_for_a_wrapper_segment_are_refused_by_name(tmp_path):
    m = nn.ModuleDict({"a": nn.Linear(2, 2), "_orig_mod": nn.ModuleDict({"a": nn.Linear(2, 2)})})
    with pytest.raises(tying.TieError, match=r"a\.weight and _orig_mod\.a\.weight name the same"):
        tying.save(m, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_verify_of_a_part_checks_ties_declared_on_its_parent():
    outer = nn.ModuleDict(
        {"x": nn.Linear(4, 4), "part": nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})}
    )
    tying.Plan(
        [
            tying.share("part.b.weight", like="part.a.weight"),
            tying.share("part.b.bias", like="part.a.bias", relation=tying.Scaled(2.0)),
        ]
    ).apply(outer)
    assert tying.verify(outer["part"]) == 2  # was 0
    outer["part"]["a"] = nn.Linear(4, 4)  # the source swapped out: broken, not 0
    with pytest.raises(tying.TieError, match=r"b\.weight: is not the same tensor|replaced"):
        tying.verify(outer["part"])


@COMPILE_IMPORT
def test_verify_of_the_inner_model_after_a_load_through_compile(tmp_path):
    path = tying.save(_model(tying.Transposed()), tmp_path / "m.safetensors")
    inner = _model(tie=False, seed=4)
    tying.load(torch.compile(inner, backend="aot_eager"), path)
    assert [t.target for t in tying.ties(inner)] == ["2.weight"]
    assert tying.verify(inner) == 1  # was 0
