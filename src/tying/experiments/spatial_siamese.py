"""Siamese towers (seed 000): tie two towers so that distances compare like with like.

- B7 ``siamese``: signature-style verification ("were these written by the same
  person?") of writers never seen in training. Tied towers map both inputs through
  one function into one space; untied towers must learn to agree, from the same data.
  The gradients of both towers land in one tensor, as the sum of the two uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

import tying
from tying.experiments._spatial_common import by_size, log, new_figure, rngs, seeded
from tying.experiments.common import still_gaining
from tying.experiments.registry import Result, Table, experiment
from tying.nn import Siamese
from tying.report.format import format_number


@dataclasses.dataclass(frozen=True)
class SiameseConfig:
    writers: tuple[int, ...]  # training writers; verification is on unseen writers
    seeds: int  # repeats per size: one small training set is a noisy estimate
    steps: int  # full-batch Adam steps on every ordered training pair
    samples: int = 4  # samples per writer
    identity_dim: int = 6  # what identifies a writer ...
    nuisance_dim: int = 18  # ... hidden among nuisance directions (slant, pressure, ...)
    style_noise: float = 0.15  # within-writer variation of the identity part
    embed_dim: int = 8
    test_writers: int = 40
    lr: float = 0.02
    margin: float = 1.0


SIAMESE = {
    "quick": SiameseConfig(writers=(4, 8), seeds=3, steps=100),
    "report": SiameseConfig(writers=(4, 8, 16, 32), seeds=4, steps=150),
}


def _signatures(cfg, writers: int, mix: np.ndarray, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature vectors: a writer's identity (+ small style noise) and nuisance, mixed."""
    ident = rng.standard_normal((writers, cfg.identity_dim))
    n = writers * cfg.samples
    z = np.repeat(ident, cfg.samples, axis=0)
    z = z + cfg.style_noise * rng.standard_normal((n, cfg.identity_dim))
    feats = np.concatenate([z, rng.standard_normal((n, cfg.nuisance_dim))], axis=1) @ mix
    label = torch.arange(writers).repeat_interleave(cfg.samples)
    return torch.tensor(feats, dtype=torch.float32), label


def _pairs(label: torch.Tensor):
    i, j = torch.meshgrid(torch.arange(len(label)), torch.arange(len(label)), indexing="ij")
    keep = i != j  # every ordered pair: each tower sees every sample
    i, j = i[keep], j[keep]
    return i, j, label[i] == label[j]


def _balanced_contrastive(d: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    # contrastive loss with matching and non-matching pairs weighted equally
    return d[same].square().mean() + (margin - d[~same]).clamp_min(0).square().mean()


def _balanced_accuracy(d: torch.Tensor, same: torch.Tensor, threshold: float) -> float:
    pred = d < threshold
    return 0.5 * float(pred[same].float().mean() + (~pred[~same]).float().mean())


def _verify(cfg, tied: bool, train, test, seed: int) -> tuple[float, bool]:
    """Train one pair of towers; returns the test balanced accuracy and whether the run was
    still gaining at its step budget (best loss down over 10% in its last fifth)."""
    (x, y), (xt, yt) = train, test
    i, j, same = _pairs(y)
    it, jt, same_t = _pairs(yt)
    with seeded(seed):
        net = Siamese(nn.Linear(x.shape[1], cfg.embed_dim), tied=tied)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    losses = []
    for _ in range(cfg.steps):
        opt.zero_grad()
        loss = _balanced_contrastive(net.distance(x[i], x[j]), same, cfg.margin)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        d_train, d_test = net.distance(x[i], x[j]), net.distance(xt[it], xt[jt])
        # the decision threshold is fitted on training pairs only
        candidates = torch.quantile(d_train, torch.linspace(0.02, 0.98, 49))
        best = max(candidates.tolist(), key=lambda t: _balanced_accuracy(d_train, same, t))
        return _balanced_accuracy(d_test, same_t, best), still_gaining(losses)


def _gradient_is_sum_of_uses(seed: int, dim: int) -> float:
    """max |grad(shared) − (grad via left + grad via right)| for one contrastive loss."""
    gen, _ = rngs(seed)
    a, b = torch.randn(5, dim, generator=gen), torch.randn(5, dim, generator=gen)
    same = torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool)
    with seeded(seed):
        net = Siamese(nn.Linear(dim, 3))
    _balanced_contrastive(net.distance(a, b), same, 1.0).backward()
    w = net.left.weight
    # the same loss with the two uses split into two leaf copies of w
    wl, wr = (w.detach().clone().requires_grad_(True) for _ in range(2))
    bias = net.left.bias.detach()
    d = (nn.functional.linear(a, wl, bias) - nn.functional.linear(b, wr, bias)).norm(dim=1)
    _balanced_contrastive(d, same, 1.0).backward()
    return float((w.grad - (wl.grad + wr.grad)).abs().max())


@experiment("siamese")
def siamese(size: str, seed: int) -> Result:
    cfg = by_size(SIAMESE, size)
    dim = cfg.identity_dim + cfg.nuisance_dim
    acc = {
        "tied": np.zeros((len(cfg.writers), cfg.seeds)),
        "untied": np.zeros((len(cfg.writers), cfg.seeds)),
    }
    gaining = 0
    for r in range(cfg.seeds):
        _, rng = rngs(seed * 1000 + r)
        mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)  # one "scanner" for all writers
        test = _signatures(cfg, cfg.test_writers, mix, rng)
        for k, w in enumerate(cfg.writers):
            train = _signatures(cfg, w, mix, rng)
            for name in acc:
                acc[name][k, r], still = _verify(cfg, name == "tied", train, test, seed * 1000 + r)
                gaining += still
    mean = {name: a.mean(axis=1) for name, a in acc.items()}
    gap = mean["tied"] - mean["untied"]
    grad_err = _gradient_is_sum_of_uses(seed, dim)
    with seeded(seed):
        probe = Siamese(nn.Linear(dim, cfg.embed_dim))
        loose = Siamese(nn.Linear(dim, cfg.embed_dim), tied=False)
    x = _signatures(cfg, 3, np.eye(dim), np.random.default_rng(seed))[0]
    with torch.no_grad():
        self_tied = float(probe.distance(x, x).max())
        self_untied = float(loose.distance(x, x).min())
    c = tying.count(probe)
    rows = [
        {
            "training writers": w,
            "tied accuracy": float(mean["tied"][k]),
            "untied accuracy": float(mean["untied"][k]),
            "gap": float(gap[k]),
        }
        for k, w in enumerate(cfg.writers)
    ]
    passed = (
        float(gap.mean()) > 0.0
        and float(mean["tied"][-1]) >= 0.75
        and grad_err < 1e-6
        and self_tied == 0.0
        and self_untied > 0.0
    )
    log.info("siamese: mean gap %.3f, grad err %.2g", gap.mean(), grad_err)

    fig, (ax,) = new_figure(width=5.2, height=3.6)
    for name, color in (("tied", "#4c72b0"), ("untied", "#c44e52")):
        ax.plot(cfg.writers, mean[name], "o-", color=color, label=f"{name} towers")
        for r in range(cfg.seeds):
            ax.plot(cfg.writers, acc[name][:, r], ".", color=color, alpha=0.35)
    ax.axhline(0.5, color="gray", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(cfg.writers, [str(w) for w in cfg.writers])
    ax.minorticks_off()
    ax.set_xlabel(f"training writers ({cfg.samples} samples each)")
    ax.set_ylabel("verification accuracy, unseen writers")
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=8)
    ax.set_title("Same or different writer? (balanced accuracy)")
    return Result(
        tables=[
            Table(
                f"Verification of {cfg.test_writers} unseen writers, mean of {cfg.seeds} runs", rows
            )
        ],
        figures={"verification": fig},
        passed=passed,
        measured={
            "mean accuracy gap (tied − untied)": float(gap.mean()),
            "tied accuracy at most writers": float(mean["tied"][-1]),
            "max |grad − (left use + right use)|": grad_err,
            "d(x, x) tied / untied": (self_tied, self_untied),
            "tied logical/physical params": (c.logical, c.physical),
            "runs still gaining at the step budget": f"{gaining} of {acc['tied'].size * 2}",
        },
        key_figure=f"tied {format_number(mean['tied'].mean())} vs untied {format_number(mean['untied'].mean())} "
        "verification accuracy",
        notes="Each writer is a point in a 6-d identity space hidden in 24-d features with 18 "
        "nuisance directions; linear towers trained with a contrastive loss on every ordered "
        "pair. Check: tied beats untied on average, reaches ≥ 0.75 with the most writers, its "
        "gradient equals the sum of the two towers' gradients (< 1e-6), and d(x, x) = 0 only "
        "when tied. "
        f"The accuracies are at a budget of {cfg.steps} full-batch Adam steps: "
        f"{gaining} of {acc['tied'].size * 2} runs were still gaining at the end (best training "
        "loss down over 10% in the last fifth). Trained on, the gap narrows but stays positive "
        "(stop 36; quick, seed 0: 0.071 at 100 steps, 0.033 at 400, 0.028 at 1,000, 0.032 at "
        "3,000; seed 1: 0.070 at 100, 0.023 at 3,000), so the gap shown overstates the "
        "settled one two- to threefold.",
    )
