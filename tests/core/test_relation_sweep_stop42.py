"""Stop 42: every relation ``tying`` exports, crossed with what a user does to a tied model.

Each relation of ``tying.__all__`` (a guard fails when a new one is not in ``CASES``) is
checked against plain PyTorch doing the same thing by hand: ``functional_call`` with a
parameter dict, ``parameters_to_vector``/``vector_to_parameters``, ``clip_grad_norm_``,
``AveragedModel`` (EMA), ``load_state_dict`` (``strict=False``, ``assign=True``),
``state_dict(keep_vars=True)``, ``untie``/``free`` then save and load, and dtype casts then
``tying.save``/``tying.load``.

The defect found: ``tying.untie``, ``tying.free`` and a self re-parametrisation
(``share("w", relation=Transposed())``) gave a ``Transposed``/``Rotated`` slot a parameter
with the transposed strides of the view it was copied from. ``parameters_to_vector`` then
raised "view size is not compatible", ``safetensors.torch.save_file(model.state_dict())``
refused, and the untied model's outputs differed in the last bits from the same model built
untied. Now the copy is contiguous, as in a model built untied (``channels_last`` kept),
and a ``Rotated`` slot is served contiguous, so that untying changes no output bit.

A second defect of the same operations: the untied parameter was registered after the
module's other parameters (``b.bias`` before ``b.weight``), so ``parameters()`` and a flat
vector ran in another order than the model built untied, and ``vector_to_parameters`` with
that model's vector filled the wrong tensors without an error. Now it goes back to its place.
"""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parameters_to_vector, prune, vector_to_parameters

import tying

F64 = torch.float64

# relation -> (source Linear (in, out), source tensor, target Linear (in, out), the relation)
CASES = {
    "Same": ((6, 4), "weight", (6, 4), tying.Same()),
    "Transposed": ((4, 6), "weight", (6, 4), tying.Transposed()),
    "Rotated": ((4, 6), "weight", (6, 4), tying.Rotated()),
    "Flipped": ((6, 4), "weight", (6, 4), tying.Flipped(dims=(0, 1))),
    "Mirrored": ((3, 4), "weight", (6, 4), tying.Mirrored()),
    "Scaled": ((6, 4), "weight", (6, 4), tying.Scaled(init=-1.5)),
    "Hashed": ((1, 8), "bias", (6, 4), tying.Hashed(buckets=8, seed=3)),
}


def _exported_relations() -> set[str]:
    return {
        name
        for name in tying.__all__
        if inspect.isclass(getattr(tying, name))
        and issubclass(getattr(tying, name), tying.Relation)
        and getattr(tying, name) is not tying.Relation
    }


def test_every_exported_relation_is_swept():
    """A relation added to ``tying`` without a case here fails this guard."""
    assert _exported_relations() == set(CASES)


class Net(nn.Module):
    """``b`` reads ``a``'s tensor through the relation; ``a`` also computes."""

    def __init__(self, name: str, dtype=F64, seed: int = 0):
        super().__init__()
        (ai, ao), _, (bi, bo), _ = CASES[name]
        g = torch.Generator().manual_seed(seed)
        self.a, self.b = nn.Linear(ai, ao, dtype=dtype), nn.Linear(bi, bo, dtype=dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64))

    def forward(self, x):  # (B, 6) -> (B, 4)
        return self.b(x)


def _tied(name: str, dtype=F64, seed: int = 0) -> Net:
    _, src, _, rel = CASES[name]
    net = Net(name, dtype, seed)
    tying.Plan([tying.share("b.weight", like=f"a.{src}", relation=rel)]).apply(net)
    return net


def _by_hand(name: str, net: Net, source: torch.Tensor, scale=None) -> torch.Tensor:
    """``b.weight`` computed by plain torch from ``source`` (the tie's physical tensor)."""
    _, _, (bi, bo), rel = CASES[name]
    if name != "Scaled":
        return rel(source, shape=(bo, bi))
    return rel(source, shape=(bo, bi), scale=net.b.weight_scale if scale is None else scale)


def _x(dtype=F64, n: int = 5) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(7), dtype=F64).to(dtype)


def _plain_twin(net: Net, name: str) -> Net:
    """The same model built untied, holding ``net``'s current values (the anchor)."""
    twin = Net(name, dtype=net.a.weight.dtype, seed=99)
    with torch.no_grad():
        for k, p in twin.named_parameters():
            p.copy_(net.get_parameter(k))
    return twin


@pytest.mark.parametrize("name", sorted(CASES))
def test_functional_call_reads_the_dicts_source_value(name):
    net = _tied(name)
    _, src, _, _ = CASES[name]
    g = torch.Generator().manual_seed(3)
    new = torch.randn(getattr(net.a, src).shape, generator=g, dtype=F64, requires_grad=True)
    x = _x()
    got = torch.func.functional_call(net, {f"a.{src}": new}, (x,))
    want = x @ _by_hand(name, net, new).T + net.b.bias
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(got.sum(), new)
    (want_grad,) = torch.autograd.grad(want.sum(), new)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=1e-12)
    assert not torch.equal(net(x), got)  # the model's own tensor was not touched


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_flat_vector_round_trip_keeps_the_tie(name):
    net = _tied(name)
    params = list(net.parameters())
    vec = parameters_to_vector(params)
    assert vec.numel() == tying.count(net).physical == sum(p.numel() for p in params)
    new = torch.randn(vec.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    vector_to_parameters(new, net.parameters())
    assert torch.equal(parameters_to_vector(net.parameters()), new)
    _, src, _, _ = CASES[name]
    assert torch.equal(net.b.weight, _by_hand(name, net, getattr(net.a, src)))
    assert tying.verify(net) == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_clip_grad_norm_counts_each_physical_tensor_once(name):
    net = _tied(name)
    _, src, _, _ = CASES[name]
    x = _x()
    (net(x).square().sum() + net.a(torch.ones(1, net.a.in_features, dtype=F64)).sum()).backward()
    # the anchor: the same loss in plain torch over the physical leaves, each once
    leaves = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    w = _by_hand(name, net, leaves[f"a.{src}"], scale=leaves.get("b.weight_scale"))
    a_out = torch.ones(1, net.a.in_features, dtype=F64) @ leaves["a.weight"].T + leaves["a.bias"]
    ((x @ w.T + leaves["b.bias"]).square().sum() + a_out.sum()).backward()
    want = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in leaves.values()]))
    total = nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.5)
    torch.testing.assert_close(total, want, rtol=1e-12, atol=0)
    got_after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))
    torch.testing.assert_close(got_after, torch.tensor(0.5, dtype=F64), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_ema_copy_ties_its_own_average(name):
    net = _tied(name)
    ema = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)
    )
    want = {n: p.detach().clone() for n, p in net.named_parameters()}
    ema.update_parameters(net)
    for step in range(2):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(step + 1.0)
        ema.update_parameters(net)
        want = {n: 0.9 * want[n] + 0.1 * p.detach() for n, p in net.named_parameters()}
    got = dict(ema.module.named_parameters())
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-12)
    _, src, _, _ = CASES[name]
    avg = ema.module
    assert torch.equal(avg.b.weight, _by_hand(name, avg, getattr(avg.a, src)))
    assert tying.verify(avg) == 1 and tying.verify(net) == 1


@pytest.mark.parametrize("assign", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_load_state_dict_non_strict_and_assign_keep_the_tie(name, assign):
    net = _tied(name)
    _, src, _, _ = CASES[name]
    sd = {k: v + 1.0 for k, v in net.state_dict().items()}
    result = net.load_state_dict(sd, assign=assign)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in sd.items():
        assert torch.equal(net.get_parameter(k), v)
    assert torch.equal(net.b.weight, _by_hand(name, net, getattr(net.a, src)))
    only = {f"a.{src}": getattr(net.a, src).detach() * 2}
    result = net.load_state_dict(only, strict=False, assign=assign)
    assert f"a.{src}" not in result.missing_keys and "b.weight" not in result.missing_keys
    assert torch.equal(getattr(net.a, src), only[f"a.{src}"])
    assert torch.equal(net.b.weight, _by_hand(name, net, only[f"a.{src}"]))
    assert all(isinstance(p, nn.Parameter) for p in net.parameters()) and tying.verify(net) == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_keep_vars_holds_each_physical_parameter_once(name):
    net = _tied(name)
    sd = net.state_dict(keep_vars=True)
    params = dict(net.named_parameters())
    assert sd.keys() == params.keys() and "b.weight" not in sd
    assert all(sd[k] is params[k] for k in sd)


@pytest.mark.parametrize("how", ["untie", "free"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_an_untied_model_is_the_model_built_untied(name, how, tmp_path):
    """After untie/free every parameter is contiguous, flat-vector tools and safetensors take
    it, and its outputs equal bit for bit those of the same model built untied."""
    net = _tied(name)
    x = _x()
    before = net(x)
    if how == "untie":
        assert tying.untie(net) == 1
    else:
        _, src, _, rel = CASES[name]
        rules = [tying.share("b.weight", like=f"a.{src}", relation=rel), tying.free("b.weight")]
        tying.Plan(rules).apply(net)
    assert all(p.is_contiguous() for p in net.parameters()), [
        (n, p.stride()) for n, p in net.named_parameters() if not p.is_contiguous()
    ]
    twin = _plain_twin(net, name)
    assert torch.equal(net(x), twin(x))
    torch.testing.assert_close(net(x), before, rtol=1e-12, atol=1e-12)
    vec = parameters_to_vector(net.parameters())
    assert torch.equal(vec, parameters_to_vector(twin.parameters()))
    safetensors.torch.save_file(net.state_dict(), tmp_path / "plain.safetensors")
    tying.save(net, tmp_path / "m.safetensors")
    fresh = Net(name, seed=5)
    tying.load(fresh, tmp_path / "m.safetensors")
    assert torch.equal(fresh(x), twin(x))
    plain = safetensors.torch.load_file(tmp_path / "plain.safetensors")
    assert plain.keys() == net.state_dict().keys()
    assert all(torch.equal(plain[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("name", ["Transposed", "Rotated"])
def test_untie_keeps_the_outputs_bit_identical_for_a_rotated_or_transposed_linear(name):
    """What a user sees of the contiguous copy: the parameter values are bit-identical to
    the tied slot's; a Rotated slot is served contiguous, so outputs do not move either."""
    net = _tied(name, dtype=torch.float32)
    x = _x(torch.float32, n=9)
    before, value = net(x), net.b.weight.detach().clone()
    tying.untie(net)
    assert torch.equal(net.b.weight, value)
    if name == "Rotated":
        assert torch.equal(net(x), before)
    else:  # a view was read: another matmul path, rounding only
        torch.testing.assert_close(net(x), before, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["Transposed", "Rotated", "Flipped"])
def test_a_self_reparametrised_slot_stores_a_contiguous_physical_tensor(name):
    _, _, (bi, bo), rel = CASES[name]
    net = nn.Linear(bi, bo, dtype=F64)
    value = net.weight.detach().clone()
    tying.Plan([tying.share("weight", relation=rel)]).apply(net)
    assert net.weight_physical.is_contiguous(), net.weight_physical.stride()
    assert torch.equal(net.weight, value)
    vec = parameters_to_vector(net.parameters())
    vector_to_parameters(vec * 2, net.parameters())
    assert torch.equal(net.weight, value * 2)


@pytest.mark.parametrize("cast", ["double", "float", "half", "bfloat16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_cast_model_saves_and_loads_with_the_tie(name, cast, tmp_path):
    net = getattr(_tied(name, dtype=torch.float32), cast)()
    x = _x(net.a.weight.dtype)
    y = net(x)
    tying.save(net, tmp_path / "m.safetensors")
    other = getattr(_tied(name, dtype=torch.float32, seed=8), cast)()
    tying.load(other, tmp_path / "m.safetensors")
    assert other.a.weight.dtype == net.a.weight.dtype
    assert torch.equal(other(x), y) and tying.verify(other) == 1


@settings(derandomize=True, deadline=None, max_examples=24)
@given(
    name=st.sampled_from(sorted(CASES)),
    how=st.sampled_from(["untie", "free", "deepcopy then untie"]),
    dims=st.sampled_from([(0, 1), (1, 0), (-1, -2), (-2, -1)]),
    k=st.integers(-5, 5),
)
def test_property_untied_parameters_are_those_of_a_model_built_untied(name, how, dims, k):
    """Guards the kind (an untied copy keeping a view's layout), for every relation and
    relation argument: every parameter is contiguous, and the outputs, the flat vector and
    the state dict equal those of the model built untied from the same values."""
    (ai, ao), src, (bi, bo), rel = CASES[name]
    if name == "Transposed":
        rel = tying.Transposed(dims=dims)
    elif name == "Rotated":
        rel = tying.Rotated(k=k, dims=dims)
        if k % 2 == 0:
            ai, ao = bi, bo
    net = Net(name, seed=abs(k))
    if (ai, ao) != CASES[name][0]:
        net.a = nn.Linear(ai, ao, dtype=F64)
    tying.Plan([tying.share("b.weight", like=f"a.{src}", relation=rel)]).apply(net)
    if how == "deepcopy then untie":
        net = copy.deepcopy(net)
    if how == "free":
        tying.Plan([tying.share("b.weight", like=f"a.{src}", relation=rel)]).apply(net)
        tying.Plan([tying.free("b.weight")]).apply(net)
    else:
        tying.untie(net)
    assert all(p.is_contiguous() for p in net.parameters())
    twin = Net(name, seed=1)
    if (ai, ao) != CASES[name][0]:
        twin.a = nn.Linear(ai, ao, dtype=F64)
    twin.load_state_dict(net.state_dict())
    x = _x()
    assert torch.equal(net(x), twin(x))
    assert torch.equal(
        parameters_to_vector(net.parameters()), parameters_to_vector(twin.parameters())
    )


@pytest.mark.parametrize("how", ["untie", "free", "pickled, then untie", "re-tied, then untie"])
def test_an_untied_parameter_goes_back_to_its_place_so_a_flat_vector_fills_the_right_tensors(
    how,
):
    """Before, the untied ``b.weight`` was registered after ``b.bias``: a vector from the
    model built untied, put back with ``vector_to_parameters`` (it checks the length only),
    filled ``b.bias`` with weight entries and raised nothing."""
    net = _tied("Flipped")
    if how == "pickled, then untie":
        net = pickle.loads(pickle.dumps(net))
    if how == "re-tied, then untie":  # the second tie keeps the first one's record
        rule = tying.share("b.weight", like="a.weight", relation=tying.Scaled(init=2.0))
        tying.Plan([rule]).apply(net)
    if how == "free":
        tying.Plan([tying.free("b.weight")]).apply(net)
    else:
        tying.untie(net)
    assert [n for n, _ in net.named_parameters()] == ["a.weight", "a.bias", "b.weight", "b.bias"]
    built = Net("Flipped", seed=11)
    vector_to_parameters(parameters_to_vector(built.parameters()), net.parameters())
    for n, p in built.named_parameters():
        assert torch.equal(net.get_parameter(n), p), n
    assert list(net.state_dict()) == list(built.state_dict())


def test_a_channels_last_model_keeps_its_layout_through_untie():
    """The contiguous copy follows the model's own layout: a ``channels_last`` conv stays
    ``channels_last`` (as before), a row-major one row-major."""
    m = nn.ModuleDict({"a": nn.Conv2d(3, 3, 3), "b": nn.Conv2d(3, 3, 3)})
    m = m.to(memory_format=torch.channels_last)
    rel = tying.Flipped(dims=(-1,))
    tying.Plan([tying.share("b.weight", like="a.weight", relation=rel)]).apply(m)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    x = x.to(memory_format=torch.channels_last)
    before = m["b"](x)
    tying.untie(m)
    assert m["b"].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(m["b"](x), before)


@pytest.mark.parametrize("how", ["untie", "free"])
@pytest.mark.parametrize("name", sorted(set(CASES) - {"Same"}))
def test_a_self_reparametrised_slot_untied_is_the_layer_built_untied(name, how):
    _, _, (bi, bo), rel = CASES[name]
    layer = nn.Linear(bi, bo, dtype=F64)
    tying.Plan([tying.share("weight", relation=rel)]).apply(layer)
    value = layer.weight.detach().clone()
    if how == "untie":
        tying.untie(layer)
    else:
        tying.Plan([tying.free("weight")]).apply(layer)
    assert list(layer._parameters) == ["weight", "bias"]
    assert layer.weight.is_contiguous() and torch.equal(layer.weight, value)
    built = nn.Linear(bi, bo, dtype=F64)
    built.load_state_dict(layer.state_dict())
    assert torch.equal(
        parameters_to_vector(layer.parameters()), parameters_to_vector(built.parameters())
    )


def test_global_pruning_over_a_rotated_slot_is_refused_by_name_with_nothing_pruned():
    """A Rotated slot is served contiguous now, so torch's ``global_unstructured`` no longer
    fails on its own ("view size is not compatible", naming nothing) before tying's guard:
    the guard names the slot, its source and the fix, and nothing is pruned."""
    net = _tied("Rotated")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=r"'b\.weight' is a tied slot \(reads a\.weight via Rotated.*nothing was pruned.*"
        r"List the physical tensor \(a\.weight\) once",
    ):
        prune.global_unstructured(
            [(net.a, "weight"), (net.b, "weight")],
            prune.L1Unstructured,
            amount=0.3,
        )
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not prune.is_pruned(net) and tying.verify(net) == 1
