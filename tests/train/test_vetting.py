"""The forward's rows are its examples (stop 31): one probe for mode="vmap" and ghost clipping.

``mode="vmap"`` runs the forward one example at a time (a batch of one). A forward that
mixes the batch (``h - h.mean(0)``, a BatchNorm without running statistics, a forward
hook that centres a layer's output) then got each example's gradient of another model
than the one trained, with no error: ``h - h.mean(0)`` gave every layer before it a
gradient of exactly 0. It is refused now, by ghost clipping's probe, moved to
:mod:`tying.train._vetting` and shared.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying.train.per_example as pex
from tests.train.models import ce, loop_grads, mse
from tying.train import DPSGD, ghost_norms, per_example_grads, per_example_norms, private_grad
from tying.train._vetting import refuse_mixing_forward


class Center(nn.Module):
    def forward(self, h):
        return h - h.mean(0, keepdim=True)


class ReadsNext(nn.Module):
    """Example b reads example b + 1 (the last reads no one): only a change of the last
    example moves another output."""

    def forward(self, h):
        return h + torch.cat([h[1:], h.new_zeros(1, h.shape[1])])


def _center_hook(mod, args, out):
    return out - out.mean(0)


def _batch(B=5, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, d, generator=g, dtype=torch.float64), torch.randint(
        0, 2, (B,), generator=g
    )


MIXING = {
    "center": (lambda: nn.Sequential(nn.Linear(3, 4), Center(), nn.Tanh(), nn.Linear(4, 2)),
               r"module 1 \(Center\)"),
    "reads-next": (lambda: nn.Sequential(nn.Linear(3, 4), ReadsNext(), nn.Linear(4, 2)),
                   r"module 1 \(ReadsNext\)"),
    # per example (1, C, 2, 2) still has 4 values a channel: no error, wrong statistics
    "batchnorm2d-without-running-stats": (
        lambda: nn.Sequential(nn.Unflatten(1, (3, 1, 1)), nn.Upsample(scale_factor=2),
                              nn.BatchNorm2d(3, track_running_stats=False).eval(),
                              nn.Flatten(), nn.Linear(12, 2)),
        r"module 2 \(BatchNorm2d\)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MIXING))
def test_vmap_refuses_a_forward_that_mixes_examples_naming_the_module(name):
    make, where = MIXING[name]
    torch.manual_seed(0)
    model = make().double()
    x, y = _batch()
    with pytest.raises(ValueError, match=rf"per-example gradients: the forward mixes examples.*"
                       rf"{where}.*batch of one.*GroupNorm/LayerNorm.*ModuleValidator"):  # fmt: skip
        per_example_grads(model, ce, x, y)


@pytest.mark.parametrize("name", list(MIXING))
def test_a_refused_vmap_step_leaves_the_model_and_the_step_count_as_they_were(name):
    torch.manual_seed(0)
    model = MIXING[name][0]().double()
    x, y = _batch()
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="the forward mixes examples"):
        dp.step(ce, x, y)
    assert dp.steps == 0 and dp.history == []
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="the forward mixes examples"):
        private_grad(model, ce, x, y, max_grad_norm=1.0, noise_multiplier=0.0)


def test_a_forward_hook_that_mixes_on_a_model_of_safe_types_is_refused_at_any_size(monkeypatch):
    """A hook sends a model of torch's own types to vmap(grad(...)) (the expanded way's
    guard); small or past EXPAND_MAX_ELEMENTS, the hook ran on a batch of one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    model[0].register_forward_hook(_center_hook)
    x, y = _batch()
    for limit in (pex.EXPAND_MAX_ELEMENTS, 1):
        monkeypatch.setattr(pex, "EXPAND_MAX_ELEMENTS", limit)
        with pytest.raises(ValueError, match=r"mixes examples.*module 0 \(Linear\)"):
            per_example_grads(model, ce, x, y)


def test_ghost_refuses_a_forward_in_which_an_example_reads_the_next():
    """The probe gave example 0 another input only; no other example reads example 0
    here, so the norms were each example's own of nothing, silently (stop 31)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), ReadsNext(), nn.Linear(4, 2)).double()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"ghost clipping: the forward mixes examples: giving "
                       r"example 4 .*module 1 \(ReadsNext\)"):  # fmt: skip
        ghost_norms(model, ce, x, y)


class MaskedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, mask, h):
        return self.lin(h * mask)


@pytest.mark.parametrize("case", ["tokens-(B,)", "bool-mask-first"])
def test_ghost_probes_1d_and_bool_inputs(case):
    """The probe measured example distances with (t - t[:1]).flatten(1): a (B,) input of
    tokens failed with IndexError, a bool mask with torch's bool-subtraction error."""
    torch.manual_seed(0)
    if case == "tokens-(B,)":
        model = nn.Sequential(nn.Embedding(7, 4), nn.Tanh(), nn.Linear(4, 3)).double()
        x, y = torch.tensor([0, 1, 2, 6, 3]), torch.tensor([1, 2, 0, 1, 2])
    else:
        model = MaskedLinear().double()
        g = torch.Generator().manual_seed(1)
        x = (torch.rand(5, 4, generator=g) > 0.5, torch.randn(5, 4, generator=g).double())
        y = torch.randint(0, 2, (5,), generator=g)
    if isinstance(x, tuple):  # loop_grads takes one input
        want = torch.stack([
            torch.cat([g.flatten() for g in torch.autograd.grad(
                ce(model(*(t[b : b + 1] for t in x)), y[b : b + 1]).sum(), model.parameters()
            )]).norm()
            for b in range(5)
        ])  # fmt: skip
    else:
        want = per_example_norms(loop_grads(model, ce, x, y))
    torch.testing.assert_close(ghost_norms(model, ce, x, y), want)
    torch.testing.assert_close(per_example_norms(per_example_grads(model, ce, x, y)), want)


def test_ghost_still_refuses_a_mixing_forward_with_a_constant_first_input():
    """The example to swap in is taken from the first input in which examples differ: a
    mask equal on every row would have made the swap change nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), Center(), nn.Linear(4, 2)).double()

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, mask, h):
            return self.net(h * mask)

    x = (torch.ones(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64))
    y = torch.randint(0, 2, (5,))
    for fn in (ghost_norms, per_example_grads):
        with pytest.raises(ValueError, match=r"mixes examples.*module net\.1 \(Center\)"):
            fn(Masked(), ce, x, y)


class CountingCenter(nn.Module):
    def __init__(self, mix=False):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.calls = 0
        self.mix = mix

    def forward(self, x):
        self.calls += 1
        h = self.lin(x)
        return h - h.mean(0) if self.mix else h.tanh() * 1.5  # (the tanh: not row-checked)


@pytest.mark.filterwarnings("ignore:DPSGD.step without n_data:UserWarning")  # sizes vary
def test_the_vmap_probe_runs_once_per_signature_and_not_for_torch_types():
    torch.manual_seed(0)
    model = CountingCenter().double()
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    pe = dp._vmap_plan()
    pe._rows_stopped = True  # the vmapped way (the rows way needs no probe)
    x, y = _batch()
    dp.step(ce, x, y)
    first = model.calls
    dp.step(ce, x, y)
    assert model.calls - first == 1  # the second step: its own forward, no probe forwards
    dp.step(ce, *_batch(B=4))  # another batch size: the same signature
    assert len(pe._vetted) == 1
    model.eval()  # another set of training flags: probed again
    dp.step(ce, x, y)
    assert len(pe._vetted) == 2
    # a model of torch's own module types: no probe at all
    plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    pe = pex._PerExample(plain)
    pe(ce, (x,), y)
    assert pe._vetted == set()


def test_a_forward_written_for_one_example_still_runs_under_vmap():
    """A forward that fails on the batch has no batched result to differ from: the probe
    gives no verdict and vmap takes each example's gradient as before."""

    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):  # (1, 3) -> (1, 2) only
            return self.lin(x.view(-1)).tanh().view(1, -1)

    torch.manual_seed(0)
    model = One().double()
    x, y = _batch()
    got = per_example_grads(model, ce, x, y)
    want = loop_grads(model, ce, x, y)
    for n in want:
        torch.testing.assert_close(got[n], want[n])


def test_the_probe_leaves_random_state_and_buffers_as_they_were():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model = model.double()
    x = _batch()[0]
    before = torch.random.get_rng_state()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"module 2 \(BatchNorm1d\)"):
        refuse_mixing_forward(model, (x,), 5, "test")
    assert torch.equal(torch.random.get_rng_state(), before)
    # each probe forward restores the buffers itself (stop 32 round 4: every probe starts
    # from the same state; the callers' buffers_kept no longer needed for this)
    assert all(torch.equal(stats[k], v) for k, v in model.state_dict().items())
    model.eval()  # running statistics: per example; dropout off
    assert refuse_mixing_forward(model, (x,), 5, "test") is True
    assert refuse_mixing_forward(model, (x[:1].expand(5, 3),), 5, "test") is False  # no probe


def test_ghost_dropout_model_is_not_taken_for_mixing_with_mse():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 2)).double()
    x, y = torch.randn(6, 3).double(), torch.randn(6, 2).double()
    assert ghost_norms(m, mse, x, y).shape == (6,)
    assert per_example_grads(m, mse, x, y)["0.weight"].shape == (6, 8, 3)


@pytest.mark.parametrize("frozen", [False, True])
def test_an_embedding_with_max_norm_is_refused_before_anything_runs(frozen):
    """Its forward renormalises the weight in place, which vmap cannot run (torch's
    "embedding_renorm_ ... is not possible" at the vmapped forward); a probe forward on
    the batch would have renormalised the model's weight before that error."""

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(7, 4, max_norm=0.5), nn.Linear(4, 3)

        def forward(self, tok):
            return self.head(self.emb(tok).mean(1))

    torch.manual_seed(0)
    model = Bag().double()
    model.emb.weight.requires_grad_(not frozen)
    before = model.emb.weight.detach().clone()
    tok, y = torch.randint(0, 7, (5, 4)), torch.randint(0, 3, (5,))
    with pytest.raises(ValueError, match=r"emb \(Embedding\) has max_norm=0.5.*max_norm=None"):
        per_example_grads(model, ce, tok, y)
    assert torch.equal(model.emb.weight, before)


class _BagModel(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.bag, self.head = nn.EmbeddingBag(7, 4, mode="sum", **kwargs), nn.Linear(4, 3)

    def forward(self, tok):
        return self.head(self.bag(tok))


@pytest.mark.parametrize("frozen", [False, True])
def test_an_embedding_bag_with_max_norm_is_refused_before_anything_runs(frozen):
    """Stop 33: the Embedding check (stop 31) missed its sibling: per_example_grads on an
    EmbeddingBag(max_norm=0.5) failed with torch's "embedding_renorm_ ... is not possible"
    and left the weight renormalised by the probe forward (rows moved by 1.7)."""
    torch.manual_seed(0)
    model = _BagModel(max_norm=0.5).double()
    model.bag.weight.requires_grad_(not frozen)
    before = model.bag.weight.detach().clone()
    tok, y = torch.randint(0, 7, (5, 4)), torch.randint(0, 3, (5,))
    with pytest.raises(ValueError, match=r"bag \(EmbeddingBag\) has max_norm=0.5.*max_norm=None"):
        per_example_grads(model, ce, tok, y)
    assert torch.equal(model.bag.weight, before)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch's vmap fallback
@pytest.mark.parametrize("bag", [False, True])
def test_a_trainable_sparse_embedding_is_refused_by_name_and_a_frozen_one_runs(bag):
    """Stop 33: sparse=True failed with torch's "Could not run 'aten::view' with arguments
    from the 'SparseCPU' backend", naming no layer."""
    torch.manual_seed(0)
    if bag:
        model, kind = _BagModel(sparse=True).double(), "EmbeddingBag"
    else:
        model = nn.Sequential(nn.Embedding(7, 4, sparse=True), nn.Flatten(), nn.Linear(16, 3))
        model, kind = model.double(), "Embedding"
    first = "bag" if bag else "0"
    tok, y = torch.randint(0, 7, (5, 4)), torch.randint(0, 3, (5,))
    with pytest.raises(ValueError, match=rf"{first} \({kind}\) has sparse=True.*sparse=False"):
        per_example_grads(model, ce, tok, y)
    model.get_submodule(first).weight.requires_grad_(False)
    got = per_example_grads(model, ce, tok, y)
    want = loop_grads(model, ce, tok, y)
    for n, g in got.items():
        torch.testing.assert_close(g, want[n], rtol=1e-10, atol=1e-12)


# -- stop 32 round 4: a buffer the forward writes from the batch ------------------------


class EMAInPlace(nn.Module):
    """A running mean of the inputs (an observation normaliser), not used in the output."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(3, dtype=torch.float64))

    def forward(self, x):
        with torch.no_grad():
            self.mean.mul_(0.9).add_(0.1 * x.mean(0))
        return x


class EMAReassigned(EMAInPlace):
    def forward(self, x):
        self.mean = 0.9 * self.mean + 0.1 * x.detach().mean(0)
        return x


class KeepsInput(EMAInPlace):
    def forward(self, x):
        self.mean = x.detach().clone()  # the private batch itself, saved with the model
        return x


class Counter(nn.Module):
    """A step counter: written at every forward, from no data."""

    def __init__(self):
        super().__init__()
        self.register_buffer("n", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.n += 1
        return x


class Sometimes(EMAInPlace):
    """Writes the batch mean only once ``write`` is set (after the probe of its signature)."""

    write = False

    def forward(self, x):
        if self.write:
            with torch.no_grad():
                self.mean.copy_(x.mean(0))
        return x


def _dp(model, mode):
    return DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                 max_grad_norm=1.0, sample_rate=0.1, mode=mode)  # fmt: skip


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, before):
    return model.state_dict().keys() == before.keys() and all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
@pytest.mark.parametrize("layer", [EMAInPlace, EMAReassigned, KeepsInput])
def test_a_buffer_written_from_the_batch_is_refused_before_it_is_written(layer, mode):
    """It trained with no error (ghost; vmap when reassigned, and vmap's probe forward left
    the private batch in the model): un-noised statistics of the private data, outside ε."""
    torch.manual_seed(0)
    model = nn.Sequential(layer(), nn.Linear(3, 2)).double()
    x, y = torch.randn(8, 3).double(), torch.randint(0, 2, (8,))
    dp, before = _dp(model, mode), _state(model)
    with pytest.raises(
        ValueError,
        match=rf"writes buffer 0.mean \({layer.__name__}\) from the batch.*"
        r"Refused before anything was written.*track_running_stats=False",
    ):
        dp.step(ce, x, y, n_data=80)
    assert _same_state(model, before) and dp.steps == 0 and dp.history == []


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_instance_norm_running_statistics_are_refused_by_name(mode):
    """vmap failed with torch's "Batch norm got a batched tensor ..." naming no module;
    ghost clipping updated the running statistics from the private batch."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 5)
            self.norm = nn.InstanceNorm1d(2, track_running_stats=True)
            self.out = nn.Linear(10, 2)

        def forward(self, x):  # (B, 2, 5)
            return self.out(self.norm(self.lin(x)).flatten(1))

    model = Net().double()
    x, y = torch.randn(8, 2, 5).double(), torch.randint(0, 2, (8,))
    before = _state(model)
    with pytest.raises(ValueError, match=r"buffer norm.running_mean \(InstanceNorm1d\)"):
        private_grad(model, ce, x, y, max_grad_norm=1.0, noise_multiplier=1.0, mode=mode)
    assert _same_state(model, before)
    model.norm.eval()  # frozen statistics: per example, nothing written
    private_grad(model, ce, x, y, max_grad_norm=1.0, noise_multiplier=1.0, mode=mode)
    assert _same_state(model, before)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_buffer_written_from_no_data_trains(mode):
    torch.manual_seed(0)
    model = nn.Sequential(Counter(), nn.Linear(3, 2)).double()
    x, y = torch.randn(8, 3).double(), torch.randint(0, 2, (8,))
    dp = _dp(model, mode)
    for _ in range(3):
        dp.step(ce, x, y, n_data=80)
    assert int(model[0].n) == 3  # one forward a step counted (the probes left it alone)


def test_spectral_norm_power_iteration_is_neither_refused_nor_taken_for_mixing():
    """Its u, v are updated from the weight only. After one step (the first at a batch of
    one: no probe) the probe's forwards each moved them further, and the others'
    outputs moved by 1.6e-4: refused as "the forward mixes examples"."""
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Linear(3, 4)), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    dp = _dp(model, "vmap")
    for b in (1, 8, 8, 3):
        dp.step(ce, x[:b], y[:b], n_data=80)
    assert dp.steps == 4


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_buffer_written_now_and_then_is_refused_at_that_step(mode):
    torch.manual_seed(0)
    model = nn.Sequential(Sometimes(), nn.Linear(3, 2)).double()
    x, y = torch.randn(8, 3).double(), torch.randint(0, 2, (8,))
    dp = _dp(model, mode)
    dp.step(ce, x, y, n_data=80)  # probed: nothing written
    model[0].write = True
    params = [p.clone() for p in model.parameters()]
    match = (
        r"wrote buffer 0.mean \(Sometimes\) in this step.*no parameter changed.*"
        r"already updated by this step's forward"
        if mode == "ghost"  # torch's own error named no module:
        else r"0 \(Sometimes\) failed under torch.func.vmap on an in-place write.*\['mean'\]"
    )
    with pytest.raises(ValueError, match=match):
        dp.step(ce, x, y, n_data=80)
    assert dp.steps == 1
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))


class SometimesReassigned(EMAInPlace):
    """Reassigns the buffer to the batch mean only once ``write`` is set."""

    write = False

    def forward(self, x):
        if self.write:
            self.mean = x.mean(0).detach()
        return x


def test_a_buffer_reassigned_now_and_then_is_put_back_and_said_so():
    """The message said "written in place: restore it from a checkpoint" for a reassigned
    buffer too (it was asked after the buffer had been put back)."""
    torch.manual_seed(0)
    model = nn.Sequential(SometimesReassigned(), nn.Linear(3, 2)).double()
    x, y = torch.randn(8, 3).double(), torch.randint(0, 2, (8,))
    dp = _dp(model, "ghost")
    dp.step(ce, x, y, n_data=80)
    kept = model[0].mean
    model[0].write = True
    with pytest.raises(
        ValueError, match=r"wrote buffer 0.mean .*reassigned buffer was put back"
    ) as err:
        dp.step(ce, x, y, n_data=80)
    assert "already updated" not in str(err.value)
    assert model[0].mean is kept


def test_an_empty_batch_does_not_let_a_buffer_written_from_the_batch_through():
    """No verdict is drawn from an empty batch (an EMA of nothing writes NaN whatever the
    inputs: taken for a write that does not depend on the data, for every later batch)."""
    from tying.train._vetting import BufferWrites

    torch.manual_seed(0)
    model = nn.Sequential(EMAInPlace(), nn.Linear(3, 2)).double()
    x = torch.randn(8, 3).double()
    writes = BufferWrites(model)
    assert writes.before((x[:0],), 0, "test") is None  # no probe, nothing to check
    with pytest.raises(ValueError, match=r"test: the forward writes buffer 0.mean"):
        writes.before((x,), 8, "test")
