"""Ghost clipping and Opacus' hooks probe mixing at every new batch size (stop 50).

Stop 49 probed a vetted signature again only at a batch size past every one probed (a new
largest or smallest). A forward that mixes examples at one size *inside* that range (in-batch
pairs at ``x.shape[0] == 6``, after batches of 3 and 9) ran at B = 6 with per-example norms
0.81 off a per-example loop, and no error. Anchor: plain PyTorch, one backward per example
through the batched forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from tying.train import DPSGD, GhostClipping, grad_sample_module

# stop 56: these steps vary the batch size without n_data on purpose (DPSGD warns once)
pytestmark = pytest.mark.filterwarnings("ignore:DPSGD.step without n_data:UserWarning")

MIXES = "the forward mixes examples"


class PairsAtSix(nn.Module):
    """Adds each hidden row's mirror partner (in-batch pairs) when the batch holds ``at``."""

    def __init__(self, at=6):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.at = nn.Linear(4, 5), nn.Linear(5, 3), at
        self.double()

    def forward(self, x):  # (B, 4) -> (B, 3)
        h = torch.tanh(self.a(x))  # (B, 5)
        if x.shape[0] == self.at:
            h = h + h.flip(0)
        return self.b(h)


def loss_fn(o, t):
    return F.cross_entropy(o, t, reduction="none")


def _batch(B, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 4, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (B,), generator=g
    )


def loop_norms(model, x, y):
    """‖∇ loss_b‖ through the batched forward, one backward per example."""
    params = list(model.parameters())
    out = []
    for b in range(len(y)):
        g = torch.autograd.grad(loss_fn(model(x), y)[b], params)
        out.append(torch.cat([v.flatten() for v in g]).norm())
    return torch.stack(out)


def test_ghost_refuses_mixing_at_a_size_inside_the_range_probed():
    model = PairsAtSix()
    ghost = GhostClipping(model)
    for B in (3, 9):  # no mixing at these sizes: the norms are the loop's
        x, y = _batch(B, B)
        torch.testing.assert_close(ghost.norms(loss_fn, x, y), loop_norms(model, x, y))
    x, y = _batch(6, 6)
    # old code: 6 lies in [3, 9], not probed; norms 0.81 off the loop's, no error
    with pytest.raises(ValueError, match=f"ghost clipping: {MIXES}"):
        ghost.norms(loss_fn, x, y)


def test_dpsgd_ghost_refuses_at_the_inner_size_and_leaves_the_model():
    model = PairsAtSix()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    dp = DPSGD(model, opt, noise_multiplier=0.0, max_grad_norm=0.5, sample_rate=0.5, mode="ghost")
    dp.step(loss_fn, *_batch(3, 0))
    dp.step(loss_fn, *_batch(9, 1))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=f"ghost clipping: {MIXES}"):
        dp.step(loss_fn, *_batch(6, 2))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert dp.steps == 2


def test_grad_sample_module_refuses_mixing_at_a_size_inside_the_range_probed():
    model = PairsAtSix()
    gsm = grad_sample_module(model, loss_reduction="sum")
    gsm(_batch(3, 0)[0])
    gsm(_batch(9, 1)[0])
    # old code: 6 lies in [3, 9]; Opacus' hooks read row b as example b's, no error
    with pytest.raises(ValueError, match=f"grad_sample_module: {MIXES}"):
        gsm(_batch(6, 2)[0])


@settings(derandomize=True, deadline=None, max_examples=8)
@given(at=st.integers(2, 7), sizes=st.lists(st.integers(2, 8), min_size=2, max_size=6))
@example(at=6, sizes=[3, 8, 6])  # old code: 6 inside [3, 8], not probed
def test_ghost_norms_are_the_loops_or_refused_whatever_the_order_of_sizes(at, sizes):
    """Each call either gives the loop's norms or is refused, and refused only at the
    size where the forward mixes."""
    model = PairsAtSix(at)
    ghost = GhostClipping(model)
    for seed, B in enumerate(sizes):
        x, y = _batch(B, seed)
        try:
            got = ghost.norms(loss_fn, x, y)
        except ValueError as err:
            assert MIXES in str(err) and B == at
            continue
        assert B != at
        torch.testing.assert_close(got, loop_norms(model, x, y))


def test_a_plain_torch_model_still_skips_the_probe_at_new_sizes(monkeypatch):
    """torch's own layers read no batch size: the probe is not made again (its cost);
    a model of one's own class is probed at each new size, once."""
    import tying.train.ghost as ghost_module

    probed = []
    real = ghost_module.refuse_mixing_forward

    def counting(model, xs, B, *args, **kwargs):
        probed.append(B)
        return real(model, xs, B, *args, **kwargs)

    monkeypatch.setattr(ghost_module, "refuse_mixing_forward", counting)
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    own = PairsAtSix(at=100)
    for model, want in ((plain, [3]), (own, [3, 5, 4])):
        probed.clear()
        ghost = GhostClipping(model)
        for seed, B in enumerate((3, 5, 4, 5, 3)):
            x, y = _batch(B, seed)
            torch.testing.assert_close(ghost.norms(loss_fn, x, y), loop_norms(model, x, y))
        assert probed == want
