"""Stop 41 at the user boundary: reset_relations names every relation parameter on meta;
a load computes the storage an untied entry maps to once per slot.

``reset_relations`` on a model with several ``Scaled`` scales still on ``meta`` named only
the first it met, so a user who materialised part of the model fixed one name per run.
``_own_storage_from`` (an untied entry mapped to a self re-parametrised slot's storage by
the relation's ``right_inverse``) ran twice per slot and load: once for the contradiction
check and once for the load; now once, with the same results.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
import tying.core.slot_loads as slots_mod
from tying import TieError


def _scaled_stack(n: int, device: str = "meta") -> nn.ModuleList:
    """``n`` Linear layers, 1..n-1 tied to 0 through a Scaled relation (init i)."""
    with torch.device(device):
        net = nn.ModuleList([nn.Linear(3, 3) for _ in range(n)])
    rules = [
        tying.share(f"{i}.weight", like="0.weight", relation=tying.Scaled(init=float(i)))
        for i in range(1, n)
    ]
    tying.Plan(rules).apply(net)
    return net


def _scales(net: nn.ModuleList) -> dict[str, torch.Tensor]:
    return {
        f"{i}.weight_scale": m.weight_scale.detach().clone()
        for i, m in enumerate(net)
        if i and m.weight_scale.device.type != "meta"
    }


def test_reset_relations_names_every_scale_still_on_meta_and_writes_nothing():
    net = _scaled_stack(4)  # 1, 2, 3 tied; 1 materialised, 2 and 3 still on meta
    net[1].to_empty(device="cpu")
    with torch.no_grad():
        net[1].weight_scale.fill_(-7.0)
    with pytest.raises(
        TieError,
        match=r"2 relation parameters, 2\.weight_scale, 3\.weight_scale, are on the meta "
        r"device.*to_empty",
    ):
        tying.reset_relations(net)
    assert net[1].weight_scale.item() == -7.0  # checked first: nothing was written


def test_reset_relations_on_many_meta_scales_shows_five_and_counts_the_rest():
    net = _scaled_stack(9)  # 8 scales, all on meta
    with pytest.raises(TieError) as err:
        tying.reset_relations(net)
    msg = str(err.value)
    assert msg.startswith("reset_relations: 8 relation parameters, 1.weight_scale, ")
    assert "5.weight_scale (and 3 more), are on the meta device" in msg
    assert "6.weight_scale" not in msg


def _mirrored_conv(k: int, seed: int, dtype=torch.float32) -> nn.Conv1d:
    """A Conv1d whose weight is stored as its own half (``Mirrored``, no source)."""
    torch.manual_seed(seed)
    conv = nn.Conv1d(2, 3, k, dtype=dtype)
    tying.Plan([tying.share("weight", relation=tying.Mirrored())]).apply(conv)
    return conv


def _palindromic_anchor(k: int, seed: int, dtype=torch.float32) -> nn.Conv1d:
    torch.manual_seed(seed + 1)
    conv = nn.Conv1d(2, 3, k, dtype=dtype)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return conv


@pytest.fixture
def inverse_calls(monkeypatch):
    calls: list[str] = []
    real = slots_mod._own_storage_from

    def spy(state_dict, prefix, module, name, slot):
        calls.append(prefix + name)
        return real(state_dict, prefix, module, name, slot)

    monkeypatch.setattr(slots_mod, "_own_storage_from", spy)
    return calls


@pytest.mark.parametrize("nested", [False, True], ids=["root", "nested"])
def test_an_untied_entry_is_mapped_to_its_storage_once_per_load(inverse_calls, nested):
    anchor = _palindromic_anchor(5, seed=0)
    layer = _mirrored_conv(5, seed=0)
    model, sd = layer, anchor.state_dict()
    if nested:
        model = nn.Sequential(layer)
        sd = {f"0.{k}": v for k, v in sd.items()}
    model.load_state_dict(sd)
    assert inverse_calls == (["0.weight"] if nested else ["weight"])
    x = torch.randn(4, 2, 9)
    assert torch.equal(layer(x), anchor(x))  # the same result as before the change


def test_an_entry_the_tie_cannot_hold_is_still_refused_after_one_computation(inverse_calls):
    torch.manual_seed(3)
    anchor = nn.Conv1d(2, 3, 5)  # not palindromic
    layer = _mirrored_conv(5, seed=0)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(RuntimeError, match=re.escape("weight is tied (to its own storage via")):
        layer.load_state_dict(anchor.state_dict())
    assert inverse_calls == ["weight"]
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k


@settings(derandomize=True, deadline=None, max_examples=20)
@given(
    n=st.integers(2, 9),
    materialised=st.sets(st.integers(1, 8)),
)
def test_property_the_refusal_names_exactly_the_scales_on_meta(n, materialised):
    net = _scaled_stack(n)
    for i in sorted(materialised):
        if i < n:
            net[i].to_empty(device="cpu")
            with torch.no_grad():
                net[i].weight_scale.fill_(-1.0)
    on_meta = [f"{i}.weight_scale" for i in range(1, n) if i not in materialised]
    before = _scales(net)
    if not on_meta:  # everything a relation owns is materialised: all set to its init
        assert tying.reset_relations(net) == [f"{i}.weight_scale" for i in range(1, n)]
        assert all(net[i].weight_scale.item() == float(i) for i in range(1, n))
        return
    with pytest.raises(TieError) as err:
        tying.reset_relations(net)
    msg = str(err.value)
    named = re.findall(r"\b(\d+\.weight_scale)\b", msg)
    assert named == on_meta[:5]  # in module order, none that is materialised
    if len(on_meta) > 5:
        assert f"(and {len(on_meta) - 5} more)" in msg
    if len(on_meta) > 1:
        assert msg.startswith(f"reset_relations: {len(on_meta)} relation parameters, ")
    after = _scales(net)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


@settings(derandomize=True, deadline=None, max_examples=15)
@given(
    k=st.integers(1, 8),
    seed=st.integers(0, 500),
    depth=st.integers(0, 2),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_property_one_inverse_per_slot_and_the_anchor_value_loads(k, seed, depth, dtype):
    anchor = _palindromic_anchor(k, seed, dtype)
    layer = _mirrored_conv(k, seed, dtype)
    model, prefix = layer, ""
    for _ in range(depth):
        model, prefix = nn.Sequential(model), "0." + prefix
    calls: list[str] = []
    real = slots_mod._own_storage_from

    def spy(*args):
        calls.append(args[1] + args[3])
        return real(*args)

    slots_mod._own_storage_from = spy
    try:
        model.load_state_dict({prefix + n: v for n, v in anchor.state_dict().items()})
    finally:
        slots_mod._own_storage_from = real
    assert calls == [prefix + "weight"]
    assert torch.equal(layer.weight, anchor.weight)  # Mirrored gives the palindrome back
    assert torch.equal(layer.bias, anchor.bias)


# -- a NaN equals itself when a load or verify compares a tie's two ends -------------------
# A NaN equals nothing, itself included: an untied checkpoint of a diverged model (the head a
# copy of the embedding, NaN entries and all) was refused as "a different value" for the
# tie, though torch loads it into the untied model; verify called a pruned hand tie whose
# weight holds a NaN broken, though both uses read the same tensor through the same mask.

NAN = float("nan")


def _lm(tied: bool) -> nn.ModuleDict:
    torch.manual_seed(0)
    m = nn.ModuleDict({"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False)})
    if tied:
        tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    return m


def _untied_checkpoint(nan_at, head_differs_at=None) -> dict[str, torch.Tensor]:
    plain = _lm(tied=False)
    with torch.no_grad():
        for i, j in nan_at:
            plain["emb"].weight[i, j] = NAN
        plain["head"].weight.copy_(plain["emb"].weight)
        if head_differs_at is not None:
            plain["head"].weight[head_differs_at] += 1.0
    return plain.state_dict()


def test_an_untied_checkpoint_with_nan_loads_into_the_tie_as_torch_loads_it():
    sd = _untied_checkpoint([(0, 0), (3, 2)])
    anchor = _lm(tied=False)
    anchor.load_state_dict(sd)  # plain torch: loads
    model = _lm(tied=True)
    model.load_state_dict(sd)
    assert model["head"].weight is model["emb"].weight
    torch.testing.assert_close(model["emb"].weight, anchor["emb"].weight, equal_nan=True)
    torch.testing.assert_close(model["head"].weight, anchor["head"].weight, equal_nan=True)


def test_an_untied_checkpoint_with_nan_that_differs_elsewhere_is_still_refused():
    sd = _untied_checkpoint([(0, 0)], head_differs_at=(4, 1))
    model = _lm(tied=True)
    before = model["emb"].weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"head\.weight is tied \(to emb\.weight via Same"):
        model.load_state_dict(sd)
    assert torch.equal(model["emb"].weight, before)


def test_a_palindromic_kernel_with_nan_at_mirrored_places_loads_into_its_own_storage():
    anchor = _palindromic_anchor(5, seed=2)
    with torch.no_grad():
        anchor.weight[1, 0, 0] = anchor.weight[1, 0, 4] = NAN  # still a palindrome
    layer = _mirrored_conv(5, seed=2)
    layer.load_state_dict(anchor.state_dict())
    torch.testing.assert_close(layer.weight, anchor.weight, equal_nan=True, rtol=0, atol=0)
    with torch.no_grad():
        anchor.weight[1, 0, 4] = 0.5  # a NaN at one end only: no palindrome
    with pytest.raises(RuntimeError, match=r"weight is tied \(to its own storage via Mirrored"):
        _mirrored_conv(5, seed=2).load_state_dict(anchor.state_dict())


def _pruned_hand_tie(mask_b_differs: bool) -> nn.ModuleDict:
    import torch.nn.utils.prune as prune

    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)})
    m["b"].weight = m["a"].weight  # a hand tie
    with torch.no_grad():
        m["a"].weight[1, 1] = NAN  # a diverged weight
    mask = torch.ones(3, 3)
    mask[0, 0] = 0
    prune.custom_from_mask(m["a"], "weight", mask)
    other = mask.clone()
    if mask_b_differs:
        other[2, 2] = 0
    prune.custom_from_mask(m["b"], "weight", other)
    return m


def test_verify_of_a_pruned_hand_tie_holding_nan_passes_and_differing_masks_still_fail():
    assert tying.verify(_pruned_hand_tie(mask_b_differs=False)) == 1
    with pytest.raises(TieError, match=r"b\.weight: holds the same nn\.Parameter as a\.weight"):
        tying.verify(_pruned_hand_tie(mask_b_differs=True))


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    nan_at=st.sets(st.tuples(st.integers(0, 4), st.integers(0, 2)), max_size=4),
    change=st.sampled_from(["none", "value", "nan_moved", "nan_dropped"]),
    where=st.tuples(st.integers(0, 4), st.integers(0, 2)),
)
def test_property_a_load_is_accepted_exactly_when_numpy_calls_the_copy_equal(nan_at, change, where):
    sd = _untied_checkpoint(sorted(nan_at))
    head = sd["head.weight"].clone()
    if change == "value":
        head[where] = 7.0
    elif change == "nan_moved":
        head[where] = NAN
    elif change == "nan_dropped" and nan_at:
        head[sorted(nan_at)[0]] = 0.25
    sd["head.weight"] = head
    # the anchor: NumPy's equality with NaN equal to NaN
    equal = np.array_equal(sd["emb.weight"].numpy(), head.numpy(), equal_nan=True)
    model = _lm(tied=True)
    before = model["emb"].weight.detach().clone()
    if equal:
        model.load_state_dict(sd)
        torch.testing.assert_close(model["head"].weight, head, equal_nan=True, rtol=0, atol=0)
    else:
        with pytest.raises(RuntimeError, match="holds a different value"):
            model.load_state_dict(sd)
        assert torch.equal(model["emb"].weight, before)


# -- laplacian_penalty: a tensor lam must be a 0-d real number -----------------------------
# A Python True is refused as lam (stop 32), but torch.tensor(True) was taken as 1; a (1,)
# tensor made the penalty (1,)-shaped, not the documented scalar; a complex or longer one
# failed in torch's words, naming no argument.


@pytest.mark.parametrize(
    ("lam", "what"),
    [
        (torch.tensor(True), r"shape \(\) and dtype torch\.bool"),
        (torch.tensor([2.0]), r"shape \(1,\) and dtype torch\.float32"),
        (torch.tensor([2.0, 3.0]), r"shape \(2,\) and dtype torch\.float32"),
        (torch.tensor(1 + 0j), r"shape \(\) and dtype torch\.complex64"),
    ],
    ids=["bool", "one-element", "two-element", "complex"],
)
def test_a_tensor_lam_that_is_no_real_scalar_is_refused_by_name(lam, what):
    a, b = torch.zeros(3), torch.ones(3)
    with pytest.raises(TypeError, match=rf"lam must be a real number .*got a tensor of {what}"):
        tying.soft.laplacian_penalty([a, b], [(0, 1)], lam=lam)


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    lam=st.floats(0, 100, allow_nan=False),
    form=st.sampled_from(["float", "0-d float32", "0-d float64", "(1,)", "bool"]),
    seed=st.integers(0, 1000),
)
def test_property_the_penalty_is_a_scalar_equal_to_the_sum_or_lam_is_refused(lam, form, seed):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(4, generator=g, dtype=torch.float64) for _ in range(3)]
    edges = [(0, 1), (1, 2), (2, 0)]
    given_lam = {
        "float": lam,
        "0-d float32": torch.tensor(lam, dtype=torch.float32),
        "0-d float64": torch.tensor(lam, dtype=torch.float64),
        "(1,)": torch.tensor([lam]),
        "bool": torch.tensor(lam > 50),
    }[form]
    if form in ("(1,)", "bool"):
        with pytest.raises(TypeError, match="lam must be a real number"):
            tying.soft.laplacian_penalty(params, edges, lam=given_lam)
        return
    got = tying.soft.laplacian_penalty(params, edges, lam=given_lam)
    # brute force in NumPy: lam/2 * sum over edges of the squared distance
    x = [p.numpy() for p in params]
    want = float(given_lam) / 2 * sum(float(((x[i] - x[j]) ** 2).sum()) for i, j in edges)
    assert got.shape == ()
    assert got.item() == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_reset_relations_names_the_scale_whose_init_no_longer_fits_and_writes_nothing():
    # Scaled(init=1e5) fits float32; after model.half() (65504 at most) reset_relations
    # refused in the relation's words, naming no parameter
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3))
    rules = [
        tying.share("2.weight", like="0.weight", relation=tying.Scaled(init=2.0)),
        tying.share("1.weight", like="0.weight", relation=tying.Scaled(init=1e5)),
    ]
    tying.Plan(rules).apply(net)
    net.half()
    with torch.no_grad():
        net[2].weight_scale.fill_(-3.0)
    with pytest.raises(
        TieError,
        match=r"reset_relations: 1\.weight_scale: Scaled\(init=100000\.0\): init 100000 does "
        r"not fit torch\.float16.*nothing was written",
    ):
        tying.reset_relations(net)
    assert net[2].weight_scale.item() == -3.0
