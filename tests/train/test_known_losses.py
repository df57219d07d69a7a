"""Known per-example losses applied to the batch: recognised exactly, everything else refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.train.models import cases, ce, loop_grads, mse
from tying.train import DPSGD, GhostClipping, per_example_grads, private_grad
from tying.train import ghost as ghost_module
from tying.train import per_example as dp_module
from tying.train.known_losses import KnownLosses

G = torch.Generator().manual_seed(3)
B, C = 6, 4
OUT = torch.randn(B, C, generator=G, dtype=torch.float64)
IDX = torch.randint(0, C, (B,), generator=G)
REAL = torch.randn(B, C, generator=G, dtype=torch.float64)
PROB = torch.rand(B, C, generator=G, dtype=torch.float64)

RECOGNISED = [
    ("F.cross_entropy", lambda o, t: F.cross_entropy(o, t, reduction="none"), IDX),
    ("nn.CrossEntropyLoss", nn.CrossEntropyLoss(reduction="none"), IDX),
    (
        "cross_entropy, every option given by position",
        lambda o, t: F.cross_entropy(o, t, None, None, -100, None, "none", 0.0),
        IDX,
    ),
    (
        "cross_entropy with class weights and smoothing",
        nn.CrossEntropyLoss(
            weight=torch.rand(C, dtype=torch.float64), reduction="none", label_smoothing=0.1
        ),
        IDX,
    ),
    ("cross_entropy on probabilities", nn.CrossEntropyLoss(reduction="none"), PROB),
    ("nll_loss", nn.NLLLoss(reduction="none"), IDX),
    ("nn.MSELoss", nn.MSELoss(reduction="none"), REAL),
    ("F.l1_loss", lambda o, t: F.l1_loss(o, t, reduction="none"), REAL),
    ("nn.SmoothL1Loss", nn.SmoothL1Loss(reduction="none", beta=0.5), REAL),
    ("nn.HuberLoss", nn.HuberLoss(reduction="none", delta=0.3), REAL),
    ("nn.BCEWithLogitsLoss", nn.BCEWithLogitsLoss(reduction="none"), PROB),
    (
        "BCEWithLogits with per-class pos_weight",
        nn.BCEWithLogitsLoss(reduction="none", pos_weight=torch.rand(C, dtype=torch.float64)),
        PROB,
    ),
]


@pytest.mark.parametrize("name,loss_fn,y", RECOGNISED, ids=[r[0] for r in RECOGNISED])
def test_known_losses_are_applied_to_the_batch_and_equal_each_example_alone(name, loss_fn, y):
    out = OUT if "nll" not in name else F.log_softmax(OUT, 1)
    got = KnownLosses()(loss_fn, out, y)
    assert got is not None, name
    alone = torch.stack([loss_fn(out[b : b + 1], y[b : b + 1]).sum() for b in range(B)])
    torch.testing.assert_close(got.reshape(B, -1).sum(1), alone, rtol=1e-13, atol=1e-15)


counter = {"n": 0}


def _counting(o, t):
    counter["n"] += 1
    return F.cross_entropy(o, t, reduction="mean")


def _swallowing(o, t):
    try:
        o = o * 2  # mixes nothing, but it is a torch call the watcher does not know
    except Exception:  # noqa: BLE001 - the point: the stop must not be swallowed
        pass
    return F.cross_entropy(o, t, reduction="none")


def _swallowing_all(o, t):
    try:
        o = o * 2
    except BaseException:  # noqa: BLE001 - even this must not turn a stop into a verdict
        pass
    return F.cross_entropy(o, t, reduction="none")


NOT_RECOGNISED = [
    ("a stop swallowed by a bare except", _swallowing_all, IDX),
    ("reduction mean", lambda o, t: F.cross_entropy(o, t), IDX),
    ("reduction sum", nn.CrossEntropyLoss(reduction="sum"), IDX),
    ("a sum after the loss", lambda o, t: F.cross_entropy(o, t, reduction="none").sum(), IDX),
    # the classic mixing loss: (B, 1) against (B,) broadcasts to (B, B)
    ("mse broadcasting", lambda o, t: F.mse_loss(o[:, :1], t, reduction="none"), REAL[:, 0]),
    ("mse on another target shape", nn.MSELoss(reduction="none"), REAL[:1]),
    ("a target made from y", lambda o, t: F.cross_entropy(o, t.roll(1), reduction="none"), IDX),
    ("an output made from out", lambda o, t: F.cross_entropy(o + 0, t, reduction="none"), IDX),
    ("a closed-over target", lambda o, t: F.cross_entropy(o, IDX, reduction="none"), IDX.clone()),
    ("hand-written", mse, REAL),
    ("two known losses", lambda o, t: F.l1_loss(o, t, reduction="none") + 0, REAL),
    ("a per-element weight", lambda o, t: F.mse_loss(o, t, reduction="none", weight=t), REAL),
    ("BCE with an element weight", nn.BCEWithLogitsLoss(weight=PROB, reduction="none"), PROB),
    (
        "pos_weight along the batch",
        lambda o, t: F.binary_cross_entropy_with_logits(
            o[:, 0], t[:, 0], pos_weight=PROB[:, 0], reduction="none"
        ),
        PROB,
    ),
    ("a swallowed stop", _swallowing, IDX),
    ("deprecated reduce", lambda o, t: F.cross_entropy(o, t, reduce=False), IDX),
]


@pytest.mark.parametrize("name,loss_fn,y", NOT_RECOGNISED, ids=[r[0] for r in NOT_RECOGNISED])
def test_anything_else_is_not_applied_to_the_batch(name, loss_fn, y):
    known = KnownLosses()
    assert known(loss_fn, OUT, y) is None
    assert known.known_not(loss_fn)


def test_an_unrecognised_loss_is_stopped_before_its_torch_work_runs():
    seen = torch.zeros(1)

    def writes_first(o, t):
        seen.add_(1)  # stopped here, before it runs
        return F.cross_entropy(o, t, reduction="none")

    assert KnownLosses()(writes_first, OUT, IDX) is None
    assert float(seen) == 0.0


def test_a_negative_verdict_is_remembered_so_the_loss_runs_once_more_only_once():
    known = KnownLosses()
    counter["n"] = 0
    assert known(_counting, OUT, IDX) is None
    assert known(_counting, OUT, IDX) is None
    assert counter["n"] == 1  # the second call was not made

    class Holder:
        def loss(self, o, t):
            counter["n"] += 1
            return (o - t).sum(1)

    h = Holder()
    assert known(h.loss, OUT, REAL) is None
    assert known.known_not(h.loss)  # a bound method: a new object at each access


def test_a_positive_verdict_is_checked_at_every_call():
    known = KnownLosses()
    state = {"mix": False}

    def branches(o, t):
        if state["mix"]:
            return F.cross_entropy(o, t.roll(1), reduction="none")
        return F.cross_entropy(o, t, reduction="none")

    assert known(branches, OUT, IDX) is not None
    state["mix"] = True
    assert known(branches, OUT, IDX) is None


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 5),
    c=st.integers(2, 5),
    extra=st.integers(0, 2),
    which=st.sampled_from(["ce", "ce-prob", "mse", "l1", "huber", "bce"]),
    seed=st.integers(0, 2**16),
)
def test_property_a_recognised_loss_is_per_example(b, c, extra, which, seed):
    """Whatever the shapes, the batched result's row b is example b's loss alone."""
    g = torch.Generator().manual_seed(seed)
    shape = (b, c) + (3,) * extra
    out = torch.randn(shape, generator=g, dtype=torch.float64)
    if which == "ce":
        y = torch.randint(0, c, (b,) + (3,) * extra, generator=g)
    elif which in ("ce-prob", "bce"):
        y = torch.rand(shape, generator=g, dtype=torch.float64)
    else:
        y = torch.randn(shape, generator=g, dtype=torch.float64)
    fn = {
        "ce": F.cross_entropy,
        "ce-prob": F.cross_entropy,
        "mse": F.mse_loss,
        "l1": F.l1_loss,
        "huber": F.huber_loss,
        "bce": F.binary_cross_entropy_with_logits,
    }[which]

    def loss_fn(o, t):
        return fn(o, t, reduction="none")

    got = KnownLosses()(loss_fn, out, y)
    assert got is not None
    assert got.shape[0] == b
    alone = [loss_fn(out[i : i + 1], y[i : i + 1]).sum() for i in range(b)]
    torch.testing.assert_close(got.reshape(b, -1).sum(1), torch.stack(alone), rtol=1e-12, atol=0)


# -- in the DP step ------------------------------------------------------------------


def _old_way(monkeypatch):
    """Today's path before stop 22: every loss computed per example under vmap."""
    monkeypatch.setattr(KnownLosses, "__call__", lambda self, *a: None)
    monkeypatch.setattr(KnownLosses, "known_not", lambda self, f: True)


@pytest.mark.parametrize("case", cases(), ids=[c[0] for c in cases()])
def test_per_example_grads_equal_the_old_way_and_a_loop(case, monkeypatch):
    name, model, loss_fn, x, y = case
    new = per_example_grads(model, loss_fn, x, y)
    want = loop_grads(model, loss_fn, x, y)
    with monkeypatch.context() as m:
        _old_way(m)
        old = per_example_grads(model, loss_fn, x, y)
    for n in want:
        torch.testing.assert_close(new[n], old[n], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(new[n], want[n], rtol=1e-6, atol=1e-12)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _still_dp(model, **kw):
    """A DPSGD whose steps change nothing (lr 0, no noise): a step to look into."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    return DPSGD(model, opt, noise_multiplier=0.0, max_grad_norm=0.3, sample_rate=0.1, **kw)


def test_the_dp_step_applies_a_known_loss_to_the_batch_and_any_other_per_example():
    x = torch.randn(9, 5, dtype=torch.float64, generator=G)
    y = torch.randint(0, 3, (9,), generator=G)
    model = _mlp()
    dp = _still_dp(model)
    dp.step(ce, x, y)
    assert (dp._per_example.last_way, dp._per_example.last_loss) == ("expanded", "batched")
    # a loss that mixes examples by broadcasting stays per example: each example alone
    # gets a (1, 1) output against a (1,) target, so nothing mixes
    yr = torch.randn(9, dtype=torch.float64, generator=G)

    def mixing(o, t):
        return (o[:, :1] - t).pow(2).mean(1)  # (B, 1) - (B,): (B, B) on a batch

    want = loop_grads(model, mixing, x, yr)
    got = per_example_grads(model, mixing, x, yr)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)
    dp.step(mixing, x, yr)
    assert dp._per_example.last_loss == "per example"
    calls = []
    real = KnownLosses.__call__
    KnownLosses.__call__ = lambda self, *a: calls.append(1) or real(self, *a)
    try:
        dp.step(mixing, x, yr)  # remembered: not called on the batch again
    finally:
        KnownLosses.__call__ = real
    pe = dp._per_example
    assert (pe.last_forward, pe.last_loss) == ("direct", "per example")
    assert not pe._known(mixing, x, yr) and len(calls) == 1  # one call, answered at once
    # a model whose forward needs vmap: the old way (model and loss under one vmap)
    torch.manual_seed(0)
    ln = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3)).double()
    pe2 = dp_module._PerExample(ln)
    pe2(mixing, (x,), yr)
    assert (pe2.last_forward, pe2.last_loss) == ("vmap", "per example")
    pe2(mixing, (x,), yr)
    assert (pe2.last_forward, pe2.last_loss) == (None, None)


def test_private_grad_with_a_known_loss_equals_the_old_way_float64(monkeypatch):
    x = torch.randn(16, 5, dtype=torch.float64, generator=G)
    y = torch.randint(0, 3, (16,), generator=G)
    kw = dict(max_grad_norm=0.2, noise_multiplier=0.0, denominator=1.0)
    for loss_fn in (ce, nn.CrossEntropyLoss(reduction="none")):
        new = private_grad(_mlp(), loss_fn, x, y, **kw)
        with monkeypatch.context() as m:
            _old_way(m)
            old = private_grad(_mlp(), loss_fn, x, y, **kw)
        for n in old.grads:
            torch.testing.assert_close(new.grads[n], old.grads[n], rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(new.norms, old.norms, rtol=1e-13, atol=0)
        torch.testing.assert_close(new.losses, old.losses, rtol=1e-13, atol=0)


def test_a_model_whose_output_is_not_one_tensor_takes_the_old_way():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3).double()

        def forward(self, x):
            return self.lin(x), None

    def first(out, y):
        return F.cross_entropy(out[0], y, reduction="none")

    torch.manual_seed(0)
    model = nn.Sequential(Pair())  # Sequential of a non-vetted type: vmap(grad)
    x = torch.randn(4, 5, dtype=torch.float64, generator=G)
    y = torch.randint(0, 3, (4,), generator=G)
    got = per_example_grads(model, first, x, y)
    want = loop_grads(model, first, x, y)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)


def test_ghost_mode_probes_only_losses_it_does_not_know(monkeypatch):
    x = torch.randn(8, 5, dtype=torch.float64, generator=G)
    y = torch.randint(0, 3, (8,), generator=G)
    probed = []
    real = ghost_module._refuse_losses_that_mix_examples
    monkeypatch.setattr(
        ghost_module,
        "_refuse_losses_that_mix_examples",
        lambda *a: probed.append(1) or real(*a),
    )
    gc = GhostClipping(_mlp())
    a = gc.clip(ce, x, y, 0.5)
    assert gc.last_probed is False and probed == []

    def ce_by_hand(o, t):  # reads the batch size: outside the row rules (stop 23), probed
        return torch.logsumexp(o, 1) - o.gather(1, t[:, None])[:, 0] + 0 * o.shape[0]

    b = gc.clip(ce_by_hand, x, y, 0.5)
    assert gc.last_probed is True and probed == [1]
    for n in a.grads:
        torch.testing.assert_close(a.grads[n], b.grads[n], rtol=1e-12, atol=1e-14)
    # and a mixing loss is still refused
    yr = torch.randn(8, dtype=torch.float64, generator=G)
    with pytest.raises(ValueError, match="loss_fn mixes examples"):
        gc.clip(lambda o, t: (o[:, :1] - t).pow(2).mean(1), x, yr, 0.5)


def test_the_known_losses_module_is_used_by_both_modes(monkeypatch):
    # a guard against a mode silently losing the fast path (or gaining an unguarded one)
    assert dp_module.KnownLosses is KnownLosses and ghost_module.KnownLosses is KnownLosses
    asked = []
    real = KnownLosses.__call__

    def counted(self, loss_fn, out, y):
        asked.append(loss_fn)
        return real(self, loss_fn, out, y)

    monkeypatch.setattr(KnownLosses, "__call__", counted)
    x = torch.randn(6, 5, dtype=torch.float64, generator=G)
    y = torch.randint(0, 3, (6,), generator=G)
    for mode in ("vmap", "ghost"):  # each DP step asks it about the user's loss
        asked.clear()
        dp = _still_dp(_mlp(), mode=mode)
        dp.step(ce, x, y)
        assert asked and asked[0] is ce, mode
