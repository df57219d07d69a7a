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
