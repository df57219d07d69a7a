"""Sharing in linear models, where the claims can be checked to round-off (seed 002).

- B6 ``rnn-identifiability``: the linear system ``x[t+1] = W x[t] + U u[t]`` with one
  tied ``W`` is identified exactly by least squares once the stacked states and
  inputs have full rank; a separate ``W_t`` per step is underdetermined (its design
  matrix has a rank deficit of ``n(n+m−1)·T``), and poor excitation breaks even the
  tied problem.
- C2 ``tied-autoencoder-pca``: a linear autoencoder with ``W_dec = W_encᵀ`` learns the
  top-k principal subspace (subspace angle ≈ 0), and under isotropic noise its best
  reconstruction error equals the untied autoencoder's (and PCA's).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import scipy.linalg
import torch

import tying
from tying.experiments.common import new_figure
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.nn import TiedAutoencoder
from tying.report.format import format_number

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- B6


@dataclasses.dataclass(frozen=True)
class IdentConfig:
    n: int = 4  # state width
    m: int = 2  # input width
    steps: int = 60  # T, length of the observed trajectory
    noise: float = 0.1  # process noise for the "error vs T" curve
    lengths: tuple[int, ...] = (10, 20, 40, 80, 160)  # T values of that curve
    trials: int = 8  # trajectories averaged per point of the curve


IDENT = {
    "quick": IdentConfig(),
    "report": IdentConfig(steps=200, lengths=(10, 20, 40, 80, 160, 320, 640), trials=32),
}


def _system(cfg: IdentConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # W with real eigenvalues (so an eigenvector gives the poorly excited case) and radius 0.9
    q = rng.normal(size=(cfg.n, cfg.n))
    eig = rng.uniform(-0.9, 0.9, size=cfg.n)
    w = q @ np.diag(eig) @ np.linalg.inv(q)
    u = rng.normal(size=(cfg.n, cfg.m))
    return w, u


def _simulate(w, u, x0, inputs, noise, rng):
    xs = [x0]
    for ut in inputs:
        xs.append(w @ xs[-1] + u @ ut + noise * rng.normal(size=x0.shape))
    return np.array(xs)  # (T+1, n)


def _tied_fit(xs: np.ndarray, inputs: np.ndarray) -> tuple[np.ndarray, int]:
    z = np.concatenate([xs[:-1], inputs], axis=1)  # (T, n+m): one row per step
    theta, *_ = np.linalg.lstsq(z, xs[1:], rcond=None)  # (n+m, n)
    return theta.T, int(np.linalg.matrix_rank(z))


def _untied_design(xs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Design matrix of the untied problem: unknowns vec([W_t U_t]) for every step t."""
    t_len, n = xs.shape[0] - 1, xs.shape[1]
    z = np.concatenate([xs[:-1], inputs], axis=1)  # (T, n+m)
    p = z.shape[1]
    a = np.zeros((t_len * n, t_len * n * p))
    for t in range(t_len):
        # row i of x[t+1] = row i of Θ_t times z_t: Kronecker(I_n, z_tᵀ) in block t
        a[t * n : (t + 1) * n, t * n * p : (t + 1) * n * p] = np.kron(np.eye(n), z[t])
    return a


@experiment("rnn-identifiability")
def rnn_identifiability(size: str, seed: int) -> Result:
    check_size(size)
    cfg = IDENT[size]
    rng = np.random.default_rng(seed)
    w, u = _system(cfg, rng)
    x0 = rng.normal(size=cfg.n)
    inputs = rng.normal(size=(cfg.steps, cfg.m))
    xs = _simulate(w, u, x0, inputs, 0.0, rng)

    # tied: one [W U] for all steps, n+m unknowns per row, T equations per row
    theta, rank_z = _tied_fit(xs, inputs)
    tied_err = float(np.linalg.norm(theta[:, : cfg.n] - w) / np.linalg.norm(w))

    # untied: a [W_t U_t] per step; n equations per step for n(n+m) unknowns
    design = _untied_design(xs, inputs)
    rank_untied = int(np.linalg.matrix_rank(design))
    unknowns = design.shape[1]
    sol, *_ = np.linalg.lstsq(design, (xs[1:]).reshape(-1), rcond=None)  # minimum norm
    thetas = sol.reshape(cfg.steps, cfg.n, cfg.n + cfg.m)
    untied_err = float(
        np.mean([np.linalg.norm(th[:, : cfg.n] - w) / np.linalg.norm(w) for th in thetas])
    )
    fit_residual = float(np.abs(design @ sol - xs[1:].reshape(-1)).max())

    # poor excitation: no input, x0 an eigenvector of W -> the states span one direction
    eigvals, eigvecs = np.linalg.eig(w)
    v = np.real(eigvecs[:, 0])
    xs_poor = _simulate(w, u, v, np.zeros_like(inputs), 0.0, rng)
    theta_poor, rank_poor = _tied_fit(xs_poor, np.zeros_like(inputs))
    poor_err = float(np.linalg.norm(theta_poor[:, : cfg.n] - w) / np.linalg.norm(w))

    # with process noise: the tied estimate pools every step, so its error falls with T
    curve = []
    for t_len in cfg.lengths:
        tied_errs, untied_errs = [], []
        for _ in range(cfg.trials):
            inp = rng.normal(size=(t_len, cfg.m))
            xs_n = _simulate(w, u, rng.normal(size=cfg.n), inp, cfg.noise, rng)
            th, _ = _tied_fit(xs_n, inp)
            tied_errs.append(np.linalg.norm(th[:, : cfg.n] - w) / np.linalg.norm(w))
            z = np.concatenate([xs_n[:-1], inp], axis=1)
            per_step = [np.outer(xs_n[t + 1], z[t]) / (z[t] @ z[t]) for t in range(t_len)]
            untied_errs.append(
                np.mean([np.linalg.norm(p[:, : cfg.n] - w) / np.linalg.norm(w) for p in per_step])
            )
        curve.append(
            {
                "T": t_len,
                "tied W error": float(np.mean(tied_errs)),
                "untied W_t error": float(np.mean(untied_errs)),
            }
        )
    log.info("B6: tied error %.2e, untied %.3f", tied_err, untied_err)

    deficit = unknowns - rank_untied
    expected_deficit = cfg.n * (cfg.n + cfg.m - 1) * cfg.steps
    passed = (
        tied_err < 1e-8
        and rank_z == cfg.n + cfg.m
        and deficit == expected_deficit
        and untied_err > 0.3
        and fit_residual < 1e-8
        and rank_poor < cfg.n + cfg.m
        and poor_err > 0.1
        and curve[-1]["tied W error"] < curve[0]["tied W error"] / 3
    )
    rows = [
        {
            "model": "tied W, rich input",
            "unknowns": cfg.n * (cfg.n + cfg.m),
            "rank": rank_z * cfg.n,
            "rank deficit": cfg.n * (cfg.n + cfg.m) - rank_z * cfg.n,
            "W error": tied_err,
        },
        {
            "model": "untied W_t, rich input",
            "unknowns": unknowns,
            "rank": rank_untied,
            "rank deficit": deficit,
            "W error": untied_err,
        },
        {
            "model": "tied W, u=0 and x0 an eigenvector",
            "unknowns": cfg.n * (cfg.n + cfg.m),
            "rank": rank_poor * cfg.n,
            "rank deficit": cfg.n * (cfg.n + cfg.m - rank_poor),
            "W error": poor_err,
        },
    ]
    fig = _identifiability_figure(curve, cfg)
    return Result(
        tables=[
            Table(f"noise-free, T={cfg.steps}", rows),
            Table("error vs T under process noise", curve),
        ],
        figures={"identifiability": fig},
        passed=passed,
        measured={
            "tied W error": tied_err,
            "untied rank deficit": deficit,
            "expected deficit n(n+m-1)T": expected_deficit,
            "untied W_t error": untied_err,
            "poorly excited rank": rank_poor,
            "poorly excited W error": poor_err,
        },
        key_figure=f"tied W error {format_number(tied_err)}; untied rank deficit {deficit} → W_t error {format_number(untied_err)}",
        notes=(
            "Noise-free data from one trajectory. The untied least-squares problem fits the data "
            "exactly (it has more unknowns than equations) but its minimum-norm W_t are far from W; "
            "the tied problem has T equations per row for n+m unknowns."
        ),
    )


def _identifiability_figure(curve, cfg):
    fig, (ax,) = new_figure(1, width=5.2, height=3.3)
    ts = [r["T"] for r in curve]
    ax.loglog(ts, [r["tied W error"] for r in curve], "o-", label="tied W (least squares)")
    ax.loglog(ts, [r["untied W_t error"] for r in curve], "s--", label="untied W_t (min-norm)")
    ax.set_xlabel("trajectory length T")
    ax.set_ylabel("relative error of W")
    ax.set_title(f"process noise σ={cfg.noise}, n={cfg.n}, m={cfg.m}")
    ax.legend()
    return fig


# ---------------------------------------------------------------------------- C2


@dataclasses.dataclass(frozen=True)
class PCAConfig:
    d: int = 20  # data width
    k: int = 3  # code width
    n: int = 2000  # samples
    scales: tuple[float, ...] = (3.0, 2.0, 1.5)  # std of the k signal directions
    noise: float = 0.5  # isotropic noise std
    steps: int = 600  # full-batch Adam steps
    lr: float = 0.02


PCA = {
    "quick": PCAConfig(),
    "report": PCAConfig(d=50, k=5, n=5000, scales=(3, 2.5, 2, 1.7, 1.4), steps=1500),
}


def _train_ae(model, x, steps, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    curve = []
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - x).pow(2).sum(1).mean()  # per-sample squared error
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
    return curve


@experiment("tied-autoencoder-pca")
def tied_autoencoder_pca(size: str, seed: int) -> Result:
    check_size(size)
    cfg = PCA[size]
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(cfg.d, cfg.k, generator=gen, dtype=torch.float64))
    z = torch.randn(cfg.n, cfg.k, generator=gen, dtype=torch.float64) * torch.tensor(
        cfg.scales, dtype=torch.float64
    )
    x = z @ basis.T + cfg.noise * torch.randn(cfg.n, cfg.d, generator=gen, dtype=torch.float64)
    x = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(x.T @ x / cfg.n)  # ascending
    top = evecs[:, -cfg.k :]
    pca_err = float(evals[: -cfg.k].sum())  # the best any rank-k linear map can do

    torch.manual_seed(seed)
    tied = TiedAutoencoder(cfg.d, cfg.k).double()
    untied = TiedAutoencoder(cfg.d, cfg.k, tied=False).double()
    curves = {
        "tied": _train_ae(tied, x, cfg.steps, cfg.lr),
        "untied": _train_ae(untied, x, cfg.steps, cfg.lr),
    }
    w = tied.encoder.weight.detach()  # (k, d)
    angle_tied = float(np.max(scipy.linalg.subspace_angles(w.T.numpy(), top.numpy())))
    dec = untied.decoder.weight.detach()  # (d, k)
    angle_untied = float(np.max(scipy.linalg.subspace_angles(dec.numpy(), top.numpy())))
    orth = float((w @ w.T - torch.eye(cfg.k, dtype=torch.float64)).abs().max())
    err_tied, err_untied = curves["tied"][-1], curves["untied"][-1]
    rel_gap = abs(err_tied - err_untied) / pca_err
    c_tied, c_untied = tying.count(tied), tying.count(untied)
    passed = (
        angle_tied < 1e-2
        and rel_gap < 1e-3
        and abs(err_tied - pca_err) / pca_err < 1e-3
        and c_tied.physical * 2 == c_untied.physical
    )
    fig, (ax1, ax2) = new_figure(2, height=3.3)
    for name, curve in curves.items():
        ax1.semilogy(np.array(curve) - pca_err + 1e-12, label=name)
    ax1.set_xlabel("Adam step")
    ax1.set_ylabel("error − PCA optimum")
    ax1.set_title("reconstruction error above PCA's")
    ax1.legend()
    # where the tied encoder's rows live, in the PCA eigenbasis (largest variance first)
    energy = ((evecs.flip(1).T @ w.T) ** 2).sum(1).numpy()  # (d,)
    colors = ["C0" if i < cfg.k else "0.6" for i in range(cfg.d)]
    ax2.bar(range(1, cfg.d + 1), energy + 1e-20, color=colors)
    ax2.set_yscale("log")
    ax2.set_xlabel("principal component (by variance)")
    ax2.set_ylabel("energy of tied W in that direction")
    ax2.set_title(f"tied W spans the top {cfg.k}: max angle {format_number(angle_tied)} rad")
    rows = [
        {
            "model": "PCA (top-k projection)",
            "params": "—",
            "error": pca_err,
            "max subspace angle (rad)": 0.0,
        },
        {
            "model": "tied AE (W_dec = W_encᵀ)",
            "params": c_tied.physical,
            "error": err_tied,
            "max subspace angle (rad)": angle_tied,
        },
        {
            "model": "untied AE",
            "params": c_untied.physical,
            "error": err_untied,
            "max subspace angle (rad)": angle_untied,
        },
    ]
    return Result(
        tables=[Table(f"d={cfg.d}, k={cfg.k}, n={cfg.n}, isotropic noise σ={cfg.noise}", rows)],
        figures={"tied_ae_pca": fig},
        passed=passed,
        measured={
            "max subspace angle tied (rad)": angle_tied,
            "|err tied − err untied| / err PCA": rel_gap,
            "err tied": err_tied,
            "err untied": err_untied,
            "err PCA": pca_err,
            "tied W Wᵀ − I (max)": orth,
        },
        key_figure=f"angle to PCA {format_number(angle_tied)} rad; error tied {format_number(err_tied, 5)} = untied {format_number(err_untied, 5)} = PCA {format_number(pca_err, 5)}",
        notes="Both autoencoders trained by full-batch Adam in float64 on centred data; the tied one stores half the weights.",
    )
