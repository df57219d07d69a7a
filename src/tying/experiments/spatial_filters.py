"""Tied filters as estimators (seeds 001, 002): what one shared filter learns.

- B4 ``symmetric-filter``: tying each tap to its mirror image makes the filter deaf to
  signals that are antisymmetric about its centre, and a better denoiser from few
  examples than an untied filter.
- C1 ``cnn-as-pgm``: a conv layer is a graphical model whose local factors share one
  filter; under a linear-Gaussian model its maximum-likelihood filter is the least
  squares fit over all patches, and gradient training finds exactly that filter.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tying.experiments._spatial_common import by_size, largest, log, new_figure, rngs, seeded
from tying.experiments.registry import Result, Table, experiment
from tying.nn import SymmetricConv1d
from tying.report.format import format_number

F64 = torch.float64


def _fit_lbfgs(module: nn.Module, loss_fn, iters: int, record=None) -> None:
    """Full-batch L-BFGS (the losses here are quadratic: it reaches the minimum).

    ``record()`` is called at every loss evaluation (for convergence plots).
    """
    opt = torch.optim.LBFGS(
        module.parameters(),
        lr=1.0,
        max_iter=iters,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-15,
        tolerance_change=1e-18,
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        if record is not None:
            record()
        return loss

    opt.step(closure)


# ---------------------------------------------------------------------------- B4


@dataclasses.dataclass(frozen=True)
class SymFilterConfig:
    kernel: int  # window = filter length (odd, so the filter has a centre tap)
    train_sizes: tuple[int, ...]  # training windows; near `kernel` the untied fit overfits
    seeds: int  # repeats per size: a small training set's error is heavy-tailed (use medians)
    hiss: float = 1.0  # std of the antisymmetric noise (the pulse amplitude has std 1)
    white: float = 0.1  # std of white noise on every sample
    test: int = 2000
    # L-BFGS iterations: the loss is quadratic, but the untied fit on fewest windows is
    # ill-conditioned (stop 35: 50 iterations left its test MSE up to 28% from the exact
    # least-squares filter's and read the report MSE ratio as 3.96 where the converged one is
    # 4.67; from 200 on the ratio stays put to 5 digits and the gap at about 1e-3, as at
    # 2,000); every fit is checked against the exact least-squares filter
    iters: int = 200
    exact_tol: float = 1e-2  # largest test-MSE gap (relative) to the least-squares filter


SYM_FILTER = {
    "quick": SymFilterConfig(kernel=9, train_sizes=(12, 48), seeds=10),
    "report": SymFilterConfig(kernel=15, train_sizes=(18, 30, 60, 120, 480), seeds=10),
}


def _windows(cfg: SymFilterConfig, n: int, gen: torch.Generator):
    """Windows ``a·pulse + antisymmetric hiss + white noise`` and the amplitudes ``a``."""
    k = cfg.kernel
    t = torch.arange(k, dtype=F64) - k // 2
    pulse = torch.exp(-0.5 * (t / (k / 6)) ** 2)  # symmetric about the centre
    amp = torch.randn(n, generator=gen, dtype=F64)
    raw = torch.randn(n, k, generator=gen, dtype=F64)
    hiss = (raw - raw.flip(-1)) / 2 * (2**0.5) * cfg.hiss  # antisymmetric, std ≈ hiss
    white = cfg.white * torch.randn(n, k, generator=gen, dtype=F64)
    x = amp[:, None] * pulse + hiss + white
    return x.unsqueeze(1), amp  # (n, 1, k), (n,)


def _least_squares_filter(x: torch.Tensor, a: torch.Tensor, tied: bool) -> torch.Tensor:
    """The exact least-squares filter (palindromic when ``tied``): what L-BFGS should reach."""
    X = x[:, 0, :]  # (n, k): a window's one output is the dot product with the filter
    k = X.shape[1]
    if not tied:
        return torch.linalg.lstsq(X, a[:, None], driver="gelsd").solution[:, 0]
    mirror = torch.zeros(k, k // 2 + 1, dtype=X.dtype)  # half-filter -> palindromic filter
    for i in range(k):
        mirror[i, min(i, k - 1 - i)] = 1.0
    half = torch.linalg.lstsq(X @ mirror, a[:, None], driver="gelsd").solution[:, 0]
    return mirror @ half


@experiment("symmetric-filter")
def symmetric_filter(size: str, seed: int) -> Result:
    cfg = by_size(SYM_FILTER, size)
    names = ("palindromic (tied)", "untied")
    mse = {name: np.zeros((len(cfg.train_sizes), cfg.seeds)) for name in names}
    deaf = {name: 0.0 for name in names}
    exact_gap = 0.0  # largest relative test-MSE gap, trained vs least-squares filter
    filters = {}
    for r in range(cfg.seeds):
        gen, _ = rngs(seed * 1000 + r)
        x_test, a_test = _windows(cfg, cfg.test, gen)
        anti = torch.randn(256, 1, cfg.kernel, generator=gen, dtype=F64)
        anti = anti - anti.flip(-1)  # purely antisymmetric windows
        for i, n in enumerate(cfg.train_sizes):
            x, a = _windows(cfg, n, gen)
            for name in names:
                with seeded(seed * 1000 + r):
                    conv = SymmetricConv1d(
                        1, 1, cfg.kernel, bias=False, tied=name.endswith("(tied)"), dtype=F64
                    )
                _fit_lbfgs(conv, lambda c=conv, x=x, a=a: F.mse_loss(c(x).flatten(), a), cfg.iters)
                with torch.no_grad():
                    mse[name][i, r] = float(F.mse_loss(conv(x_test).flatten(), a_test))
                    response = float(conv(anti).abs().max() / anti.abs().max())
                    w = _least_squares_filter(x, a, conv.tied)
                    exact = float(F.mse_loss(x_test[:, 0, :] @ w, a_test))
                deaf[name] = largest([deaf[name], response])
                exact_gap = largest([exact_gap, abs(mse[name][i, r] - exact) / exact])
                if r == 0 and i == 0:
                    filters[name] = conv.weight.detach()[0, 0].numpy()
    mean = {name: np.median(m, axis=1) for name, m in mse.items()}  # median over repeats
    ratio = mean["untied"] / mean["palindromic (tied)"]
    rows = [
        {
            "training windows": n,
            "test MSE, palindromic": float(mean["palindromic (tied)"][i]),
            "test MSE, untied": float(mean["untied"][i]),
            "untied / palindromic": float(ratio[i]),
        }
        for i, n in enumerate(cfg.train_sizes)
    ]
    tied_count = tying.count(SymmetricConv1d(1, 1, cfg.kernel, bias=False))
    passed = deaf["palindromic (tied)"] < 1e-12 and deaf["untied"] > 1e-3 and bool(ratio[0] > 1.3)
    passed = passed and bool((ratio > 0.98).all())  # equal in the large-data limit
    passed = passed and exact_gap <= cfg.exact_tol  # the fits reached least squares
    log.info("symmetric-filter: response tied %.2g untied %.2g", *deaf.values())

    fig, (ax0, ax1) = new_figure(2, width=4.4, height=3.4)
    taps = np.arange(cfg.kernel) - cfg.kernel // 2
    for (name, w), color in zip(filters.items(), ("#4c72b0", "#c44e52")):
        ax0.plot(taps, w, "o-", color=color, label=name)
    ax0.axhline(0, color="gray", lw=0.5)
    ax0.set_xlabel("tap (relative to centre)")
    ax0.set_ylabel("filter weight")
    ax0.set_title(f"filters learned from {cfg.train_sizes[0]} windows", fontsize=10)
    ax0.legend(fontsize=8)
    for name, color in zip(names, ("#4c72b0", "#c44e52")):
        ax1.plot(cfg.train_sizes, mean[name], "o-", color=color, label=name)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xticks(cfg.train_sizes, [str(n) for n in cfg.train_sizes])
    ax1.minorticks_off()
    ax1.set_xlabel("training windows")
    ax1.set_ylabel(f"test MSE of the pulse amplitude (median of {cfg.seeds})")
    ax1.set_title("denoising error", fontsize=10)
    ax1.legend(fontsize=8)
    return Result(
        tables=[
            Table(f"Amplitude estimation error, median of {cfg.seeds} runs", rows),
            Table(
                "Response to purely antisymmetric windows (relative to input size)",
                [{"filter": name, "max |response|": v} for name, v in deaf.items()],
            ),
        ],
        figures={"filters_and_error": fig},
        passed=passed,
        measured={
            "palindromic response to antisymmetric input": deaf["palindromic (tied)"],
            "untied response to antisymmetric input": deaf["untied"],
            "MSE ratio untied/palindromic at fewest windows": float(ratio[0]),
            "MSE ratio untied/palindromic, smallest over sizes": float(ratio.min()),
            "palindromic physical/logical taps": (tied_count.physical, tied_count.logical),
            "largest test-MSE gap to the least-squares filter (rel.)": exact_gap,
        },
        key_figure=f"antisymmetric response {format_number(deaf['palindromic (tied)'])}; untied MSE ×{format_number(ratio[0])}",
        notes=f"Each window is a symmetric pulse of random amplitude plus antisymmetric hiss "
        f"(std {cfg.hiss}) plus white noise (std {cfg.white}); a length-{cfg.kernel} filter "
        "estimates the amplitude, fitted by least squares (L-BFGS) on the windows. Check: "
        "palindromic response < 1e-12, untied > 1e-3, untied median MSE over 1.3× the palindromic at "
        "the smallest size and never below 0.98× (they meet as data grows), with every "
        f"L-BFGS fit ({cfg.iters} iterations) within {cfg.exact_tol:g} (relative test MSE) "
        "of the exact least-squares filter.",
    )


# ---------------------------------------------------------------------------- C1


@dataclasses.dataclass(frozen=True)
class PGMConfig:
    images: int  # images; every valid position is one factor sharing the filter
    side: int  # square image side
    kernel: int = 5
    noise: float = 0.1  # σ of the Gaussian factor p(y_ij | x_ij, w)
    iters: int = 50  # L-BFGS iterations on the conv layer (k² unknowns)


PGM = {
    "quick": PGMConfig(images=4, side=16),
    "report": PGMConfig(images=16, side=32),
}


@experiment("cnn-as-pgm")
def cnn_as_pgm(size: str, seed: int) -> Result:
    cfg = by_size(PGM, size)
    gen, _ = rngs(seed)
    k = cfg.kernel
    x = torch.randn(cfg.images, 1, cfg.side, cfg.side, generator=gen, dtype=F64)
    w_true = torch.randn(1, 1, k, k, generator=gen, dtype=F64) / k
    y = F.conv2d(x, w_true)  # (N, 1, H-k+1, W-k+1): one factor per position
    y = y + cfg.noise * torch.randn(y.shape, generator=gen, dtype=F64)

    # closed form: every patch is one row of one least-squares problem (the tie pools them)
    patches = F.unfold(x, k).transpose(1, 2).reshape(-1, k * k)  # (N·P, k²)
    w_ls = torch.linalg.lstsq(patches, y.reshape(-1, 1)).solution.reshape(1, 1, k, k)
    positions = patches.shape[0]

    with seeded(seed):
        conv = nn.Conv2d(1, 1, k, bias=False, dtype=F64)
    dist = []
    _fit_lbfgs(
        conv,
        lambda: F.mse_loss(conv(x), y),
        cfg.iters,
        record=lambda: dist.append(float((conv.weight.detach() - w_ls).norm() / w_ls.norm())),
    )
    w_learned = conv.weight.detach()
    rel_to_ls = float((w_learned - w_ls).norm() / w_ls.norm())
    ls_to_true = float((w_ls - w_true).norm() / w_true.norm())
    sigma_hat = float((F.conv2d(x, w_ls) - y).pow(2).mean().sqrt())
    passed = rel_to_ls < 1e-7 and ls_to_true < 0.1 and abs(sigma_hat / cfg.noise - 1) < 0.1
    log.info("cnn-as-pgm: learned vs LS %.2g, LS vs true %.3g", rel_to_ls, ls_to_true)

    fig, axes = new_figure(4, width=2.6, height=2.7)
    vmax = float(w_true.abs().max())
    for ax, (name, w) in zip(
        axes, (("true w", w_true), ("least squares", w_ls), ("trained conv", w_learned))
    ):
        ax.imshow(w[0, 0].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[3].semilogy(range(1, len(dist) + 1), np.maximum(dist, 1e-17), "o-", ms=3)
    axes[3].set_xlabel("loss evaluations (L-BFGS)")
    axes[3].set_title("‖w − w_LS‖ / ‖w_LS‖", fontsize=10)
    axes[3].set_ylabel("relative distance (log)")
    return Result(
        tables=[
            Table(
                "Trained filter vs closed form",
                [
                    {
                        "shared factors (positions)": positions,
                        "filter entries": k * k,
                        "‖w_trained − w_LS‖/‖w_LS‖": rel_to_ls,
                        "‖w_LS − w_true‖/‖w_true‖": ls_to_true,
                        "σ̂ (ML)": sigma_hat,
                        "σ true": cfg.noise,
                    }
                ],
            )
        ],
        figures={"filters": fig},
        passed=passed,
        measured={
            "trained vs least squares (rel.)": rel_to_ls,
            "least squares vs true (rel.)": ls_to_true,
            "sigma_hat / sigma": sigma_hat / cfg.noise,
        },
        key_figure=f"trained filter = least squares to {format_number(rel_to_ls)}",
        notes=f"y_ij ~ N(wᵀx_ij, σ²) at each of {positions:,} positions, all sharing one "
        f"{k}×{k} w. Maximising the likelihood is least squares over every patch; an "
        "nn.Conv2d trained on the MSE (L-BFGS, float64) lands on it. Check: trained vs LS < "
        "1e-7, LS within 10% of the true filter, σ̂ within 10% of σ.",
    )
