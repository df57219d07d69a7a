"""Every relation: forward equals a hand-written equivalent, gradient reaches the
physical tensor, counts are exact, and the tie holds after an optimizer step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
from tying.core.relations import relation_from_spec

from .helpers import sgd_step

torch.manual_seed(0)


def _two(shape_a, shape_b):
    return nn.ParameterDict(
        {"a": nn.Parameter(torch.randn(*shape_a)), "b": nn.Parameter(torch.randn(*shape_b))}
    )


CASES = [
    # relation, source shape, target shape, hand-written logical value of b from a
    (tying.Same(), (3, 4), (3, 4), lambda a: a),
    (tying.Transposed(), (3, 4), (4, 3), lambda a: a.t()),
    (tying.Transposed(dims=(0, 1)), (2, 3, 5), (3, 2, 5), lambda a: a.permute(1, 0, 2)),
    (tying.Rotated(1), (2, 3, 3), (2, 3, 3), lambda a: torch.rot90(a, 1, (-2, -1))),
    (tying.Rotated(1), (3, 5), (5, 3), lambda a: torch.rot90(a, 1, (0, 1))),
    (tying.Rotated(2), (3, 5), (3, 5), lambda a: a.flip(0).flip(1)),
    (tying.Flipped((0,)), (4, 2), (4, 2), lambda a: a.flip(0)),
    (tying.Mirrored(), (2, 3), (2, 5), lambda a: torch.cat([a, a[:, :2].flip(1)], 1)),
    (tying.Mirrored(), (2, 3), (2, 6), lambda a: torch.cat([a, a.flip(1)], 1)),
    (tying.Hashed(7, seed=3), (7,), (4, 5), None),
    (tying.Hashed(7, seed=3, signed=False), (7,), (4, 5), None),
]


def _hashed_reference(rel, a, shape):
    idx, sign = rel.index_and_sign(torch.Size(shape).numel(), a.device)
    out = torch.stack([a[int(i)] for i in idx])
    if sign is not None:
        out = out * sign.to(out.dtype)
    return out.reshape(shape)


@pytest.mark.parametrize("rel,sa,sb,ref", CASES, ids=[repr(c[0]) + str(c[2]) for c in CASES])
def test_relation_forward_gradient_count(rel, sa, sb, ref):
    m = _two(sa, sb)
    tying.Plan([tying.share("b", like="a", relation=rel)]).apply(m)
    a = m["a"]
    want = _hashed_reference(rel, a, sb) if ref is None else ref(a)
    assert torch.equal(m["b"], want)
    assert [n for n, _ in m.named_parameters()] == ["a"]
    c = tying.count(m)
    assert (c.logical, c.physical) == (a.numel() + torch.Size(sb).numel(), a.numel())
    # gradient of a loss on b lands on a, equal to the chain rule done by hand
    w = torch.randn(sb)
    (m["b"] * w).sum().backward()
    a2 = a.detach().clone().requires_grad_()
    want2 = _hashed_reference(rel, a2, sb) if ref is None else ref(a2)
    (want2 * w).sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)
    # the tie holds after an optimizer step
    sgd_step(m, (m["b"] ** 2).sum() + (m["a"] ** 2).sum())
    want = _hashed_reference(rel, m["a"], sb) if ref is None else ref(m["a"])
    assert torch.equal(m["b"], want)


def test_scaled_learns_its_own_scalar():
    m = _two((3,), (3,))
    tying.Plan([tying.share("b", like="a", relation=tying.Scaled(init=2.0))]).apply(m)
    assert torch.equal(m["b"], 2.0 * m["a"])
    names = sorted(n for n, _ in m.named_parameters())
    assert names == ["a", "b_scale"]
    assert tying.count(m).physical == 4
    sgd_step(m, (m["b"] - 1).pow(2).sum())
    assert m.b_scale.item() != 2.0
    assert torch.allclose(m["b"], m.b_scale * m["a"])


@pytest.mark.parametrize(
    "rel,shape,stored",
    [
        (tying.Mirrored(), (4, 7), 16),
        (tying.Hashed(5), (6, 6), 5),
        (tying.Transposed(), (3, 5), 15),
    ],
)
def test_self_reparametrisation_stores_the_smaller_tensor(rel, shape, stored):
    lin = nn.ParameterDict({"w": nn.Parameter(torch.randn(*shape))})
    tying.Plan([tying.share("w", relation=rel)]).apply(lin)
    assert tying.count(lin).physical == stored
    assert lin["w"].shape == shape
    (phys,) = [p for _, p in lin.named_parameters()]
    torch.testing.assert_close(lin["w"], rel(phys, shape=shape))


def test_mirrored_self_tie_keeps_a_palindrome_close_to_the_old_weights():
    w = torch.tensor([[1.0, 2.0, 3.0, 2.5, 1.5]])
    m = nn.ParameterDict({"w": nn.Parameter(w.clone())})
    tying.Plan([tying.share("w", relation=tying.Mirrored())]).apply(m)
    assert torch.allclose(m["w"], torch.tensor([[1.25, 2.25, 3.0, 2.25, 1.25]]))
    assert torch.equal(m["w"], m["w"].flip(-1))


def test_hashed_memory_is_buckets_only_and_collisions_share_values():
    m = nn.ParameterDict({"w": nn.Parameter(torch.randn(40, 50))})
    tying.Plan([tying.share("w", relation=tying.Hashed(64, signed=False))]).apply(m)
    assert tying.count(m).physical == 64
    assert len(torch.unique(m["w"].detach())) <= 64


def test_hash_is_deterministic_per_seed_and_differs_across_seeds():
    i1, _ = tying.Hashed(97, seed=1).index_and_sign(1000, "cpu")
    i1b, _ = tying.Hashed(97, seed=1).index_and_sign(1000, "cpu")
    i2, _ = tying.Hashed(97, seed=2).index_and_sign(1000, "cpu")
    assert torch.equal(i1, i1b) and not torch.equal(i1, i2)
    counts = torch.bincount(i1, minlength=97).float()
    assert counts.min() > 0 and counts.max() < 3 * counts.mean()  # roughly uniform


@pytest.mark.parametrize(
    "rel",
    [
        tying.Same(),
        tying.Transposed((1, 2)),
        tying.Rotated(3, (0, 2)),
        tying.Flipped((0, 1)),
        tying.Mirrored(0),
        tying.Scaled(0.5),
        tying.Hashed(9, seed=4, signed=False),
    ],
)
def test_spec_round_trip(rel):
    assert relation_from_spec(rel.spec()) == rel


def test_unknown_relation_spec_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown relation type 'Twisted'; known: \['Flipped'"):
        relation_from_spec({"type": "Twisted"})


def test_hashed_rejects_bad_bucket_count():
    with pytest.raises(ValueError, match="positive int, got 0"):
        tying.Hashed(0)


BAD_ARGUMENTS = [
    (lambda: tying.Rotated(dims=(0, 0)), r"Rotated: dims \(0, 0\) repeats a dim"),
    (lambda: tying.Rotated(k=1.5), r"Rotated: k must be an int, got 1.5 \(float\)"),
    (lambda: tying.Rotated(k=True), r"Rotated: k must be an int, got True \(bool\)"),
    (lambda: tying.Flipped((0, 0)), r"Flipped: dims \(0, 0\) repeats a dim"),
    (lambda: tying.Flipped(()), r"Flipped: dims needs at least one dim"),
    (lambda: tying.Flipped(0), r"Flipped: dims must be a tuple of ints, got 0 \(int\)"),
    (lambda: tying.Flipped((False,)), r"Flipped: each of dims must be an int, got False"),
    (lambda: tying.Transposed((0, 0)), r"Transposed: dims \(0, 0\) repeats a dim"),
    (lambda: tying.Transposed((0, 1, 2)), r"Transposed: dims needs exactly 2 dim"),
    (lambda: tying.Transposed(("a", 1)), r"Transposed: each of dims must be an int, got 'a'"),
    (lambda: tying.Mirrored(dim=0.0), r"Mirrored: dim must be an int, got 0.0"),
    (lambda: tying.Scaled(float("nan")), r"Scaled: init must be a finite real number, got nan"),
    (lambda: tying.Scaled(float("inf")), r"Scaled: init must be a finite real number, got inf"),
    (lambda: tying.Scaled(True), r"Scaled: init must be a finite real number, got True"),
    (lambda: tying.Scaled("2"), r"Scaled: init must be a finite real number, got '2'"),
    (lambda: tying.Hashed(seed=-1), r"Hashed\(seed=...\) must be an int >= 0, got -1"),
    (lambda: tying.Hashed(True), r"Hashed: buckets must be an int, got True \(bool\)"),
    (lambda: tying.Hashed(8, signed=1), r"Hashed: signed must be True or False, got 1"),
    (lambda: tying.Hashed(8, seed=1.0), r"Hashed: seed must be an int, got 1.0"),
]


@pytest.mark.parametrize("build,match", BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_relations_refuse_bad_arguments_when_built(build, match):
    with pytest.raises(tying.TieError, match=match):
        build()


def test_relation_arguments_of_numpy_types_are_plain_python_in_the_spec():
    import json

    import numpy as np

    rel = tying.Scaled(np.float32(0.5))
    assert rel == tying.Scaled(0.5) and json.dumps(rel.spec())
    assert tying.Rotated(np.int64(3), [0, 1]) == tying.Rotated(3, (0, 1))


SHAPE_ERRORS = [
    (
        tying.Transposed((0, 2)),
        (3, 4),
        (3, 4),
        r"Transposed\(dims=\(0, 2\)\): dim 2 is out of range",
    ),
    (tying.Transposed((0, -2)), (3, 4), (3, 4), r"name the same dim of a slot of shape \(3, 4\)"),
    (tying.Rotated(1, (0, 5)), (3, 3), (3, 3), r"dim 5 is out of range for a slot of shape"),
    (tying.Rotated(2, (1, -1)), (3, 3), (3, 3), r"name the same dim"),
    (tying.Flipped((3,)), (3, 3), (3, 3), r"Flipped\(dims=\(3,\)\): dim 3 is out of range"),
    (tying.Flipped((0, -2)), (3, 3), (3, 3), r"name the same dim"),
    (tying.Mirrored(2), (3, 2), (3, 3), r"Mirrored\(dim=2\): dim 2 is out of range"),
    (tying.Hashed(30), (30,), (4, 5), r"30 buckets for a slot of shape \(4, 5\) with only 20"),
]


@pytest.mark.parametrize("rel,sa,sb,match", SHAPE_ERRORS, ids=[m for *_, m in SHAPE_ERRORS])
def test_relations_refuse_dims_that_do_not_fit_the_slot_when_applied(rel, sa, sb, match):
    m = _two(sa, sb)
    before = {k: v.detach().clone() for k, v in m.items()}
    with pytest.raises(tying.TieError, match=r"rule 0 share\('b', like='a'.*" + match):
        tying.Plan([tying.share("b", like="a", relation=rel)]).apply(m)
    assert tying.ties(m) == [] and all(torch.equal(m[k], v) for k, v in before.items())


def test_scaled_zero_cannot_reparametrise_a_slot_by_itself():
    m = nn.ParameterDict({"w": nn.Parameter(torch.randn(3))})
    with pytest.raises(tying.TieError, match=r"rule 0 .*'w': Scaled\(init=0.0\) cannot"):
        tying.Plan([tying.share("w", relation=tying.Scaled(0))]).apply(m)


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"type": "Rotated", "k": 1, "dims": [0, 0]}, r"repeats a dim"),
        ({"type": "Rotated", "k": "1"}, r"k must be an int, got '1'"),
        ({"type": "Same", "dims": [0, 1]}, r"relation Same has no field\(s\) 'dims'"),
        ({"type": "Hashed", "buckets": 4, "seed": -3}, r"must be an int >= 0, got -3"),
        (["Same"], r"a relation spec must be a dict"),
    ],
)
def test_relation_from_spec_refuses_crafted_specs(spec, match):
    with pytest.raises(tying.TieError, match=match):
        relation_from_spec(spec)


def test_scaled_init_that_does_not_fit_the_dtype_is_refused_not_overflowed():
    m = _two((3,), (3,))
    with pytest.raises(tying.TieError, match=r"init 1e\+300 does not fit torch.float32"):
        tying.Plan([tying.share("b", like="a", relation=tying.Scaled(1e300))]).apply(m)
    assert tying.ties(m) == []


def _ints():
    return nn.ParameterDict(
        {k: nn.Parameter(torch.arange(6).reshape(2, 3), requires_grad=False) for k in "ab"}
    )


@pytest.mark.parametrize(
    "rule,match",
    [
        # stop 31: Scaled(2.5) stored an int64 scale of 2 and a float32 a / 2.5, so 'a' read
        # 0.0, 0.8, 1.6, ... instead of 0, 1, 2, ...; Mirrored and Hashed turned it float32
        (tying.share("a", relation=tying.Scaled(2.5)), r"would store it as torch.float32"),
        (tying.share("a", relation=tying.Mirrored()), r"would store it as torch.float32"),
        (tying.share("a", relation=tying.Hashed(3)), r"would store it as torch.float32"),
        (
            tying.share("b", like="a", relation=tying.Scaled(2.5)),
            r"a learnable scale needs a floating-point or complex slot, got torch.int64",
        ),
    ],
)
def test_a_relation_that_would_change_an_integer_slot_is_refused(rule, match):
    m = _ints()
    with pytest.raises(tying.TieError, match=r"rule 0 .*" + match):
        tying.Plan([rule]).apply(m)
    assert tying.ties(m) == [] and all(
        torch.equal(m[k], torch.arange(6).reshape(2, 3)) for k in "ab"
    )
    assert all(m[k].dtype == torch.int64 for k in "ab")


def test_integer_slots_keep_the_relations_that_compute_nothing_new():
    m = _ints()
    tying.Plan([tying.share("b", like="a", relation=tying.Flipped((0,)))]).apply(m)
    assert m["b"].dtype == torch.int64 and torch.equal(m["b"], m["a"].flip(0))


def test_hashed_reparametrises_a_complex_slot():
    """Stop 31: a bare NotImplementedError ('clamp is not supported for complex types')."""
    torch.manual_seed(0)
    m = nn.ParameterDict({"w": nn.Parameter(torch.randn(4, 4, dtype=torch.complex64))})
    w = m["w"].detach().clone()
    rel = tying.Hashed(5, seed=1)
    tying.Plan([tying.share("w", relation=rel)]).apply(m)
    idx, sign = rel.index_and_sign(16, "cpu")
    flat = w.reshape(-1) * sign
    want = torch.stack(
        [flat[idx == b].mean() if (idx == b).any() else flat.new_zeros(()) for b in range(5)]
    )
    assert m["w_physical"].dtype == torch.complex64
    torch.testing.assert_close(m["w_physical"].detach(), want)


def test_register_relation_refuses_a_second_class_under_a_known_kind():
    import dataclasses

    from tying.core.relations import RELATIONS, register_relation

    @dataclasses.dataclass(frozen=True)
    class Impostor(tying.Same):
        kind = "Same"

    before = dict(RELATIONS)
    with pytest.raises(ValueError, match=r"'Same' is already registered to tying\.core"):
        register_relation(Impostor)
    assert RELATIONS == before  # nothing replaced
    assert register_relation(tying.Same) is tying.Same  # the same class again: a no-op
    assert RELATIONS == before


# -- stop 34: low-precision and complex slots under the averaging and scaling relations


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hashed_reparametrisation_of_a_half_slot_stores_the_bucket_mean(dtype):
    """Stop 34: summed in bfloat16 the bucket count stuck at 256 (256 + 1 rounds to 256),
    so a bucket of 256 ones and 1,000 twos stored 2.0 instead of 1.80."""
    w = torch.cat([torch.ones(256), torch.full((1000,), 2.0)])
    m = nn.ParameterDict({"w": nn.Parameter(w.to(dtype))})
    tying.Plan([tying.share("w", relation=tying.Hashed(1, signed=False))]).apply(m)
    assert m["w_physical"].dtype == dtype
    assert m["w_physical"].item() == w.mean().to(dtype).item()
    assert torch.equal(m["w"].detach(), m["w_physical"].detach().expand(1256))


def test_mirrored_reparametrisation_of_a_float16_slot_near_its_range_top_stays_finite():
    """Stop 34: the two float16 halves (60000 + 60000) summed to inf, and the slot read inf."""
    w = torch.tensor([60000.0, 1.0, 65504.0], dtype=torch.float16)
    m = nn.ParameterDict({"w": nn.Parameter(w.clone())})
    tying.Plan([tying.share("w", relation=tying.Mirrored())]).apply(m)
    assert torch.equal(m["w_physical"].detach(), torch.tensor([62752.0, 1.0]).half())


def test_scaled_init_that_does_not_fit_a_complex_slot_is_refused_by_name():
    """Stop 34: complex slots skipped the range check; torch raised 'value cannot be
    converted to type c10::complex<float> without overflow', naming no slot."""
    m = nn.ParameterDict({k: nn.Parameter(torch.randn(2, dtype=torch.complex64)) for k in "ab"})
    before = {k: m[k].detach().clone() for k in "ab"}
    with pytest.raises(
        tying.TieError,
        match=r"rule 0 .*'b': Scaled\(init=1e\+39\): init 1e\+39 does not fit torch.complex64",
    ):
        tying.Plan([tying.share("b", like="a", relation=tying.Scaled(1e39))]).apply(m)
    assert tying.ties(m) == [] and all(torch.equal(m[k], before[k]) for k in "ab")


@pytest.mark.parametrize(
    "w,relation,shown",
    [
        # stop 34: Scaled(1e-4) on float16 stored w / 1e-4, past float16's 65504: the slot
        # read inf (and -inf), silently; Mirrored's two float32 halves summed to inf
        ([[10.0, -7.0], [0.5, 20.0]], tying.Scaled(1e-4), r"Scaled\(init=0.0001\)"),
        ([3e38, 1.0, 3e38], tying.Mirrored(), r"Mirrored\(dim=-1\)"),
    ],
)
def test_a_reparametrisation_that_overflows_the_slot_dtype_is_refused(w, relation, shown):
    dtype = torch.float16 if isinstance(relation, tying.Scaled) else torch.float32
    w = torch.tensor(w, dtype=dtype)
    m = nn.ParameterDict({"w": nn.Parameter(w.clone())})
    with pytest.raises(
        tying.TieError,
        match=rf"'w': {shown} would store this slot's finite {dtype} values as {dtype} inf "
        r"or nan .*cast the model to a wider dtype first \(.float\(\), .double\(\)\)",
    ):
        tying.Plan([tying.share("w", relation=relation)]).apply(m)
    assert tying.ties(m) == [] and list(m.keys()) == ["w"] and torch.equal(m["w"], w)
    m.double()
    tying.Plan([tying.share("w", relation=relation)]).apply(m)
    torch.testing.assert_close(m["w"].detach(), w.double())


def test_load_ties_a_fresh_model_whose_own_values_would_overflow_the_reparametrisation(
    tmp_path,
):
    """The overflow refusal is for the values a plan keeps: tying.load overwrites them with
    the file's, so a fresh float16 model of 100s still loads a Scaled(1e-4) file."""
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float16)
    m = nn.ParameterDict({"w": nn.Parameter(w.clone())})
    tying.Plan([tying.share("w", relation=tying.Scaled(1e-4))]).apply(m)
    tying.save(m, tmp_path / "m.safetensors")
    fresh = nn.ParameterDict({"w": nn.Parameter(torch.full((2, 2), 100.0).half())})
    tying.load(fresh, tmp_path / "m.safetensors")
    assert torch.equal(fresh["w"].detach(), m["w"].detach())
    assert tying.ties(fresh) == tying.ties(m)


def test_a_reparametrisation_on_the_meta_device_is_not_checked_for_overflow():
    """The overflow check reads values; a model built on the meta device has none (stop 34:
    the check called .all() on meta tensors, so HashedLinear could not be built)."""
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tying.Plan([tying.share("1.weight", like="0.weight", relation=tying.Scaled(2.0))]).apply(m)
    assert m[1].weight.is_meta and tying.count(m).physical < tying.count(m).logical
