"""DPSGD's update number for number against Opacus' DPOptimizer (stop 58, third pass).

Every mode equals Opacus on the same model, batch and settings (sigma 0, or the same noise
generator); the conventions that differ (a (B, T) token loss summed per example, Opacus'
loss_reduction='sum') are named by the loss_reduction keyword's message with advice that,
followed, gives Opacus' numbers.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tying.train import DPSGD, grad_sample_module

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
from opacus.optimizers import DPOptimizer  # noqa: E402

# Opacus' own hooks on a first layer whose input needs no gradient (the embedding)
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

V, T, B, D = 11, 5, 6, 8


class _LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.head = nn.Linear(D, V)

    def forward(self, tok):  # (B, T) -> (B, T, V)
        return self.head(torch.tanh(self.emb(tok)))


def _lm(tied=False):
    torch.manual_seed(0)
    model = _LM()
    if tied:
        tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(model)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


def _opacus_run(model, opt, C, steps=1, reduction="mean", gen=None, sigma=0.0):
    gsm = grad_sample_module(model, loss_reduction=reduction)
    dpo = DPOptimizer(
        opt,
        noise_multiplier=sigma,
        max_grad_norm=C,
        expected_batch_size=B,
        loss_reduction=reduction,
        generator=gen,
    )
    x, y = _batch()
    for _ in range(steps):
        dpo.zero_grad()
        F.cross_entropy(gsm(x).reshape(-1, V), y.reshape(-1), reduction=reduction).backward()
        dpo.step()
    gsm._close()
    return model


def _token_mean(out, y):  # one loss per example: Opacus' 'mean' over B*T tokens
    return F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)


def _token_rows(out, y):  # (B, T): summed per example
    return F.cross_entropy(out.transpose(1, 2), y, reduction="none")


def _ours(model, opt, loss_fn, C, mode, steps=1, gen=None, sigma=0.0):
    dp = DPSGD(
        model,
        opt,
        noise_multiplier=sigma,
        max_grad_norm=C,
        sample_rate=B / 100,
        mode=mode,
        generator=gen,
    )
    x, y = _batch()
    for _ in range(steps):
        dp.step(loss_fn, x, y, n_data=100)
    return model


def _gap(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_loss_reduction_keyword_names_token_mean_and_sum():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(
        TypeError,
        match=r"no keyword 'loss_reduction'.*\(B, T\) token loss return its \.mean\(1\).*T times "
        r"Opacus' gradient.*n_data=n.*'sum' divides by nothing.*lr multiplied by "
        r"sample_rate \* n_data",
    ):
        DPSGD(
            model,
            opt,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            sample_rate=0.1,
            loss_reduction="sum",
        )


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_token_loss_advice_gives_opacus_mean(mode):
    # C = 10 clips nothing: the (B, T) rows give each example T = 5 times Opacus' gradient
    base, theirs, mine, rows = _lm(), _lm(), _lm(), _lm()
    _opacus_run(theirs, torch.optim.SGD(theirs.parameters(), lr=1.0), 10.0)
    _ours(mine, torch.optim.SGD(mine.parameters(), lr=1.0), _token_mean, 10.0, mode)
    assert _gap(mine, theirs) < 1e-6
    _ours(rows, torch.optim.SGD(rows.parameters(), lr=1.0), _token_rows, 10.0, mode)
    moved = (rows.head.weight - base.head.weight).norm()
    assert (moved / (theirs.head.weight - base.head.weight).norm()).item() == pytest.approx(T)


def test_sum_advice_gives_opacus_sum():
    # Opacus' 'sum' divides by nothing: lr times sample_rate * n_data (= B here) matches it,
    # momentum and all, over two steps (its token sum is summed per example here too)
    theirs, mine = _lm(), _lm()
    _opacus_run(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9), 1.0, 2, "sum")
    opt = torch.optim.SGD(mine.parameters(), lr=0.1 * (B / 100) * 100, momentum=0.9)
    _ours(mine, opt, _token_rows, 1.0, "vmap", steps=2)
    assert _gap(mine, theirs) < 1e-6
    plain = _lm()
    _ours(
        plain,
        torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9),
        _token_rows,
        1.0,
        "vmap",
        steps=2,
    )
    assert _gap(plain, theirs) > 1e-2  # without the advice: B times smaller steps


_OPTS = {
    "nesterov_wd": lambda ps: torch.optim.SGD(
        ps, lr=0.5, momentum=0.9, weight_decay=0.1, nesterov=True
    ),
    "adamw_groups": lambda ps: torch.optim.AdamW(
        [{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 0.01, "weight_decay": 0.3}]
    ),
}


@pytest.mark.parametrize("opt", sorted(_OPTS))
@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_tied_frozen_noisy_run_equals_opacus(mode, opt):
    # a Plan-tied LM with a frozen bias, sigma 1.3 from one seeded generator, 3 steps
    def run(ours):
        model = _lm(tied=True)
        model.head.bias.requires_grad_(False)
        o = _OPTS[opt](list(model.parameters()))
        gen = torch.Generator().manual_seed(5)
        if ours:
            return _ours(model, o, _token_mean, 0.7, mode, steps=3, gen=gen, sigma=1.3)
        return _opacus_run(model, o, 0.7, steps=3, gen=gen, sigma=1.3)

    theirs, mine = run(False), run(True)
    assert torch.equal(mine.head.bias, _lm().head.bias)
    assert _gap(mine, theirs) < 1e-6


@pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning")
def test_opacus_fixed_batches_divide_by_dataset_over_batches():
    # Opacus' poisson_sampling=False: q = 1 / len(loader), divisor int(N * q) = 25 for
    # 32-row batches of 100 examples; DPSGD(sample_rate=0.25) with n_data=100 matches it
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(100, 4, generator=g), torch.randint(0, 3, (100,), generator=g)
    torch.manual_seed(0)
    theirs = nn.Linear(4, 3)
    mine, ours32 = (nn.Linear(4, 3) for _ in range(2))
    for m in (mine, ours32):
        m.load_state_dict(theirs.state_dict())
    start = theirs.weight.detach().clone()
    gm, opt, loader = PrivacyEngine().make_private(
        module=theirs,
        optimizer=torch.optim.SGD(theirs.parameters(), lr=1.0),
        data_loader=DataLoader(TensorDataset(X, Y), batch_size=32),
        noise_multiplier=0.0,
        max_grad_norm=10.0,
        poisson_sampling=False,
    )
    xb, yb = next(iter(loader))
    F.cross_entropy(gm(xb), yb).backward()
    opt.step()

    def ce(out, y):
        return F.cross_entropy(out, y, reduction="none")

    for m, q in ((mine, 0.25), (ours32, 0.32)):
        dp = DPSGD(
            m,
            torch.optim.SGD(m.parameters(), lr=1.0),
            noise_multiplier=0.0,
            max_grad_norm=10.0,
            sample_rate=q,
        )
        dp.step(ce, xb, yb, n_data=100)
    assert (theirs.weight - mine.weight).abs().max().item() < 1e-6
    ratio = (theirs.weight - start).norm() / (ours32.weight - start).norm()
    assert ratio.item() == pytest.approx(32 / 25, rel=1e-5)
