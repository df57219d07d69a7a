"""Stop 52: value checks that ran as a Python ``if`` ran once, at recording time, under
``torch.jit.trace`` (and not at all under ``torch.compile`` for the losses): the recorded
graph then took bad values with no error.

- a traced ``HashedEmbedding`` read a hashed row for id 25 of a 20-row table (a traced
  ``nn.Embedding`` raises); a traced ``HashedEmbeddingBag`` failed to trace at all
  (torch's "unordered_map::at" from the numba kernel's autograd Function);
- a compiled or traced ``SoftDiceLoss`` given logits returned 2.25 (a Dice loss lies in
  [0, 1]) where the eager call refuses them; ``contrastive_loss`` took a label 2.

Each check is now an assert inside the graph; the anchor of the values is the eager
layer (and ``nn.Embedding`` for what a traced lookup does with a bad id).
"""

from __future__ import annotations

import pytest
import torch

import tying.nn as tnn
from tying.nn._args import assert_in_graph

pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace.* is deprecated:DeprecationWarning"),
]


def _ids(*shape, high=20, seed=0):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "build",
    [
        lambda: tnn.HashedEmbedding(20, 4, 7),
        lambda: tnn.HashedEmbedding(20, 4, 16, mode="block", block=2),
        lambda: tnn.HashedEmbeddingBag(20, 4, 7, pooling="sum"),
    ],
)
def test_a_traced_hashed_lookup_refuses_an_id_out_of_range_and_matches_eager(build):
    torch.manual_seed(0)
    emb = build().double()
    traced = torch.jit.trace(emb, (_ids(3, 5),), check_trace=False)  # the bag raised here
    ids = _ids(3, 5, seed=1)  # other ids than the traced ones
    got = traced(ids)
    want = emb(ids)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    (g_got,) = torch.autograd.grad(got.square().sum(), emb.weight_physical)
    (g_want,) = torch.autograd.grad(want.square().sum(), emb.weight_physical)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-14)
    bad = ids.clone()
    bad[0, 0] = 25
    with pytest.raises(RuntimeError, match=r"must be in \[0, 20\); map out-of-vocabulary"):
        traced(bad)  # read a hashed row before
    with pytest.raises(IndexError, match=r"must be in \[0, 20\), got min"):
        emb(bad)  # the eager refusal, unchanged


@pytest.mark.parametrize("loss", [tnn.SoftDiceLoss(), tnn.SoftIoULoss()])
def test_compiled_and_traced_losses_refuse_logits_as_eager_does(loss):
    torch.manual_seed(0)
    target = (torch.rand(2, 1, 4, 4) > 0.5).float()
    proba, logits = torch.rand(2, 1, 4, 4), 3 * torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\], got min"):
        loss(logits, target)
    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="aot_eager")
    traced = torch.jit.trace(loss, (proba, target))
    for graph in (compiled, traced):
        torch.testing.assert_close(graph(proba, target), loss(proba, target), rtol=0, atol=0)
        with pytest.raises(RuntimeError, match=r"prediction must hold values in \[0, 1\]"):
            graph(logits, target)  # 2.25 for the Dice loss before
        with pytest.raises(RuntimeError, match=r"target must hold values in \[0, 1\]"):
            graph(proba, target + 1.0)


def test_compiled_contrastive_loss_refuses_a_label_other_than_0_or_1():
    torch.manual_seed(0)
    za, zb = torch.randn(4, 3), torch.randn(4, 3)
    good, bad = torch.tensor([0.0, 1.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 2.0, 1.0])
    torch._dynamo.reset()
    compiled = torch.compile(tnn.contrastive_loss, backend="aot_eager")
    torch.testing.assert_close(
        compiled(za, zb, good), tnn.contrastive_loss(za, zb, good), rtol=0, atol=0
    )
    with pytest.raises(RuntimeError, match="same must hold 0 .different. or 1 .same. labels"):
        compiled(za, zb, bad)  # returned a number before


def test_assert_in_graph_returns_its_tensor_bit_for_bit():
    x = torch.tensor([-0.0, 1.5, float("inf")])
    traced = torch.jit.trace(lambda t: assert_in_graph((t >= 0).all(), "t >= 0", t), (x,))
    out = traced(x)
    assert torch.equal(out, x) and torch.signbit(out[0])  # -0.0 kept (x + 0 would not)
    with pytest.raises(RuntimeError, match="t >= 0"):
        traced(torch.tensor([-1.0, 0.0, 0.0]))
