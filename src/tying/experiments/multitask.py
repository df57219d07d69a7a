"""C6 ``multitask``: hard and soft sharing are the two ends of one dial λ (seed 002).

Eight regression tasks in two families on a known task graph (a chain inside
each family, no edge between them). Task ``k`` has its own weight vector
``θ_k = μ_family + τ ξ_k`` and its own intercept; each task has only a few
noisy examples. Each task's model is a trunk (``θ_k``, the part on the dial)
and a head (its own intercept, never shared).

- *independent*: every trunk free (λ = 0): unbiased, but noisy;
- *soft sharing*: ``λ/2 Σ_(i,j)∈E ‖θ_i − θ_j‖²`` over the graph's edges;
- *hard sharing*: one trunk per connected component of the graph, declared with
  a ``tying.Plan`` (``MultiTaskNet.share_hard``): pools each family's data but
  ignores the within-family spread ``τ``;
- *fully shared*: one trunk for all eight tasks: the two families are different,
  so it is badly biased.

The check: the soft curve starts at independent (small λ) and ends at hard
sharing (large λ), and its best point beats independent and fully shared, and
is at least as good as hard sharing (the within-family spread is real).
Averaged over several independent draws of the tasks.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

import tying
from tying.experiments.common import largest
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.report.format import format_number
from tying.train import MultiTaskNet, components, fit_multitask

log = logging.getLogger("tying.experiments")


@dataclasses.dataclass(frozen=True)
class MultitaskConfig:
    lams: tuple[float, ...] = (1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1e3)  # the dial
    trials: int = 4  # independent draws of the eight tasks; errors are averaged over them
    n_tasks: int = 8  # two families of four
    dim: int = 20  # input dimension = trunk size per task
    n_train: int = 30  # examples per task: barely above dim, so independent fits are noisy
    n_test: int = 500  # held-out examples per task
    spread: float = 0.2  # τ: how far a task's θ sits from its family's mean
    noise: float = 1.0  # label noise std
    # L-BFGS iterations, a cap: the penalised least squares is smooth and small, and L-BFGS
    # stops at its own tolerance well before 500 (stop 35: a cap of 100, 50 at quick, stopped
    # the large-λ fits still moving; the large-λ-vs-hard gap read 0.0017 instead of 0.0033)
    lbfgs_iters: int = 500
    # a fit counts as unconverged when restarting L-BFGS from it moves its test MSE by more
    # than this (relative); float32 fits at λ = 1e3 move by about 1e-3 when restarted
    moved_tol: float = 1e-2


CONFIGS = {
    "quick": MultitaskConfig(lams=(1e-3, 0.3, 1.0, 1e3), trials=2),
    "report": MultitaskConfig(),
}


class Intercept(nn.Module):
    """A task's own head: its intercept."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, h):
        return h + self.bias


def _tasks(cfg: MultitaskConfig, g: torch.Generator):
    family = [k * 2 // cfg.n_tasks for k in range(cfg.n_tasks)]
    mu = [torch.randn(cfg.dim, generator=g) for _ in range(2)]
    train, test = [], []
    for k in range(cfg.n_tasks):
        theta = mu[family[k]] + cfg.spread * torch.randn(cfg.dim, generator=g)
        b = torch.randn(1, generator=g)
        X = torch.randn(cfg.n_train, cfg.dim, generator=g)
        Xt = torch.randn(cfg.n_test, cfg.dim, generator=g)
        noise = cfg.noise * torch.randn(cfg.n_train, 1, generator=g)
        train.append((X, (X @ theta)[:, None] + b + noise))
        test.append((Xt, (Xt @ theta)[:, None] + b))
    # the known task graph: a chain inside each family
    edges = [(k, k + 1) for k in range(cfg.n_tasks - 1) if family[k] == family[k + 1]]
    return train, test, edges


def _test_mse(net: MultiTaskNet, test) -> float:
    with torch.no_grad():
        return float(
            np.mean([((net(X, k) - y) ** 2).mean().item() for k, (X, y) in enumerate(test)])
        )


def _trial(cfg: MultitaskConfig, seed: int) -> tuple[dict, dict, dict, int]:
    g = torch.Generator().manual_seed(seed)
    train, test, edges = _tasks(cfg, g)
    trunk = nn.Linear(cfg.dim, 1, bias=False)
    nn.init.zeros_(trunk.weight)  # every task, and every setting of the dial, starts here
    base = MultiTaskNet(trunk, Intercept(), cfg.n_tasks)

    moved = []  # relative test-MSE change when L-BFGS is restarted from each fit

    def fit(net, lam=0.0):
        fit_multitask(
            net, train, edges=edges, lam=lam, steps=cfg.lbfgs_iters, lr=1.0, method="lbfgs"
        )
        # convergence check: a converged fit stays put when L-BFGS is run again from it
        # (cheap: it stops at its tolerance within a few evaluations)
        again = fit_multitask(
            copy.deepcopy(net),
            train,
            edges=edges,
            lam=lam,
            steps=cfg.lbfgs_iters,
            lr=1.0,
            method="lbfgs",
        )
        before = _test_mse(net, test)
        moved.append(abs(_test_mse(again, test) - before) / before)
        return net

    baselines, counts = {}, {}
    for name, groups in [
        ("independent", None),
        ("hard (graph components)", components(cfg.n_tasks, edges)),
        ("fully shared", [list(range(cfg.n_tasks))]),
    ]:
        net = copy.deepcopy(base)
        if groups is not None:
            net.share_hard(groups)
        baselines[name] = _test_mse(fit(net), test)
        counts[name] = tying.count(net).physical
    soft = {lam: _test_mse(fit(copy.deepcopy(base), lam), test) for lam in cfg.lams}
    return baselines, soft, counts, moved


def _figure(cfg, soft_all: np.ndarray, base_mean: dict[str, float]) -> Figure:
    fig = Figure(figsize=(6.2, 4.0), layout="constrained")
    ax = fig.subplots()
    lams = np.array(cfg.lams)
    mean, lo, hi = soft_all.mean(0), soft_all.min(0), soft_all.max(0)
    ax.fill_between(lams, lo, hi, color="C0", alpha=0.2, lw=0)
    ax.plot(lams, mean, "o-", color="C0", label="soft sharing (Laplacian, λ)")
    styles = {
        "independent": ("C3", "--"),
        "hard (graph components)": ("C2", "--"),
        "fully shared": ("C7", ":"),
    }
    for name, value in base_mean.items():
        color, ls = styles[name]
        ax.axhline(value, color=color, ls=ls, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("λ (soft-sharing strength)")
    ax.set_ylabel("test MSE (mean over tasks and draws)")
    ax.set_title("C6: one dial from independent to hard sharing")
    ax.legend(fontsize=8)
    return fig


@experiment("multitask")
def multitask(size: str, seed: int) -> Result:
    check_size(size)
    cfg = CONFIGS[size]
    trials = [_trial(cfg, seed * 1000 + t) for t in range(cfg.trials)]
    names = list(trials[0][0])
    moved = np.array([m for t in trials for m in t[3]])
    moving = int((moved > cfg.moved_tol).sum())
    base_all = {n: np.array([t[0][n] for t in trials]) for n in names}
    soft_all = np.array([[t[1][lam] for lam in cfg.lams] for t in trials])  # (trials, lams)
    base_mean = {n: float(v.mean()) for n, v in base_all.items()}
    soft_mean = soft_all.mean(0)
    best = int(soft_mean.argmin())
    indep, hard, full = (base_mean[n] for n in names)
    small_end = abs(soft_mean[0] - indep) / indep
    large_end = abs(soft_mean[-1] - hard) / hard
    measured = {
        "independent_mse": indep,
        "hard_mse": hard,
        "fully_shared_mse": full,
        "soft_best_mse": float(soft_mean[best]),
        "soft_best_lambda": cfg.lams[best],
        "soft_smallest_lambda_vs_independent_rel": float(small_end),
        "soft_largest_lambda_vs_hard_rel": float(large_end),
        "fits not converged (restart moves test MSE > moved_tol)": f"{moving} of {moved.size}",
        "largest relative test-MSE change on restarting L-BFGS": largest(moved.tolist()),
    }
    passed = bool(
        moving == 0  # a verdict on fits that had not converged is not one
        and small_end <= 0.10
        and large_end <= 0.05
        and soft_mean[best] < indep
        and soft_mean[best] < full
        and soft_mean[best] <= hard
    )
    counts = trials[0][2]
    rows = [
        {"model": n, "physical trunk+head params": counts[n], "test MSE": base_mean[n]}
        for n in names
    ]
    rows += [
        {
            "model": f"soft, λ = {lam:g}",
            "physical trunk+head params": counts["independent"],
            "test MSE": float(m),
        }
        for lam, m in zip(cfg.lams, soft_mean)
    ]
    log.info("multitask: %s", measured)
    return Result(
        tables=[Table("Test MSE (mean over draws)", rows)],
        figures={"multitask_dial": _figure(cfg, soft_all, base_mean)},
        passed=passed,
        measured=measured,
        key_figure=(
            f"test MSE: independent {format_number(indep)}, soft best {format_number(soft_mean[best])} (λ={cfg.lams[best]:g}), "
            f"hard {format_number(hard)}, fully shared {format_number(full)}"
        ),
        notes=(
            "Pass: the soft curve is within 10% of independent at the smallest λ and within 5% "
            "of hard sharing at the largest, and its best point beats independent and fully "
            "shared and is no worse than hard sharing. Every fit is full-batch L-BFGS to its "
            f"own tolerance, capped at {cfg.lbfgs_iters} iterations, and restarted once from its result "
            f"to check it: {moving} of {moved.size} fits moved their test MSE by more than "
            f"{cfg.moved_tol:g} (relative) on the restart (largest change {format_number(moved.max())}); "
            "the numbers shown are those of the first run."
        ),
    )
