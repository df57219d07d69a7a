"""D5 ``mechanistic-vs-deep``: a deep model wins in distribution, a mechanistic one out of it (seed 004).

Synthetic promoters: a 10-bp RNA-polymerase site. The "true" biology is a
thermodynamic model: the site's binding free energy is a sum of per-position,
per-base costs relative to the consensus (an energy matrix, in kT), plus a few
weak pairwise (epistatic) terms between neighbouring positions; expression is
the probability that the polymerase is bound,
``log p = −log(1 + exp(E − μ))``, measured with noise.

- *mechanistic*: the thermodynamic model with an additive energy matrix and a
  chemical potential μ (41 parameters; one energy per base and position is the
  tie: every sequence reads the same matrix). It has the right causal structure
  but misses the epistasis.
- *deep*: an MLP on the one-hot sequence (7,000+ parameters).

Both are trained on a mutagenesis library of sequences 1-3 mutations from the
consensus (in distribution) and tested on new 1-3-mutation sequences and on
sequences with 7-10 mutations (out of distribution: weak promoters that the
library never showed). The check: the deep model has the lower error in
distribution; out of distribution its error is more than twice the
mechanistic model's.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from tying.experiments.registry import Result, Table, check_size, experiment
from tying.report.format import format_number

log = logging.getLogger("tying.experiments")


@dataclasses.dataclass(frozen=True)
class MechConfig:
    site: int = 10  # binding-site length (bp)
    n_train: int = 2000  # library size
    n_test: int = 1000  # test sequences per distribution
    train_mutations: tuple[int, int] = (1, 3)  # the library: 1-3 mutations from consensus
    ood_mutations: tuple[int, int] = (7, 10)  # weak promoters the library never showed
    cost_range: tuple[float, float] = (0.5, 3.0)  # kT cost of a mutation at a position
    epistasis: float = 0.5  # std of the pairwise terms (kT) the additive model misses
    n_pairs: int = 5  # neighbouring position pairs that interact
    mu: float = 3.0  # chemical potential: the consensus site is bound with p ≈ 0.95
    noise: float = 0.1  # measurement noise on log expression
    trials: int = 3  # independent "biologies" (energy matrices); errors are averaged
    nn_steps: int = 600  # Adam steps for the MLP (full batch)
    nn_lr: float = 1e-2


CONFIGS = {
    "quick": MechConfig(n_train=1500, n_test=500, trials=2, nn_steps=300),
    "report": MechConfig(),
}


def _biology(cfg: MechConfig, g: torch.Generator):
    L = cfg.site
    consensus = torch.randint(0, 4, (L,), generator=g)
    lo, hi = cfg.cost_range
    costs = lo + (hi - lo) * torch.rand(L, 4, generator=g)
    costs[torch.arange(L), consensus] = 0.0
    pairs = torch.randperm(L - 1, generator=g)[: cfg.n_pairs]
    J = cfg.epistasis * torch.randn(cfg.n_pairs, generator=g)

    def log_expression(seqs):  # (N, L) -> (N,)
        E = costs[torch.arange(L), seqs].sum(1)
        mutated = (seqs != consensus).float()
        E = E + (J * mutated[:, pairs] * mutated[:, pairs + 1]).sum(1)
        return -F.softplus(E - cfg.mu)

    def library(n, mutations):
        k = torch.randint(mutations[0], mutations[1] + 1, (n,), generator=g)
        ranks = torch.rand(n, L, generator=g).argsort(1).argsort(1)
        where = ranks < k[:, None]  # k random positions per sequence
        other = (consensus + torch.randint(1, 4, (n, L), generator=g)) % 4
        return torch.where(where, other, consensus.expand(n, L))

    return log_expression, library


class Thermodynamic(nn.Module):
    """p_bound = 1 / (1 + exp(E(s) − μ)) with an additive energy matrix."""

    def __init__(self, site: int):
        super().__init__()
        self.energy = nn.Parameter(torch.zeros(site, 4))
        self.mu = nn.Parameter(torch.zeros(()))

    def forward(self, seqs):
        E = self.energy[torch.arange(self.energy.shape[0]), seqs].sum(1)
        return -F.softplus(E - self.mu)


def _one_hot(seqs):
    return F.one_hot(seqs, 4).float().flatten(1)


def _fit_mechanistic(cfg, X, y) -> Thermodynamic:
    model = Thermodynamic(cfg.site)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def _fit_deep(cfg, X, y, seed) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(4 * cfg.site, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=cfg.nn_lr)
    Xo = _one_hot(X)
    for _ in range(cfg.nn_steps):
        opt.zero_grad(set_to_none=True)
        ((net(Xo)[:, 0] - y) ** 2).mean().backward()
        opt.step()
    return net


def _trial(cfg: MechConfig, seed: int):
    g = torch.Generator().manual_seed(seed)
    truth, library = _biology(cfg, g)
    X = library(cfg.n_train, cfg.train_mutations)
    y = truth(X) + cfg.noise * torch.randn(cfg.n_train, generator=g)
    tests = {
        "in distribution": library(cfg.n_test, cfg.train_mutations),
        "out of distribution": library(cfg.n_test, cfg.ood_mutations),
    }
    mech = _fit_mechanistic(cfg, X, y)
    deep = _fit_deep(cfg, X, y, seed)
    out = {}
    with torch.no_grad():
        for name, Xt in tests.items():
            yt = truth(Xt)
            out[name] = {
                "truth": yt,
                "mechanistic": mech(Xt),
                "deep": deep(_one_hot(Xt))[:, 0],
            }
    params = {
        "mechanistic": sum(p.numel() for p in mech.parameters()),
        "deep": sum(p.numel() for p in deep.parameters()),
    }
    return out, params


def _rmse(a, b) -> float:
    return float(((a - b) ** 2).mean().sqrt())


def _figure(example, trials: int) -> Figure:
    fig = Figure(figsize=(9.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, model in zip(axes, ["mechanistic", "deep"]):
        for name, color in [("in distribution", "C0"), ("out of distribution", "C1")]:
            d = example[name]
            ax.scatter(
                d["truth"],
                d[model],
                s=4,
                alpha=0.4,
                color=color,
                label=f"{name} (RMSE {format_number(_rmse(d[model], d['truth']))})",
            )
        lo = min(float(example["out of distribution"]["truth"].min()), -10.0)
        ax.plot([lo, 0], [lo, 0], "k:", lw=1)
        ax.set_title(f"{model} model")
        ax.set_xlabel("true log expression")
        ax.legend(fontsize=8, markerscale=3)
    axes[0].set_ylabel("predicted log expression")
    # the legend's RMSE is this one biology's; the table and the check average all trials
    fig.suptitle(
        "D5: trained on 1-3 mutations; tested there and on 7-10 mutations "
        f"(one biology of {trials}; the table averages all {trials})"
    )
    return fig


@experiment("mechanistic-vs-deep")
def mechanistic_vs_deep(size: str, seed: int) -> Result:
    check_size(size)
    cfg = CONFIGS[size]
    errors = {
        (d, m): []
        for d in ("in distribution", "out of distribution")
        for m in ("mechanistic", "deep")
    }
    example, params = None, None
    for t in range(cfg.trials):
        out, params = _trial(cfg, seed * 1000 + t)
        example = example or out
        for (d, m), errs in errors.items():
            errs.append(_rmse(out[d][m], out[d]["truth"]))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    id_mech, id_deep = mean["in distribution", "mechanistic"], mean["in distribution", "deep"]
    ood_mech, ood_deep = (
        mean["out of distribution", "mechanistic"],
        mean["out of distribution", "deep"],
    )
    measured = {
        "rmse_id_mechanistic": id_mech,
        "rmse_id_deep": id_deep,
        "rmse_ood_mechanistic": ood_mech,
        "rmse_ood_deep": ood_deep,
        "ood_deep_over_mechanistic": ood_deep / ood_mech,
        "params_mechanistic": params["mechanistic"],
        "params_deep": params["deep"],
    }
    passed = bool(id_deep < id_mech and ood_deep > 2 * ood_mech)
    rows = [
        {
            "model": m,
            "parameters": params[m],
            "RMSE in distribution (1-3 mut.)": mean["in distribution", m],
            "RMSE out of distribution (7-10 mut.)": mean["out of distribution", m],
        }
        for m in ("mechanistic", "deep")
    ]
    log.info("mechanistic-vs-deep: %s", measured)
    return Result(
        tables=[Table(f"Log-expression RMSE, mean over {cfg.trials} biologies", rows)],
        figures={"mechanistic_vs_deep": _figure(example, cfg.trials)},
        passed=passed,
        measured=measured,
        key_figure=(
            f"RMSE in distribution: deep {format_number(id_deep)} < mechanistic {format_number(id_mech)}; "
            f"out: deep {format_number(ood_deep)} vs mechanistic {format_number(ood_mech)}"
        ),
        notes=(
            "Pass: the deep model's in-distribution error is below the mechanistic model's, and "
            "its out-of-distribution error is more than twice the mechanistic model's."
        ),
    )
