"""Physics-informed networks: periodic boundaries tied hard or soft, and their optimisers (seeds 000, 004).

- B14 ``pinn-periodic``: the heat equation ``u_t = ν u_xx`` on a periodic interval.
  Fed ``sin(2πx/L), cos(2πx/L)`` instead of ``x`` the network is periodic by
  construction (boundary mismatch at float round-off); a raw-``x`` network with a
  shared boundary sub-network ``g(t)`` tied to both ends gets a small but nonzero
  mismatch. Both solve the PDE (residual and error vs the exact solution reported).
- D4 ``pinn-optimizers``: a 1-D Poisson PINN with observed data, trained by Adam and
  by L-BFGS. On clean data L-BFGS reaches a far lower error (sharper); noisy data
  erase its advantage (its error grows by a far larger factor than Adam's), and
  noisy gradients (collocation points resampled each evaluation) break it while
  Adam is unaffected (robust).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics

import numpy as np
import torch
from torch import nn

from tying.experiments.common import new_figure, still_gaining
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.nn import PeriodicFeatures, SharedBoundary, mlp, partial
from tying.report.format import format_number

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- B14


@dataclasses.dataclass(frozen=True)
class PeriodicConfig:
    period: float = 2.0  # L
    nu: float = 0.05  # diffusivity
    t_end: float = 1.0
    width: int = 24
    collocation: int = 128
    initial_points: int = 64
    boundary_points: int = 32
    steps: int = 500  # Adam steps (the soft model needs many: its periodicity is learned)
    lr: float = 1e-2


PERIODIC = {
    "quick": PeriodicConfig(),
    "report": PeriodicConfig(width=32, collocation=256, steps=1500, lr=5e-3),
}


def _exact_heat(x: torch.Tensor, t: torch.Tensor, cfg: PeriodicConfig) -> torch.Tensor:
    k1, k2 = 2 * math.pi / cfg.period, 4 * math.pi / cfg.period
    return torch.exp(-cfg.nu * k1**2 * t) * torch.sin(k1 * x) + 0.5 * torch.exp(
        -cfg.nu * k2**2 * t
    ) * torch.cos(k2 * x)


def _heat_residual(model: nn.Module, xt: torch.Tensor, nu: float) -> torch.Tensor:
    xt = xt.detach().requires_grad_(True)
    u = model(xt)
    return partial(u, xt, 1) - nu * partial(u, xt, 0, order=2)  # u_t − ν u_xx, (N, 1)


def _train_heat(
    model: nn.Module, boundary: SharedBoundary | None, cfg: PeriodicConfig, gen
) -> list[float]:
    col = torch.rand(cfg.collocation, 2, generator=gen) * torch.tensor([cfg.period, cfg.t_end])
    x0 = torch.rand(cfg.initial_points, 1, generator=gen) * cfg.period
    u0 = _exact_heat(x0, torch.zeros_like(x0), cfg)
    tb = torch.rand(cfg.boundary_points, 1, generator=gen) * cfg.t_end
    params = list(model.parameters()) + (list(boundary.parameters()) if boundary else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    history = []
    for _ in range(cfg.steps):
        opt.zero_grad()
        loss = _heat_residual(model, col, cfg.nu).pow(2).mean()
        loss = loss + (model(torch.cat([x0, torch.zeros_like(x0)], 1)) - u0).pow(2).mean()
        if boundary is not None:  # soft tie: both ends pulled to the one shared g(t)
            loss = loss + boundary.penalty(model, tb)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history


@experiment("pinn-periodic")
def pinn_periodic(size: str, seed: int) -> Result:
    check_size(size)
    cfg = PERIODIC[size]
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    hard = nn.Sequential(
        PeriodicFeatures(2, cfg.period, harmonics=2, periodic_dims=(0,)),
        mlp([5, cfg.width, cfg.width, 1]),
    )
    soft = mlp([2, cfg.width, cfg.width, 1])
    boundary = SharedBoundary(2, cfg.period, dim=0, hidden=16, derivatives=1)
    hist_hard = _train_heat(hard, None, cfg, torch.Generator().manual_seed(seed))
    hist_soft = _train_heat(soft, boundary, cfg, torch.Generator().manual_seed(seed))

    # evaluate in float64 so "zero" means round-off, not float32's 1e-7
    t = torch.linspace(0, cfg.t_end, 101, dtype=torch.float64).unsqueeze(1)
    grid_x, grid_t = torch.meshgrid(
        torch.linspace(0, cfg.period, 81, dtype=torch.float64), t.squeeze(1), indexing="ij"
    )
    grid = torch.stack([grid_x.reshape(-1), grid_t.reshape(-1)], 1)
    exact = _exact_heat(grid[:, :1], grid[:, 1:], cfg)
    probe = SharedBoundary(2, cfg.period, dim=0, derivatives=1).double()  # only its end evaluation
    rows, measured = [], {}
    for name, model in (("hard: sin/cos features", hard), ("soft: shared boundary g(t)", soft)):
        model = model.double()
        ends = probe.ends(model, t)
        mismatch = float((ends[0][:, 0] - ends[1][:, 0]).abs().max().detach())
        slope = float((ends[0][:, 1] - ends[1][:, 1]).abs().max().detach())
        residual = float(_heat_residual(model, grid, cfg.nu).pow(2).mean().sqrt().detach())
        with torch.no_grad():
            err = float((model(grid) - exact).norm() / exact.norm())
        rows.append(
            {
                "PINN": name,
                "max |u(0,t) − u(L,t)|": mismatch,
                "max |u_x(0,t) − u_x(L,t)|": slope,
                "PDE residual (RMS)": residual,
                "rel. L2 error vs exact": err,
            }
        )
        measured[f"{name.split(':')[0]} mismatch"] = mismatch
        measured[f"{name.split(':')[0]} residual"] = residual
        measured[f"{name.split(':')[0]} error"] = err
    passed = (
        measured["hard mismatch"] < 1e-12
        and 1e-6 < measured["soft mismatch"] < 0.1  # small vs the solution's amplitude 1.5
        and measured["hard residual"] < 0.15
        and measured["soft residual"] < 0.15
        and measured["hard error"] < 0.05
        and measured["soft error"] < 0.2
    )
    fig, (ax1, ax2) = new_figure(2, height=3.3)
    with torch.no_grad():
        gap_soft = (
            soft(torch.cat([torch.zeros_like(t), t], 1))
            - soft(torch.cat([torch.full_like(t, cfg.period), t], 1))
        ).abs()
        gap_hard = (
            hard(torch.cat([torch.zeros_like(t), t], 1))
            - hard(torch.cat([torch.full_like(t, cfg.period), t], 1))
        ).abs()
    ax1.semilogy(t.squeeze(1), gap_soft.squeeze(1) + 1e-18, label="soft (shared g)")
    ax1.semilogy(t.squeeze(1), gap_hard.squeeze(1) + 1e-18, label="hard (sin/cos)")
    ax1.set_xlabel("t")
    ax1.set_ylabel("|u(0,t) − u(L,t)|  (1e-18 floor)")
    ax1.set_title("boundary mismatch")
    ax1.legend()
    ax2.semilogy(hist_hard, label="hard")
    ax2.semilogy(hist_soft, label="soft")
    ax2.set_xlabel("Adam step")
    ax2.set_ylabel("training loss")
    ax2.legend()
    return Result(
        tables=[
            Table(f"u_t = {cfg.nu} u_xx on [0, {cfg.period}) × [0, {cfg.t_end}], periodic", rows)
        ],
        figures={"pinn_periodic": fig},
        passed=passed,
        measured=measured,
        key_figure=(
            f"mismatch hard {format_number(measured['hard mismatch'])} vs soft {format_number(measured['soft mismatch'])}; "
            f"residual {format_number(measured['hard residual'], 4)} / {format_number(measured['soft residual'], 4)}"
        ),
        notes=(
            "Trained in float32, evaluated in float64. The soft model also ties u_x at both ends "
            "to g(t). Check: hard mismatch < 1e-12; 1e-6 < soft mismatch < 0.1 (small vs the "
            "solution's amplitude 1.5); PDE residual (RMS) < 0.15 for both; rel. L2 error vs the "
            "exact solution < 0.05 hard, < 0.2 soft. One training run per model: the soft "
            "model's result depends on where its Adam run ends (see docs/report.md, Stop 32)."
        ),
    )


# ---------------------------------------------------------------------------- D4


@dataclasses.dataclass(frozen=True)
class OptConfig:
    width: int = 16
    collocation: int = 32
    data_points: int = 16
    noise: float = 0.1  # std of the noisy observations
    adam_steps: int = 300
    adam_lr: float = 1e-2
    lbfgs_iters: int = 100
    seeds: int = 1


OPT = {
    "quick": OptConfig(),
    "report": OptConfig(width=24, collocation=64, adam_steps=600, lbfgs_iters=300, seeds=3),
}
SETTINGS = ("clean data", "noisy data", "noisy data + noisy gradients")


def _poisson_run(cfg: OptConfig, optimizer: str, setting: str, seed: int) -> tuple[float, bool]:
    """u'' = −π² sin(πx) on [0, 1], u(0) = u(1) = 0, plus observations.

    Returns the RMS error vs sin(πx) and whether an Adam run on fixed collocation points was
    still gaining at its step budget (its best loss fell by over 10% in its last fifth of steps).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    f64 = torch.float64
    net = mlp([1, cfg.width, cfg.width, 1]).to(f64)
    x_data = torch.rand(cfg.data_points, 1, generator=gen, dtype=f64)
    noise = 0.0 if setting == "clean data" else cfg.noise
    u_data = torch.sin(math.pi * x_data) + noise * torch.randn(
        cfg.data_points, 1, generator=gen, dtype=f64
    )
    x_fixed = torch.linspace(0, 1, cfg.collocation, dtype=f64).unsqueeze(1)
    ends = torch.tensor([[0.0], [1.0]], dtype=f64)
    resample = setting.endswith("noisy gradients")

    def loss_fn():
        x = torch.rand(cfg.collocation, 1, generator=gen, dtype=f64) if resample else x_fixed
        x = x.requires_grad_(True)
        residual = partial(net(x), x, 0, order=2) + math.pi**2 * torch.sin(math.pi * x)
        return (
            residual.pow(2).mean() / math.pi**4
            + (net(x_data) - u_data).pow(2).mean()
            + net(ends).pow(2).mean()
        )

    if optimizer == "Adam":
        opt = torch.optim.Adam(net.parameters(), lr=cfg.adam_lr)
        losses = []
        for _ in range(cfg.adam_steps):
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        gaining = not resample and still_gaining(losses)  # best loss down >10% in the last fifth
    else:
        opt = torch.optim.LBFGS(
            net.parameters(),
            lr=1.0,
            max_iter=cfg.lbfgs_iters,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
        )

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        opt.step(closure)
        gaining = False
    x_test = torch.linspace(0, 1, 201, dtype=f64).unsqueeze(1)
    with torch.no_grad():
        error = float((net(x_test) - torch.sin(math.pi * x_test)).pow(2).mean().sqrt())
    return error, gaining


@experiment("pinn-optimizers")
def pinn_optimizers(size: str, seed: int) -> Result:
    check_size(size)
    cfg = OPT[size]
    torch.set_num_threads(1)
    runs = {
        (opt, setting): [_poisson_run(cfg, opt, setting, seed * 1000 + s) for s in range(cfg.seeds)]
        for opt in ("Adam", "L-BFGS")
        for setting in SETTINGS
    }
    err = {key: statistics.median(e for e, _ in r) for key, r in runs.items()}
    # stop 35: Adam at a constant lr does not settle on clean data (its loss still falls, and
    # jumps, long after the budget); at 5x adam_steps the clean ratio read 0.41 (report,
    # seed 0) and 1.33 (quick) and the check failed. A verdict on runs still gaining at their
    # budget is not the converged one, so such runs fail the check.
    gaining = sum(g for (opt, _), r in runs.items() if opt == "Adam" for _, g in r)
    n_fixed = sum(len(r) for (opt, s), r in runs.items() if opt == "Adam" and s != SETTINGS[2])
    clean, noisy, stoch = SETTINGS
    growth = {opt: err[(opt, noisy)] / err[(opt, clean)] for opt in ("Adam", "L-BFGS")}
    passed = (
        gaining == 0
        and err[("L-BFGS", clean)] < err[("Adam", clean)] / 3  # sharper
        and growth["L-BFGS"] > 3 * growth["Adam"]  # its edge does not survive noisy data
        and err[("L-BFGS", stoch)] > 3 * err[("Adam", stoch)]  # noisy gradients break it
        and err[("Adam", stoch)] < 3 * err[("Adam", noisy)]  # ... but not Adam
    )
    rows = [
        {
            "setting": s,
            "Adam error": err[("Adam", s)],
            "L-BFGS error": err[("L-BFGS", s)],
            "L-BFGS / Adam": err[("L-BFGS", s)] / err[("Adam", s)],
        }
        for s in SETTINGS
    ]
    fig, (ax,) = new_figure(1, width=5.4, height=3.3)
    idx = np.arange(len(SETTINGS))
    ax.bar(
        idx - 0.2, [err[("Adam", s)] for s in SETTINGS], 0.4, label=f"Adam ({cfg.adam_steps} steps)"
    )
    ax.bar(
        idx + 0.2,
        [err[("L-BFGS", s)] for s in SETTINGS],
        0.4,
        label=f"L-BFGS ({cfg.lbfgs_iters} iters)",
    )
    ax.set_yscale("log")
    ax.set_xticks(idx, ["clean", "noisy data", "noisy data +\nresampled points"])
    ax.set_ylabel("RMS error vs exact u")
    ax.legend()
    return Result(
        tables=[
            Table(
                f"u'' = −π² sin πx, {cfg.data_points} observations (noise σ={cfg.noise}), median of {cfg.seeds} seed(s)",
                rows,
            )
        ],
        figures={"pinn_optimizers": fig},
        passed=passed,
        measured={
            "clean: L-BFGS / Adam error": err[("L-BFGS", clean)] / err[("Adam", clean)],
            "noisy/clean error growth, Adam": growth["Adam"],
            "noisy/clean error growth, L-BFGS": growth["L-BFGS"],
            "noisy gradients: L-BFGS / Adam error": err[("L-BFGS", stoch)] / err[("Adam", stoch)],
            # the fourth condition's number: Adam is not broken by noisy gradients
            "Adam error, noisy gradients / noisy data": err[("Adam", stoch)] / err[("Adam", noisy)],
            "Adam runs still gaining at the step budget (fixed points)": f"{gaining} of {n_fixed}",
        },
        key_figure=(
            f"clean: L-BFGS {format_number(err[('L-BFGS', clean)])} vs Adam {format_number(err[('Adam', clean)])}; noisy gradients: "
            f"L-BFGS {format_number(err[('L-BFGS', stoch)])} vs Adam {format_number(err[('Adam', stoch)])}"
        ),
        notes=(
            "Noisy data: observations with Gaussian noise, fixed collocation points; both optimisers "
            "then reach the noise floor, so L-BFGS's sharpness buys nothing. Noisy gradients: the "
            "collocation points are redrawn at every loss evaluation, which breaks L-BFGS's line search "
            "and curvature pairs; Adam averages the noise out. Check: clean L-BFGS / Adam error "
            "< 1/3; L-BFGS's noisy/clean error growth > 3× Adam's; with noisy gradients "
            "L-BFGS / Adam error > 3; Adam's error with noisy gradients < 3× its error on noisy data; "
            f"and no Adam run on fixed points still gaining at its budget of {cfg.adam_steps} "
            f"steps (best loss down over 10% in its last fifth): {gaining} of {n_fixed} were. "
            "The comparison is at fixed budgets (Adam lr "
            f"{cfg.adam_lr:g}, L-BFGS {cfg.lbfgs_iters} iterations); with 5x the Adam steps the "
            "clean-data check failed (stop 35), so a pass on runs still gaining is not given."
        ),
    )
