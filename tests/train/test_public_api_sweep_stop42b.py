"""Every public name of ``tying.train`` outside the DP work, against a hand-written loop.

:func:`test_every_public_name_is_swept_or_covered_elsewhere` enumerates
``tying.train.__all__``: each name is swept here (:data:`SWEPT`) or listed with the test
file that checks it (:data:`COVERED`), so that a new public name fails until it is one or
the other. Defects this sweep found (stop 42):

- ``PageHinkley``/``CUSUM``: finite values whose running sums overflow (``1e308`` then
  ``-1e308``) made the state NaN, and no alarm came again, with no error; ``"1.5"`` and
  ``True`` were read as losses. Both are refused now, the detector left as it was.
- ``fit_multitask``: its output-shape check ran the net on one row in training mode (a
  BatchNorm trunk was refused for a batch of one, naming no task) and drew dropout masks
  and moved running statistics; its final finiteness check did it once more (even at
  ``steps=0``). A seeded fit differed from the same loop written by hand, and a refused
  call had changed the net's buffers.
"""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
import tying.train
from tying.train import CUSUM, DriftMonitor, FastSlow, MultiTaskNet, PageHinkley, fit_multitask

HERE = Path(__file__).parent

# public name -> the tests of this file that sweep it
SWEPT = {
    "PageHinkley": ["test_property_detectors_equal_the_hand_loop_or_refuse_unchanged"],
    "CUSUM": ["test_property_detectors_equal_the_hand_loop_or_refuse_unchanged"],
    "DriftMonitor": ["test_a_refused_value_leaves_the_monitor_unchanged"],
    "MultiTaskNet": ["test_fit_multitask_equals_a_hand_written_adam_loop"],
    "fit_multitask": ["test_fit_multitask_equals_a_hand_written_adam_loop"],
    "components": ["test_property_components_equal_a_search_of_the_graph"],
    "FastSlow": ["test_fast_slow_on_a_tie_with_a_relation_equals_autograd_and_the_task_loop"],
}
# public name -> (test file that checks it, a word that file must hold)
COVERED = {
    "ACCOUNTANTS": ("test_accounting.py", "accountant="),
    "DPSGD": ("test_dp.py", "DPSGD"),
    "GhostClipping": ("test_ghost.py", "GhostClipping"),
    "GhostResult": ("test_ghost.py", ".clip("),
    "PrivateGrad": ("test_dp.py", "private_grad("),
    "clip_factors": ("test_dp.py", "clip_factors"),
    "epsilon": ("test_accounting.py", "epsilon"),
    "ghost_norms": ("test_ghost.py", "ghost_norms"),
    "grad_sample_module": ("test_layer_sweep_stop42.py", "grad_sample_module"),
    "naive_epsilon": ("test_accounting.py", "naive_epsilon"),
    "noise_for_epsilon": ("test_accounting.py", "noise_for_epsilon"),
    "per_example_grads": ("test_layer_sweep_stop42.py", "per_example_grads"),
    "per_example_norms": ("test_norms_stop38.py", "per_example_norms"),
    "poisson_batches": ("test_dp.py", "poisson_batches"),
    "private_grad": ("test_vmap_group_probe_stop42b.py", "private_grad"),
    "reset_optimizer": ("test_drift.py", "test_reset_optimizer_restarts_every_scheduler"),
}


def test_every_public_name_is_swept_or_covered_elsewhere():
    public = set(tying.train.__all__)
    assert not set(SWEPT) & set(COVERED)
    assert public == set(SWEPT) | set(COVERED), (
        f"not swept nor covered: {sorted(public - set(SWEPT) - set(COVERED))}; "
        f"listed but not public: {sorted(set(SWEPT) | set(COVERED) - public)}"
    )
    here = Path(__file__).read_text()
    for name, tests in SWEPT.items():
        assert all(f"def {t}(" in here for t in tests), name
    for name, (file, word) in COVERED.items():
        assert word in (HERE / file).read_text(), (name, file, word)


# -- drift detectors against the same algorithm written by hand ------------------------


def _ph_loop(stream, delta, threshold, min_samples):
    """Page-Hinkley by hand: alarms, or the index of the value that overflows the sums."""
    n, mean, cum, mn, alarms = 0, 0.0, 0.0, 0.0, []
    for t, x in enumerate(stream):
        n2 = n + 1
        mean2 = mean + (x - mean) / n2
        cum2 = cum + (x - mean2 - delta)
        if not (math.isfinite(mean2) and math.isfinite(cum2)):
            return alarms, t
        n, mean, cum = n2, mean2, cum2
        mn = min(mn, cum)
        if n >= min_samples and cum - mn > threshold:
            alarms.append(t)
    return alarms, None


def _cusum_loop(stream, k, h, warmup):
    """CUSUM by hand (Welford warm-up, the same floor for a constant warm-up)."""
    mean, m2, s, alarms, mu, sd = 0.0, 0.0, 0.0, [], None, None
    for t, x in enumerate(stream):
        if t < warmup:
            step = x - mean
            mean2 = mean + step / (t + 1)
            m22 = m2 + step * (x - mean2)
            if not (math.isfinite(mean2) and math.isfinite(m22)):
                return alarms, t
            mean, m2 = mean2, m22
            if t + 1 == warmup:
                mu, sd = mean, math.sqrt(max(m2, 0.0) / (warmup - 1))
                if not (sd > 8 * math.ulp(abs(mu)) and math.isfinite(sd)):
                    sd = 1e-8 + 1e-3 * abs(mu)
            continue
        s = max(0.0, s + (x - mu) / sd - k)
        if s > h:
            alarms.append(t)
    return alarms, None


VALUES = st.one_of(
    st.floats(-3, 3, allow_nan=False),
    st.sampled_from([1e308, -1e308, 1.7e308, 0.0, 1.0]),
)


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    stream=st.lists(VALUES, min_size=0, max_size=12),
    which=st.sampled_from(["ph", "cusum"]),
    constant=st.booleans(),
)
def test_property_detectors_equal_the_hand_loop_or_refuse_unchanged(stream, which, constant):
    """Any stream (empty, one value, constant, huge values): the alarms of the hand loop;
    at the value where the loop's sums overflow, a ValueError and the detector exactly as
    before the call (its pickle), and the same alarms as the loop up to there."""
    if constant:
        stream = [stream[0]] * len(stream) if stream else []
    if which == "ph":
        det = PageHinkley(delta=0.1, threshold=0.5, min_samples=1)
        want, stop = _ph_loop(stream, 0.1, 0.5, 1)
    else:
        det = CUSUM(k=0.5, h=2.0, warmup=3)
        want, stop = _cusum_loop(stream, 0.5, 2.0, 3)
    got = []
    for t, x in enumerate(stream):
        if t == stop:
            before = pickle.dumps(det)
            with pytest.raises(ValueError, match=r"overflowed the running sums .* not added"):
                det.update(np.float64(x))  # a NumPy scalar, as a loss often is
            assert pickle.dumps(det) == before
            break
        if det.update(np.float64(x)):
            got.append(t)
    assert got == want


@pytest.mark.parametrize("make", [PageHinkley, CUSUM])
@pytest.mark.parametrize(
    "bad", ["1.5", True, np.bool_(True), torch.tensor(True), torch.tensor(1 + 1j)], ids=repr
)
def test_a_value_that_is_not_a_real_loss_is_refused_unchanged(make, bad):
    det = make()
    det.update(1.0)
    before = pickle.dumps(det)
    with pytest.raises(TypeError, match=r"update: a loss value must be a real number .* got"):
        det.update(bad)
    assert pickle.dumps(det) == before


@pytest.mark.parametrize(
    "make", [lambda: PageHinkley(0.05, 2.0, 5), lambda: CUSUM(warmup=20)], ids=["ph", "cusum"]
)
def test_numpy_scalars_and_one_element_tensors_read_as_their_float(make):
    stream = [1.0, 1.2, 0.9, 1.1] * 10 + [4.0] * 10
    kinds = [
        float, np.float64, lambda v: torch.tensor(v, dtype=torch.float64),
        lambda v: torch.tensor([v], dtype=torch.float64),
    ]  # fmt: skip
    runs, states = [], []
    for kind in kinds:
        det = make()
        runs.append([t for t, x in enumerate(stream) if det.update(kind(x))])
        states.append(vars(det))
    assert runs[0] and all(r == runs[0] for r in runs) and all(s == states[0] for s in states)


@pytest.mark.parametrize("make", [PageHinkley, CUSUM])
def test_a_monitor_pickled_mid_stream_goes_on_as_the_uninterrupted_one(make):
    stream = [1.0, 1.3, 0.8, 1.1] * 10 + [4.0] * 30
    whole = DriftMonitor(make())
    for x in stream:
        whole.update(x)
    first = DriftMonitor(make())
    for x in stream[:25]:
        first.update(x)
    second = pickle.loads(pickle.dumps(first))
    for x in stream[25:]:
        second.update(x)
    assert second.detections == whole.detections and whole.detections
    assert second.t == whole.t == len(stream)


def test_a_refused_value_leaves_the_monitor_unchanged():
    mon = DriftMonitor(CUSUM(k=0.5, h=5.0, warmup=2))
    mon.update(1e308)
    with pytest.raises(ValueError, match=r"CUSUM\.update: the value -1e\+308 overflowed"):
        mon.update(-1e308)
    assert mon.t == 1 and mon.detections == [] and mon.detector.n_ == 1


# -- multi-task fits against a hand-written Adam loop ------------------------------------


def _hand_fit(net, data, steps, lr, edges, lam):
    opt = torch.optim.Adam(list(net.parameters()), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(((net(X, k) - y) ** 2).mean() for k, (X, y) in enumerate(data))
        if lam > 0:
            loss = loss + net.soft_penalty(edges, lam)
        loss.backward()
        opt.step()
    return net


TRUNKS = {
    "linear": lambda: nn.Linear(3, 4),
    "dropout": lambda: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.3)),
    "batchnorm": lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
}


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("trunk", sorted(TRUNKS))
def test_fit_multitask_equals_a_hand_written_adam_loop(trunk, share):
    """Tasks of 2, 7 and 3 rows, soft penalty on, seeded: the same parameters and buffers
    as the loop by hand (was: dropout 0.23 apart, a BatchNorm trunk refused)."""
    torch.manual_seed(1)
    a = MultiTaskNet(TRUNKS[trunk](), nn.Linear(4, 1), 3).double()
    if share:
        a.share_hard([[0, 2], [1]])
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(n, 3, generator=g, dtype=torch.float64),
         torch.randn(n, 1, generator=g, dtype=torch.float64))
        for n in (2, 7, 3)
    ]  # fmt: skip
    edges = [(0, 1), (1, 2)]
    torch.manual_seed(5)
    fit_multitask(a, data, steps=15, lr=0.05, edges=edges, lam=0.3)
    after_a = torch.rand(())  # the random state after the fit, too
    torch.manual_seed(5)
    _hand_fit(b, data, 15, 0.05, edges, 0.3)
    assert torch.equal(after_a, torch.rand(()))
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=n)
    if share:  # the tie still holds after the steps
        lin = [t if trunk == "linear" else t[0] for t in a.trunks]
        assert lin[0].weight is lin[2].weight is not lin[1].weight


def test_fit_multitask_at_zero_steps_and_a_refused_call_leave_the_buffers():
    torch.manual_seed(0)
    net = MultiTaskNet(TRUNKS["batchnorm"](), nn.Linear(4, 1), 2)
    X = torch.randn(6, 3)
    before = copy.deepcopy(net.state_dict())
    fit_multitask(net, [(X, X[:, :1]), (X, X[:, :1])], steps=0)
    bad = [(X, X[:, :1]), (X, X[:, 0])]  # task 1's targets (6,) against outputs (6, 1)
    with pytest.raises(ValueError, match=r"task 1's targets have shape \(6,\)"):
        fit_multitask(net, bad, steps=3)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    n=st.integers(1, 7),
    edges=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=8),
)
def test_property_components_equal_a_search_of_the_graph(n, edges):
    edges = [(np.int64(i % n), j % n) for i, j in edges]  # NumPy ints too
    seen, want = set(), []
    for start in range(n):
        if start in seen:
            continue
        comp, todo = set(), [start]
        while todo:
            u = todo.pop()
            if u not in comp:
                comp.add(u)
                todo += [j for i, j in edges if i == u] + [i for i, j in edges if j == u]
        seen |= comp
        want.append(sorted(int(c) for c in comp))
    assert tying.train.components(n, iter(edges)) == want
    net = MultiTaskNet(nn.Linear(2, 2), nn.Linear(2, 1), n)
    net.share_hard(want)
    assert len({id(net.trunks[k].weight) for k in range(n)}) == len(want)


# -- FastSlow on a tie with a relation ---------------------------------------------------


class TransposedAE(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc, self.dec = nn.Linear(4, 3, bias=False), nn.Linear(3, 4, bias=False)
        self.out = nn.Linear(4, 5)
        tying.Plan(
            [tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]
        ).apply(self)

    def forward(self, x):  # (B, 4) -> (B, 5)
        return self.out(torch.tanh(self.dec(torch.tanh(self.enc(x)))))


def _ce(out, y):
    return F.cross_entropy(out, y)


def test_fast_slow_on_a_tie_with_a_relation_equals_autograd_and_the_task_loop():
    net = TransposedAE().double()
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 5, (3, 6), generator=g)
    fs = FastSlow(net, fast=["enc", "dec"], inner_lr=0.4, inner_steps=2)
    assert fs.fast_names == ["enc.weight"]  # one tensor, both uses
    # inner loop: plain autograd SGD on a copy, the tie kept by the Plan
    ref = copy.deepcopy(net)
    w = dict(ref.named_parameters())["enc.weight"]
    for _ in range(2):
        ref.zero_grad()
        _ce(ref(xs[0]), ys[0]).backward()
        with torch.no_grad():
            w -= 0.4 * w.grad
    fast = fs.adapt(_ce, xs[0], ys[0])
    torch.testing.assert_close(fs.predict(fast, xs[0]), ref(xs[0]), rtol=1e-10, atol=1e-12)
    # the batch of tasks (vmap) equals a loop over tasks, value and outer gradient
    batched = fs.meta_loss(_ce, xs, ys, xs, ys)
    loop = sum(_ce(fs.predict(fs.adapt(_ce, xs[t], ys[t]), xs[t]), ys[t]) for t in range(3)) / 3
    params = list(net.parameters())
    for a, b in zip(torch.autograd.grad(batched, params), torch.autograd.grad(loop, params)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fast", [[], (), iter([])], ids=["list", "tuple", "used-up iterator"])
def test_fast_slow_with_no_fast_pattern_is_refused(fast):
    """``fast=[]`` made every weight slow: adapt returned the shared init for every task."""
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"FastSlow: fast names no pattern.*fast=\['head'\]"):
        FastSlow(net, fast=fast)


def test_a_bool_learning_rate_is_refused_and_nothing_trains():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    before = copy.deepcopy(net.state_dict())
    fs = FastSlow(net, fast=["2"])
    tasks = (torch.zeros(2, 3, 1), torch.ones(2, 3, 1)) * 2
    with pytest.raises(ValueError, match=r"meta_fit: lr must be a finite number >= 0, got True"):
        fs.meta_fit(lambda g: tasks, lambda o, y: (o - y).pow(2).mean(), meta_steps=2, lr=True)
    mt = MultiTaskNet(nn.Linear(2, 2), nn.Linear(2, 1), 2)
    mt_before = copy.deepcopy(mt.state_dict())
    X = torch.randn(4, 2)
    with pytest.raises(
        ValueError, match=r"fit_multitask: lr must be a finite number > 0, got True"
    ):
        fit_multitask(mt, [(X, X[:, :1])] * 2, steps=2, lr=True)
    for sd, ref in ((net.state_dict(), before), (mt.state_dict(), mt_before)):
        assert all(torch.equal(v, ref[k]) for k, v in sd.items())


@pytest.mark.parametrize("make", [PageHinkley, CUSUM])
def test_the_training_steps_loss_tensor_is_read_without_a_warning(make):
    """``mon.update(loss)`` with the loss that was just backpropagated: float() of a tensor
    that requires grad warns on recent torch, an error under warnings-as-errors."""
    w = torch.ones(3, requires_grad=True)
    mon, ref = DriftMonitor(make()), DriftMonitor(make())
    for t in range(80):
        v = 1.0 + 0.1 * (t % 3) + 3.0 * (t >= 50)
        loss = (w * v / 3).sum()  # == v, requires grad
        loss.backward()
        mon.update(loss)
        ref.update(v)
    assert mon.detections == ref.detections and mon.detections
