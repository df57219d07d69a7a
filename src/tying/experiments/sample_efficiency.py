"""A3 ``sample-efficiency`` (seed 003): sharing pools every position's evidence.

The seed's thought experiment: to learn a filter to the same error, an unshared
(locally connected) layer needs ~7,600 images where a shared (conv) layer needs ~10.
Here both estimate a 3×3 filter from the same noisy images under a linear-Gaussian
model, y = conv(x, w) + noise, by least squares: the shared estimate pools the
patches of every position, each unshared estimate sees one patch per image. Its
error falls like 1/(images × positions) instead of 1/images, so the images needed
for a target error differ by the number of positions. At report size the image is
22×40 pixels: 20×38 = 760 positions, the ratio behind the seed's 7,600 / 10.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from tying.experiments.common import by_size, log, new_figure, rngs
from tying.experiments.registry import Result, Table, experiment
from tying.report.format import format_number


@dataclasses.dataclass(frozen=True)
class EfficiencyConfig:
    height: int  # image size; positions = (height − 2)(width − 2) for a valid 3×3 conv
    width: int
    kernel: int = 3  # the filter both layers estimate
    noise: float = 1.0  # σ of the observation noise, the same for both layers
    target: float = 1.2e-3  # squared filter error to reach: the seed's "low error level"
    max_images: int = 20_000  # long stream: enough for the unshared layer to cross target
    batch: int = 500  # images per chunk of the stream (memory, not results)
    repeats: int = 60  # short independent streams averaged for the shared curve
    short_images: int = 400  # length of those streams
    band: float = 1.35  # pass when needed-ratio / positions is within [1/band, band]


SIZES = {
    "quick": EfficiencyConfig(
        height=12, width=12, max_images=16_000, batch=2_000, repeats=80, short_images=300
    ),
    "report": EfficiencyConfig(height=22, width=40),
}


def _grid(lo: int, hi: int, n: int) -> list[int]:
    """About ``n`` geometrically spaced image counts from ``lo`` to ``hi``."""
    return sorted({int(round(v)) for v in np.geomspace(lo, hi, n)})


def _observe(images: torch.Tensor, w: torch.Tensor, noise: float, gen: torch.Generator):
    """Patches (B, P, k²) of the images and their noisy filter responses (B, P)."""
    k = w.shape[-1]
    patches = F.unfold(images, k).transpose(1, 2)  # (B, P, k²)
    y = patches @ w.flatten() + noise * torch.randn(
        patches.shape[:2], generator=gen, dtype=images.dtype
    )
    return patches, y


def _solve(xtx: torch.Tensor, xty: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(xtx, xty.unsqueeze(-1)).squeeze(-1)


def _stream(
    cfg: EfficiencyConfig,
    w: torch.Tensor,
    n_images: int,
    checkpoints: list[int],
    gen: torch.Generator,
    unshared: bool,
) -> dict[int, tuple[float, float]]:
    """Least-squares errors after each checkpoint of one stream of images.

    Accumulates X^T X and X^T y per position; the shared estimate solves their sums
    over positions. Returns {images: (shared error, mean unshared error)}.
    """
    k2 = cfg.kernel**2
    P = (cfg.height - cfg.kernel + 1) * (cfg.width - cfg.kernel + 1)
    # Per-position sums only when the unshared estimates are wanted; the shared
    # estimate needs just their total.
    rows = P if unshared else 1
    xtx = torch.zeros(rows, k2, k2, dtype=torch.float64)
    xty = torch.zeros(rows, k2, dtype=torch.float64)
    out, seen = {}, 0
    todo = sorted(c for c in checkpoints if c <= n_images)
    while todo:
        step = min(cfg.batch, todo[0] - seen)  # stop exactly at each checkpoint
        images = torch.randn(step, 1, cfg.height, cfg.width, generator=gen, dtype=torch.float64)
        patches, y = _observe(images, w, cfg.noise, gen)
        if unshared:
            xtx += torch.einsum("bpi,bpj->pij", patches, patches)
            xty += torch.einsum("bpi,bp->pi", patches, y)
        else:
            flat = patches.reshape(-1, k2)  # (B*P, k²)
            xtx[0] += flat.T @ flat
            xty[0] += flat.T @ y.reshape(-1)
        seen += step
        if seen == todo[0]:
            todo.pop(0)
            shared = float((_solve(xtx.sum(0), xty.sum(0)) - w.flatten()).pow(2).sum())
            err_u = math.nan
            if unshared and seen > k2:  # each position's problem needs ≥ k² images
                err_u = float((_solve(xtx, xty) - w.flatten()).pow(2).sum(1).mean())
            out[seen] = (shared, err_u)
    return out


def _images_needed(images: list[int], errors: list[float], target: float) -> float:
    """Where the error curve crosses ``target``, interpolated in log-log."""
    for (n0, e0), (n1, e1) in zip(zip(images, errors), zip(images[1:], errors[1:])):
        if e0 > target >= e1:
            t = (math.log(e0) - math.log(target)) / (math.log(e0) - math.log(e1))
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    return math.nan


@experiment("sample-efficiency")
def sample_efficiency(size: str, seed: int) -> Result:
    cfg = by_size(SIZES, size)
    gen, _ = rngs(seed)
    positions = (cfg.height - cfg.kernel + 1) * (cfg.width - cfg.kernel + 1)
    w = torch.randn(cfg.kernel, cfg.kernel, generator=gen, dtype=torch.float64)
    w = w / w.norm()  # unit norm: squared error is relative error

    # One long stream gives the unshared curve (averaged over its P positions) ...
    long_grid = _grid(cfg.kernel**2 + 2, cfg.max_images, 28)
    long = _stream(cfg, w, cfg.max_images, long_grid, gen, unshared=True)
    # ... and short independent streams average the shared curve where it is small.
    short_grid = _grid(1, cfg.short_images, 18)
    shared_runs = [
        _stream(cfg, w, cfg.short_images, short_grid, gen, unshared=False)
        for _ in range(cfg.repeats)
    ]
    shared_err = [float(np.mean([r[n][0] for r in shared_runs])) for n in short_grid]
    unshared_err = [long[n][1] for n in long_grid]

    n_shared = _images_needed(short_grid, shared_err, cfg.target)
    n_unshared = _images_needed(long_grid, unshared_err, cfg.target)
    ratio = n_unshared / n_shared
    passed = math.isfinite(ratio) and 1 / cfg.band <= ratio / positions <= cfg.band
    log.info(
        "sample-efficiency: %.0f vs %.1f images, ratio %.0f, %d positions",
        n_unshared,
        n_shared,
        ratio,
        positions,
    )

    # Least-squares theory for Gaussian patches: E‖ŵ − w‖² = σ² k² / (n − k² − 1).
    k2, s2 = cfg.kernel**2, cfg.noise**2
    theory = {
        "shared": (s2 * k2 / cfg.target + k2 + 1) / positions,
        "unshared": s2 * k2 / cfg.target + k2 + 1,
    }
    rows = [
        {
            "layer": "shared (conv)",
            "images needed (measured)": n_shared,
            "images needed (theory)": theory["shared"],
            "seed's number": "~10",
        },
        {
            "layer": "unshared (locally connected)",
            "images needed (measured)": n_unshared,
            "images needed (theory)": theory["unshared"],
            "seed's number": "~7,600",
        },
        {
            "layer": "ratio",
            "images needed (measured)": ratio,
            "images needed (theory)": theory["unshared"] / theory["shared"],
            "seed's number": f"positions = {positions}",
        },
    ]
    curve_rows = [{"images": n, "shared error": e} for n, e in zip(short_grid, shared_err)]
    curve_rows += [{"images": n, "unshared error": e} for n, e in zip(long_grid, unshared_err)]

    fig = _sample_efficiency_figure(
        short_grid, shared_err, cfg, long_grid, unshared_err, positions, n_shared, n_unshared, ratio
    )
    return Result(
        tables=[
            Table("Images needed to reach the target filter error", rows),
            Table("Error curves", curve_rows),
        ],
        figures={"error-vs-images": fig},
        passed=passed,
        measured={
            "images needed, shared": n_shared,
            "images needed, unshared": n_unshared,
            "ratio": ratio,
            "positions": positions,
            "ratio / positions": ratio / positions,
        },
        key_figure=f"{format_number(n_unshared)} vs {format_number(n_shared)} images (ratio {format_number(ratio)}, "
        f"{positions} positions)",
        notes=f"The check requires the ratio of images needed to be within a factor "
        f"{cfg.band} of the number of positions. Both layers see the same kind of images "
        f"and noise (σ = {cfg.noise}); only pooling differs.",
    )


def _sample_efficiency_figure(
    short_grid, shared_err, cfg, long_grid, unshared_err, positions, n_shared, n_unshared, ratio
):
    fig, (ax,) = new_figure(width=6.4, height=4.0)
    ax.loglog(
        short_grid,
        shared_err,
        "o-",
        ms=3,
        color="#4c72b0",
        label=f"shared (conv), mean of {cfg.repeats} runs",
    )
    ax.loglog(
        long_grid,
        unshared_err,
        "s-",
        ms=3,
        color="#c44e52",
        label=f"unshared (LC), mean of {positions} positions",
    )
    ax.axhline(cfg.target, color="k", ls="--", lw=1, label=f"target error {cfg.target:g}")
    for n, color in ((n_shared, "#4c72b0"), (n_unshared, "#c44e52")):
        if math.isfinite(n):
            ax.axvline(n, color=color, ls=":", lw=1)
            ax.annotate(
                f"{format_number(n)}",
                (n, cfg.target),
                textcoords="offset points",
                xytext=(4, 8),
                color=color,
            )
    ax.set_xlabel("training images")
    ax.set_ylabel("‖ŵ − w‖² (relative)")
    ax.set_title(
        f"3×3 filter from noisy images: {positions} positions, ratio {format_number(ratio)}"
    )
    ax.legend(fontsize=8)
    return fig
