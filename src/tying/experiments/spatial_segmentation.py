"""Segmentation and normalisation (seeds 001, 004): a tied U-Net, soft IoU/Dice, BN vs GN.

- B13 ``tied-unet``: a U-Net whose decoder applies the encoder's filters transposed
  keeps segmentation quality with about half the parameters.
- D1 ``soft-iou-dice``: soft IoU and soft Dice both train a segmenter; their
  gradients differ, most for small objects.
- D2 ``bn-vs-gn``: at batch size 2 BatchNorm's statistics are noisy and its eval
  mode differs from training; GroupNorm does not depend on the batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tying.experiments._spatial_common import (
    by_size,
    largest,
    log,
    n_params,
    new_figure,
    rngs,
    seeded,
    smallest,
    train,
)
from tying.experiments.registry import Result, Table, experiment
from tying.nn import SoftDiceLoss, SoftIoULoss, TiedUNet, soft_dice, soft_iou
from tying.report.format import format_number


def _scenes(side: int, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of 1–3 disks/boxes on a sloped, noisy background, and their masks."""
    yy, xx = np.mgrid[:side, :side].astype(np.float32)
    x = np.zeros((n, 1, side, side), np.float32)
    m = np.zeros((n, 1, side, side), np.float32)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            r = rng.uniform(side / 12, side / 5)
            cy, cx = rng.uniform(r, side - r, 2)
            if rng.random() < 0.5:
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                shape = (abs(yy - cy) <= r) & (abs(xx - cx) <= 0.7 * r)
            m[i, 0] = np.maximum(m[i, 0], shape)
        slope = rng.uniform(-1, 1, 2)
        background = 0.5 * (slope[0] * yy + slope[1] * xx) / side
        noise = 0.5 * rng.standard_normal((side, side))
        x[i, 0] = m[i, 0] * rng.uniform(0.8, 1.5) + background + noise
    return torch.from_numpy(x), torch.from_numpy(m)


def _hard_iou(logits: torch.Tensor, mask: torch.Tensor) -> float:
    pred = (logits > 0).float()
    inter = (pred * mask).sum()
    union = torch.clamp(pred + mask, max=1).sum()
    return float(inter / union)


def _fit_segmenter(net, loss_fn, x, m, *, steps, batch, lr, gen) -> None:
    train(
        net,
        lambda mod, idx: loss_fn(mod(x[idx]), m[idx]),
        len(x),
        steps=steps,
        batch=batch,
        lr=lr,
        gen=gen,
    )


# ---------------------------------------------------------------------------- B13


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    side: int  # square image side, divisible by 2**levels
    widths: tuple[int, ...]  # channels per level of the U-Net
    steps: int  # Adam steps, minibatch 16
    seeds: int  # repeats: one run's IoU is a noisy estimate
    equal_budget: bool  # also train an untied U-Net narrowed to the tied one's parameter count
    train: int = 192
    test: int = 96
    lr: float = 0.01


UNET = {
    "quick": UNetConfig(side=16, widths=(8, 16), steps=100, seeds=2, equal_budget=False),
    "report": UNetConfig(side=24, widths=(8, 16, 32), steps=150, seeds=2, equal_budget=True),
}


def _equal_budget_widths(widths: tuple[int, ...], budget: int) -> tuple[int, ...]:
    """Widths proportional to ``widths`` whose untied U-Net has about ``budget`` parameters."""
    best = widths
    for w0 in range(1, widths[0] + 1):
        cand = tuple(max(1, round(w * w0 / widths[0])) for w in widths)
        if abs(n_params(TiedUNet(1, 1, cand, tied=False)) - budget) < abs(
            n_params(TiedUNet(1, 1, best, tied=False)) - budget
        ):
            best = cand
    return best


@experiment("tied-unet")
def tied_unet(size: str, seed: int) -> Result:
    cfg = by_size(UNET, size)
    tied_physical = tying.count(TiedUNet(1, 1, cfg.widths)).physical
    small = _equal_budget_widths(cfg.widths, tied_physical) if cfg.equal_budget else ()
    variants = {
        "tied": dict(widths=cfg.widths, tied=True),
        "untied": dict(widths=cfg.widths, tied=False),
    }
    if cfg.equal_budget:
        variants[f"untied, widths {small} (same budget)"] = dict(widths=small, tied=False)
    scores = {name: [] for name in variants}
    counts, example = {}, {}
    loss_fn = SoftIoULoss(from_logits=True)  # claim B13 names soft IoU: train on it too
    for r in range(cfg.seeds):
        gen, rng = rngs(seed * 1000 + r)
        x, m = _scenes(cfg.side, cfg.train, rng)
        xt, mt = _scenes(cfg.side, cfg.test, rng)
        for name, kw in variants.items():
            with seeded(seed * 1000 + r):
                net = TiedUNet(1, 1, **kw)
            _fit_segmenter(net, loss_fn, x, m, steps=cfg.steps, batch=16, lr=cfg.lr, gen=gen)
            with torch.no_grad():
                logits = net(xt)
            scores[name].append(
                (float(soft_iou(logits, mt, from_logits=True)), _hard_iou(logits, mt))
            )
            c = tying.count(net)
            counts[name] = (c.logical, c.physical)
            if r == 0:
                example[name] = logits[0, 0].numpy()
        if r == 0:
            example["image"], example["mask"] = xt[0, 0].numpy(), mt[0, 0].numpy()
    mean = {name: np.mean(s, axis=0) for name, s in scores.items()}
    rows = [
        {
            "U-Net": name,
            "logical params": counts[name][0],
            "physical params": counts[name][1],
            "soft IoU": float(mean[name][0]),
            "IoU (threshold 0.5)": float(mean[name][1]),
        }
        for name in variants
    ]
    drop = float(mean["untied"][0] - mean["tied"][0])
    saved = 1 - counts["tied"][1] / counts["untied"][1]
    passed = drop <= 0.05 and saved >= 0.3 and float(mean["tied"][0]) >= 0.5
    log.info("tied-unet: soft IoU drop %.3f, parameters saved %.2f", drop, saved)

    fig, axes = new_figure(len(variants) + 2, width=2.4, height=2.6)
    panels = [("image", example["image"], "gray"), ("true mask", example["mask"], "gray")]
    panels += [
        (
            name.split(",")[0] if "budget" not in name else "untied, same budget",
            example[name] > 0,
            "gray",
        )
        for name in variants
    ]
    for ax, (title, img, cmap) in zip(axes, panels):
        ax.imshow(img, cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"tied: {counts['tied'][1]:,} params, soft IoU {format_number(mean['tied'][0])}   ·   untied: "
        f"{counts['untied'][1]:,} params, soft IoU {format_number(mean['untied'][0])}",
        fontsize=10,
    )
    return Result(
        tables=[Table(f"Test scores, mean of {cfg.seeds} runs (trained on soft-IoU loss)", rows)],
        figures={"predictions": fig},
        passed=passed,
        measured={
            "soft IoU tied": float(mean["tied"][0]),
            "soft IoU untied": float(mean["untied"][0]),
            "physical params saved": saved,
        },
        key_figure=f"soft IoU {format_number(mean['tied'][0])} vs {format_number(mean['untied'][0])} with {format_number(saved, 2, percent=True)} fewer params",
        notes="Decoder level l applies encoder level l's weight tensor as a transposed conv "
        "(tying.share('up.*.weight', like='down.*.weight')). Check: the tied U-Net loses at "
        "most 0.05 soft IoU, stores ≥ 30% fewer parameters, and reaches soft IoU ≥ 0.5.",
    )


# ---------------------------------------------------------------------------- D1


@dataclasses.dataclass(frozen=True)
class SoftLossConfig:
    side: int  # training image side
    widths: tuple[int, ...]  # segmenter: a small U-Net
    steps: int  # Adam steps, minibatch 16
    canvas: int = 64  # image side for the gradient-vs-size analysis
    radii: tuple[float, ...] = (1.5, 2, 3, 4, 6, 8, 12, 16, 24)
    confidence: float = 4.0  # prediction logits ±confidence inside/outside the object
    train: int = 192
    test: int = 96
    lr: float = 0.01


SOFT_LOSS = {
    "quick": SoftLossConfig(side=16, widths=(8, 16), steps=150),
    "report": SoftLossConfig(side=24, widths=(8, 16, 32), steps=150),
}


def _gradient_vs_size(cfg: SoftLossConfig) -> dict[str, np.ndarray]:
    """‖∂loss/∂logits‖ for a disk of each radius under one fixed, imperfect predictor."""
    yy, xx = torch.meshgrid(torch.arange(cfg.canvas), torch.arange(cfg.canvas), indexing="ij")
    c = (cfg.canvas - 1) / 2
    out = {"soft IoU": [], "soft Dice": [], "cross-entropy": [], "Dice": []}
    for r in cfg.radii:
        t = (((yy - c) ** 2 + (xx - c) ** 2) <= r * r).to(torch.float64)[None, None]
        for name, fn in (
            ("soft IoU", lambda z, t=t: 1 - soft_iou(z, t, from_logits=True, eps=0)),
            ("soft Dice", lambda z, t=t: 1 - soft_dice(z, t, from_logits=True, eps=0)),
            ("cross-entropy", lambda z, t=t: F.binary_cross_entropy_with_logits(z, t)),
        ):
            z = (cfg.confidence * (2 * t - 1)).requires_grad_(True)
            (g,) = torch.autograd.grad(fn(z), z)
            out[name].append(float(g.norm()))
        z = cfg.confidence * (2 * t - 1)
        out["Dice"].append(float(soft_dice(z, t, from_logits=True, eps=0)))
    return {k: np.array(v) for k, v in out.items()}


@experiment("soft-iou-dice")
def soft_iou_dice(size: str, seed: int) -> Result:
    cfg = by_size(SOFT_LOSS, size)
    gen, rng = rngs(seed)
    x, m = _scenes(cfg.side, cfg.train, rng)
    xt, mt = _scenes(cfg.side, cfg.test, rng)
    trained = {}
    for name, loss in (
        ("soft IoU", SoftIoULoss(from_logits=True)),
        ("soft Dice", SoftDiceLoss(from_logits=True)),
    ):
        with seeded(seed):
            net = TiedUNet(1, 1, cfg.widths)
        _fit_segmenter(net, loss, x, m, steps=cfg.steps, batch=16, lr=cfg.lr, gen=gen)
        with torch.no_grad():
            trained[name] = _hard_iou(net(xt), mt)

    grads = _gradient_vs_size(cfg)
    # each loss's weight on an object relative to its weight on the largest one
    rel = {
        name: grads[name] / grads[name][-1] for name in ("soft IoU", "soft Dice", "cross-entropy")
    }
    dice_over_iou_small = float(rel["soft Dice"][0] / rel["soft IoU"][0])
    ratio = grads["soft IoU"] / grads["soft Dice"]  # = 2 / (2 - Dice)² exactly
    theory = 2 / (2 - grads["Dice"]) ** 2
    rows = [
        {
            "radius": r,
            "Dice of the predictor": float(grads["Dice"][i]),
            "‖∇ soft IoU‖": float(grads["soft IoU"][i]),
            "‖∇ soft Dice‖": float(grads["soft Dice"][i]),
            "‖∇ cross-entropy‖": float(grads["cross-entropy"][i]),
            "IoU/Dice gradient ratio": float(ratio[i]),
        }
        for i, r in enumerate(cfg.radii)
    ]
    passed = (
        smallest(trained.values()) >= 0.6
        and dice_over_iou_small > 2.0
        and float(np.abs(ratio - theory).max()) < 1e-9
        and bool(rel["soft IoU"][0] > rel["cross-entropy"][0])
    )
    log.info(
        "soft-iou-dice: IoU %s, Dice/IoU small-object weight %.2f", trained, dice_over_iou_small
    )

    fig, (ax0, ax1) = new_figure(2, width=4.4, height=3.4)
    for name, color in (
        ("soft IoU", "#4c72b0"),
        ("soft Dice", "#c44e52"),
        ("cross-entropy", "#777777"),
    ):
        ax0.loglog(cfg.radii, rel[name], "o-", color=color, label=name)
    ax0.set_xlabel("object radius (pixels)")
    ax0.set_ylabel("gradient norm / at largest object")
    ax0.set_title("how much each loss pushes on an object", fontsize=10)
    ax0.legend(fontsize=8)
    ax1.semilogx(cfg.radii, ratio, "o-", color="#55a868", label="measured")
    ax1.semilogx(cfg.radii, theory, "k:", label="2 / (2 − Dice)²")
    ax1.set_xlabel("object radius (pixels)")
    ax1.set_ylabel("‖∇ soft IoU‖ / ‖∇ soft Dice‖")
    ax1.set_title("the two gradients differ most for small objects", fontsize=10)
    ax1.legend(fontsize=8)
    for ax in (ax0, ax1):
        ax.set_xticks(cfg.radii, [f"{r:g}" for r in cfg.radii])
        ax.minorticks_off()
    return Result(
        tables=[
            Table(
                "Segmenter trained on each loss (test IoU at threshold 0.5)",
                [{"training loss": k, "test IoU": v} for k, v in trained.items()],
            ),
            Table(
                f"Gradient w.r.t. logits for one disk on a {cfg.canvas}² canvas, predictor "
                f"logits ±{cfg.confidence}",
                rows,
            ),
        ],
        figures={"gradients_vs_size": fig},
        passed=passed,
        measured={
            "test IoU, trained on soft IoU": trained["soft IoU"],
            "test IoU, trained on soft Dice": trained["soft Dice"],
            "Dice/IoU relative weight on the smallest object": dice_over_iou_small,
            "max |IoU/Dice gradient ratio − 2/(2−D)²|": float(np.abs(ratio - theory).max()),
            "soft IoU relative weight on the smallest object": float(rel["soft IoU"][0]),
            "cross-entropy relative weight on the smallest object": float(rel["cross-entropy"][0]),
        },
        key_figure=f"both train (IoU {format_number(smallest(trained.values()))}+); Dice weighs the smallest "
        f"object {format_number(dice_over_iou_small)}× more than IoU does",
        notes="J = D/(2−D), so ∇J = 2/(2−D)²·∇D: parallel, scaled by a factor that runs from ½ "
        "(poor overlap, typical of small objects) to 2 (good overlap). Check: both losses "
        "train a U-Net to test IoU ≥ 0.6; relative to the largest object, soft Dice weighs the "
        "smallest one over 2× more than soft IoU; the measured ratio matches 2/(2−D)² to 1e-9; "
        "soft IoU weighs small objects more than cross-entropy does.",
    )


# ---------------------------------------------------------------------------- D2


@dataclasses.dataclass(frozen=True)
class NormConfig:
    seeds: int  # training runs per normalisation: one run is a noisy estimate
    # Adam steps at batch size 2: enough for every run to settle (stop 36: at 200 steps, one
    # epoch, BN evaluated in batches of 2 was still on its way from 0.70 to 0.99 while GN sat at
    # 0.97-1.0; the gap the check compares, 0.24-0.30 there, is 0.01-0.03 from 2,000 steps on)
    steps: int
    side: int = 8
    train: int = 400
    test: int = 500
    channels: int = 8
    groups: int = 2  # GroupNorm groups (channels / groups per group)
    exposure: float = 1.0  # per-image log-gain range: a random exposure scales the statistics
    contrast: float = 0.2  # the brighter channel is (1 + contrast)/(1 - contrast) times the other
    noise: float = 0.3  # pixel noise std
    lr: float = 0.01


NORM = {"quick": NormConfig(seeds=2, steps=2000), "report": NormConfig(seeds=6, steps=2000)}


def _two_colour(cfg: NormConfig, n: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-channel images: is channel 0 (label 0) or channel 1 (label 1) the brighter one?

    Every image has its own random exposure, so only the ratio of the channels carries the
    label: per-image statistics keep it, statistics shared with a batch partner blur it.
    """
    y = rng.integers(0, 2, n)
    gain = np.exp(rng.uniform(-cfg.exposure, cfg.exposure, n))
    sign = 1 - 2 * y  # +1: channel 0 brighter
    levels = np.stack([1 + cfg.contrast * sign, 1 - cfg.contrast * sign], axis=1) * gain[:, None]
    x = levels[:, :, None, None] + cfg.noise * rng.standard_normal((n, 2, cfg.side, cfg.side))
    return torch.tensor(x, dtype=torch.float32), torch.from_numpy(y)


def _norm_net(cfg: NormConfig, kind: str) -> nn.Module:
    def norm():
        if kind == "BN":
            return nn.BatchNorm2d(cfg.channels)
        return nn.GroupNorm(cfg.groups, cfg.channels)

    c = cfg.channels
    return nn.Sequential(
        nn.Conv2d(2, c, 3, padding=1),
        norm(),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1),
        norm(),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c, 2),
    )


@experiment("bn-vs-gn")
def bn_vs_gn(size: str, seed: int) -> Result:
    cfg = by_size(NORM, size)
    acc = {"BN (eval mode)": [], "BN (batch stats, pairs)": [], "GN": []}
    dependence = {"BN": 0.0, "GN": 0.0}
    batch_means = running = None
    for r in range(cfg.seeds):
        gen, rng = rngs(seed * 1000 + r)
        x, y = _two_colour(cfg, cfg.train, rng)
        xt, yt = _two_colour(cfg, cfg.test, rng)
        for kind in ("BN", "GN"):
            with seeded(seed * 1000 + r):
                net = _norm_net(cfg, kind)
            train(
                net,
                lambda mod, idx, x=x, y=y: F.cross_entropy(mod(x[idx]), y[idx]),
                len(x),
                steps=cfg.steps,
                batch=2,
                lr=cfg.lr,
                gen=gen,
            )
            with torch.no_grad():
                net.eval()
                evaluated = float((net(xt).argmax(1) == yt).float().mean())
                acc["GN" if kind == "GN" else "BN (eval mode)"].append(evaluated)
                net.train()  # batch statistics, as in training: the output depends on the partner
                first = net(xt[0:2])[0]
                other = net(torch.stack([xt[0], xt[2]]))[0]
                dependence[kind] = largest([dependence[kind], float((first - other).abs().max())])
                if kind == "BN":
                    pair_pred = torch.cat(
                        [net(xt[i : i + 2]).argmax(1) for i in range(0, cfg.test - 1, 2)]
                    )
                    acc["BN (batch stats, pairs)"].append(
                        float((pair_pred == yt[: len(pair_pred)]).float().mean())
                    )
                    if r == 0:  # the statistics BN normalises with, batch by batch
                        feats = net[0](xt)  # (N, C, H, W) before the first norm
                        batch_means = feats[: cfg.test // 2 * 2, 0].reshape(-1, 2, cfg.side**2)
                        batch_means = batch_means.mean(dim=(1, 2)).numpy()
                        running = float(net[1].running_mean[0])
    mean = {k: float(np.mean(v)) for k, v in acc.items()}
    gap = mean["GN"] - mean["BN (eval mode)"]
    gap_at_2 = mean["GN"] - mean["BN (batch stats, pairs)"]
    train_eval_gap = mean["BN (eval mode)"] - mean["BN (batch stats, pairs)"]
    passed = (
        gap_at_2 >= 0.1
        and gap >= -0.02
        and abs(train_eval_gap) >= 0.05
        and dependence["GN"] == 0.0
        and dependence["BN"] > 1e-3
    )
    log.info("bn-vs-gn: %s", mean)
    rows = [
        {"normalisation": k, **{f"run {i}": a for i, a in enumerate(v)}, "mean": mean[k]}
        for k, v in acc.items()
    ]

    fig, (ax0, ax1) = new_figure(2, width=4.4, height=3.4)
    names = list(acc)
    for j, name in enumerate(names):
        ax0.scatter(np.full(len(acc[name]), j), acc[name], color="#999999", s=12, zorder=2)
        ax0.bar(j, mean[name], color=("#c44e52", "#dd8452", "#4c72b0")[j], alpha=0.8)
    ax0.set_xticks(range(3), ["BN\neval", "BN\nbatch of 2", "GN"])
    ax0.set_ylim(0.4, 1.02)
    ax0.set_ylabel("test accuracy")
    ax0.set_title(f"trained at batch size 2 ({cfg.seeds} runs)", fontsize=10)
    ax1.hist(batch_means, bins=30, color="#c44e52", alpha=0.8, label="mean of each batch of 2")
    ax1.axvline(running, color="k", ls="--", label="running mean (used in eval)")
    ax1.set_xlabel("channel 0 pre-norm mean")
    ax1.set_title("BN's statistics at batch size 2", fontsize=10)
    ax1.legend(fontsize=8)
    return Result(
        tables=[Table("Test accuracy after training at batch size 2", rows)],
        figures={"accuracy_and_statistics": fig},
        passed=passed,
        measured={
            "GN − BN accuracy, evaluated in batches of 2": gap_at_2,
            "GN − BN accuracy, BN in eval mode": gap,
            "BN eval − BN batch-of-2 accuracy (train/eval gap)": train_eval_gap,
            "GN output change when the batch partner changes": dependence["GN"],
            "BN output change when the batch partner changes": dependence["BN"],
        },
        key_figure=f"accuracy at batch 2: GN {format_number(mean['GN'])} vs BN {format_number(mean['BN (batch stats, pairs)'])} "
        f"(BN eval mode {format_number(mean['BN (eval mode)'])})",
        notes="Two-channel images under a random exposure per image; the label is which "
        "channel is brighter, so only per-image ratios carry it. A two-conv net, Adam at batch "
        "size 2, torch's BatchNorm2d vs GroupNorm. BN normalises with the statistics of two "
        "images in training and with running averages in eval; GN with each image's own. "
        "Check: evaluated in batches of 2, GN's accuracy beats BN's by ≥ 0.1; BN's accuracy "
        "changes by ≥ 0.05 between batch statistics and eval mode (its train/eval gap); GN's "
        "output for an image is bit-identical whatever its batch partner (BN's is not), and GN "
        "is not worse than BN's eval mode (tolerance 0.02). "
        f"Every run trains for {cfg.steps} steps ({cfg.steps * 2 // cfg.train} epochs), to where "
        "the accuracies have settled: after one epoch (200 steps, the budget before stop 36) BN "
        "in batches of 2 still lagged GN by 0.24-0.30 and the check passed, but that lag is "
        "training not yet done, not a property of BN: trained on, BN learns to use its "
        "partner's statistics and reaches GN's accuracy within 0.01-0.03, and its eval-mode "
        "accuracy differs from its batch-of-2 accuracy by 0.02-0.05, either way. At "
        "convergence the first condition fails (report, seed 0: the train/eval-gap condition "
        "too).",
    )
