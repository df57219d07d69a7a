"""Sharing across space and symmetry (seeds 000, 001, 003): equivariance and what it buys.

- B1 ``translation-equivariance``: a conv layer with circular padding commutes with
  shifts exactly; zero padding breaks it only at the border; a dense layer not at all.
- B2 ``c4-equivariance``: a group conv whose kernels are rotated copies of one kernel
  commutes with rotations (orientation channels permute); untied kernels do not.
- B3 ``c4-sample-efficiency``: on rotation-symmetric data the C4-tied net learns
  from far fewer samples than a plain CNN of the same size.
- A4 ``motif-scan``: a 1-D conv + global max pool finds GATTACA at positions never
  seen in training; a dense net does not.
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
from tying.nn import GROUPS, GroupConv2d, GroupPool, LiftingConv2d, group_act
from tying.report.format import format_number

F64 = torch.float64


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------- B1


@dataclasses.dataclass(frozen=True)
class TranslationConfig:
    image: int  # square side; the dense layer costs (3·image²)·(2·image²) weights
    shifts: tuple[tuple[int, int], ...]  # (down, right) shifts to test
    channels: int = 8  # conv width: enough to be a real two-layer net


TRANSLATION = {
    "quick": TranslationConfig(image=12, shifts=((1, 0), (0, 3), (2, 5))),
    "report": TranslationConfig(image=24, shifts=((1, 0), (0, 3), (2, 5), (7, 7), (11, 4))),
}


@experiment("translation-equivariance")
def translation_equivariance(size: str, seed: int) -> Result:
    cfg = by_size(TRANSLATION, size)
    gen, _ = rngs(seed)
    n, c = cfg.image, cfg.channels
    with seeded(seed):

        def conv_net(mode: str) -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(3, c, 3, padding=1, padding_mode=mode),
                nn.ReLU(),
                nn.Conv2d(c, 2, 3, padding=1, padding_mode=mode),
            ).to(F64)

        dense = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * n * n, 2 * n * n), nn.Unflatten(1, (2, n, n))
        )
        models = {
            "conv, circular padding": conv_net("circular"),
            "conv, zero padding": conv_net("zeros"),
            "dense (no sharing)": dense.to(F64),
        }
    x = torch.randn(4, 3, n, n, generator=gen, dtype=F64)
    rows, worst, maps = [], {}, {}
    with torch.no_grad():
        for name, model in models.items():
            y = model(x)
            errs = []
            for dy, dx in cfg.shifts:
                shifted_out = model(torch.roll(x, (dy, dx), dims=(-2, -1)))
                errs.append(_rel_err(shifted_out, torch.roll(y, (dy, dx), dims=(-2, -1))))
            # where the error lives, for the largest shift
            dy, dx = cfg.shifts[-1]
            diff = model(torch.roll(x, (dy, dx), (-2, -1))) - torch.roll(y, (dy, dx), (-2, -1))
            maps[name] = diff.abs().amax(dim=(0, 1)).numpy()
            worst[name] = largest(errs)
            rows.append(
                {
                    "model": name,
                    "parameters": n_params(model),
                    **{f"rel. error, shift {s}": e for s, e in zip(cfg.shifts, errs)},
                }
            )
            log.info("translation-equivariance: %s max rel error %.3g", name, worst[name])
    # zero padding: the error sits within the shift (+ receptive field) of the border
    zmap = maps["conv, zero padding"]
    interior = zmap[cfg.shifts[-1][0] + 2 : -2, cfg.shifts[-1][1] + 2 : -2]
    circ, dense_err = worst["conv, circular padding"], worst["dense (no sharing)"]
    passed = circ < 1e-12 and dense_err > 0.1 and float(np.abs(interior).max()) < 1e-12

    fig, axes = new_figure(3, width=3.4, height=3.2)
    vmax = max(float(m.max()) for m in maps.values())
    for ax, (name, m) in zip(axes, maps.items()):
        im = ax.imshow(m, vmin=0, vmax=vmax, cmap="magma")
        ax.set_title(f"{name}\nmax rel. error {format_number(worst[name])}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.8, label="|f(shift x) − shift f(x)|")
    fig.suptitle(f"Error map for shift {cfg.shifts[-1]} (float64)")
    return Result(
        tables=[Table("Relative equivariance error ‖f(Sx) − S f(x)‖ / ‖f(x)‖", rows)],
        figures={"error_maps": fig},
        passed=passed,
        measured={
            "circular conv max rel. error": circ,
            "zero-pad conv interior max error": float(np.abs(interior).max()),
            "dense max rel. error": dense_err,
        },
        key_figure=f"circular conv error {format_number(circ)} vs dense {format_number(dense_err)}",
        notes="Shifts are cyclic (torch.roll), so circular padding is the conv that matches "
        "them exactly; with zero padding only pixels within reach of the border differ. Check: "
        "circular < 1e-12, zero-pad interior < 1e-12, dense > 0.1.",
    )


# ---------------------------------------------------------------------------- B2


@dataclasses.dataclass(frozen=True)
class C4EquivConfig:
    image: int  # square side (rot90 maps a square grid onto itself)
    channels: int  # orientation-channel width of each layer
    batch: int = 4


C4_EQUIV = {
    "quick": C4EquivConfig(image=11, channels=4),
    "report": C4EquivConfig(image=21, channels=8),
}


def _group_net(group: str, channels: int, tied: bool) -> nn.Module:
    return nn.Sequential(
        LiftingConv2d(1, channels, 3, group=group, tied=tied, dtype=F64),
        nn.ReLU(),
        GroupConv2d(channels, channels, 3, group=group, tied=tied, dtype=F64),
        nn.ReLU(),
        GroupConv2d(channels, 2, 3, group=group, tied=tied, dtype=F64),
    )


def _letter_f(n: int) -> torch.Tensor:
    """A letter F on an n×n canvas, (1, 1, n, n) float64: it looks different under every element of D4."""
    img = torch.zeros(1, 1, n, n, dtype=F64)
    a, b = n // 5, n - n // 5
    img[..., a:b, a] = 1.0  # stem
    img[..., a, a:b] = 1.0  # top bar
    img[..., (a + b) // 2, a : (a + b) // 2 + 1] = 1.0  # middle bar
    return img


@experiment("c4-equivariance")
def c4_equivariance(size: str, seed: int) -> Result:
    cfg = by_size(C4_EQUIV, size)
    gen, _ = rngs(seed)
    x = torch.randn(cfg.batch, 1, cfg.image, cfg.image, generator=gen, dtype=F64)
    rows, errors, counts = [], {}, {}
    with torch.no_grad():
        for group in ("C4", "D4"):
            for tied in (True, False):
                with seeded(seed):
                    net = _group_net(group, cfg.channels, tied)
                y = net(x)
                label = f"{group} {'tied' if tied else 'untied'}"
                c = tying.count(net)
                counts[label] = (c.logical, c.physical)
                for a in GROUPS[group][1:]:
                    err = _rel_err(net(group_act(x, a, group)), group_act(y, a, group))
                    errors[(label, a)] = err
                    rows.append(
                        {
                            "net": label,
                            "transform": a,
                            "rel. error": err,
                            "logical params": c.logical,
                            "physical params": c.physical,
                        }
                    )
    tied_max = largest(e for (lab, _), e in errors.items() if "untied" not in lab)
    untied_min = smallest(e for (lab, _), e in errors.items() if "untied" in lab)
    passed = tied_max < 1e-12 and untied_min > 0.1
    log.info("c4-equivariance: tied max %.3g, untied min %.3g", tied_max, untied_min)

    # what equivariance looks like: the 4 orientation maps of one channel, before and after
    with seeded(seed):
        net = _group_net("C4", cfg.channels, True)
    glyph = _letter_f(cfg.image)  # an asymmetric picture, so the rotation is easy to see
    with torch.no_grad():
        y0 = net(glyph)[0, 0].numpy()  # (4, H, W)
        y1 = net(group_act(glyph, "r", "C4"))[0, 0].numpy()
    fig, axes = new_figure(5, 2, width=2.3, height=2.3)
    for g in range(4):
        axes[g].imshow(y0[g], cmap="viridis")
        axes[5 + g].imshow(y1[g], cmap="viridis")
        axes[g].set_title(f"orientation {GROUPS['C4'][g]}", fontsize=9)
    axes[0].set_ylabel("f(x)")
    axes[5].set_ylabel("f(rotate x)")
    labels = ["C4 tied", "C4 untied", "D4 tied", "D4 untied"]
    worst = [largest(e for (lab, _), e in errors.items() if lab == name) for name in labels]
    for ax in axes[:4] + axes[5:9]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[4].imshow(glyph[0, 0].numpy(), cmap="gray")
    axes[4].set_title("input x", fontsize=9)
    axes[4].set_xticks([])
    axes[4].set_yticks([])
    bar = axes[9]
    bar.bar(range(4), np.maximum(worst, 1e-17), color=["#4c72b0", "#c44e52"] * 2)
    bar.set_yscale("log")
    bar.set_xticks(range(4), [s.replace(" ", "\n") for s in labels], fontsize=8)
    bar.set_title("max rel. error", fontsize=9)
    bar.set_ylabel("‖f(g·x) − g·f(x)‖ / ‖f(x)‖ (log)", fontsize=8)
    fig.suptitle("Rotating the input rotates each map and shifts the orientations by one")
    return Result(
        tables=[Table("Equivariance error ‖f(g·x) − g·f(x)‖ / ‖f(x)‖ per group element", rows)],
        figures={"orientation_maps": fig},
        passed=passed,
        measured={
            "tied max rel. error": tied_max,
            "untied min rel. error": untied_min,
            "C4 tied logical/physical params": counts["C4 tied"],
        },
        key_figure=f"tied error {format_number(tied_max)}, untied {format_number(untied_min)}",
        notes="Three layers (lift, group conv, group conv) in float64. g·f permutes the "
        "orientation axis as well as rotating (or mirroring, for D4) each map. Check: every "
        "tied error < 1e-12 and every untied error > 0.1.",
    )


# ---------------------------------------------------------------------------- B3


@dataclasses.dataclass(frozen=True)
class SampleEffConfig:
    per_class: tuple[int, ...]  # training images per class (random orientations)
    seeds: int  # repeats per size: one training run is a noisy estimate
    steps: int  # full-batch Adam steps: both nets fit their training set by then
    image: int = 10  # square side
    pattern: int = 4  # side of each class's random binary pattern
    classes: int = 4
    noise: float = 0.15  # pixel noise std (patterns are 0/1)
    test: int = 400
    lr: float = 0.03
    c4_channels: int = 6  # C4 net: 6 channels × 4 orientations ...
    plain_channels: int = 12  # ... and a plain net of about the same parameter count


SAMPLE_EFF = {
    "quick": SampleEffConfig(per_class=(1, 4), seeds=2, steps=100),
    "report": SampleEffConfig(per_class=(1, 2, 4, 8, 16, 32), seeds=3, steps=120),
}


def _patterns(cfg: SampleEffConfig, rng: np.random.Generator) -> np.ndarray:
    """One binary pattern per class, none rotation-symmetric, none a rotation of another."""
    out: list[np.ndarray] = []
    while len(out) < cfg.classes:
        p = (rng.random((cfg.pattern, cfg.pattern)) < 0.5).astype(np.float32)
        rots = [np.rot90(p, k) for k in range(4)]
        if p.sum() < 5 or any(np.array_equal(rots[0], r) for r in rots[1:]):
            continue
        if any(np.array_equal(q, r) for q in out for r in rots):
            continue
        out.append(p)
    return np.stack(out)


def _rotated_samples(cfg, pats, labels, rng) -> torch.Tensor:
    n, s, p = len(labels), cfg.image, cfg.pattern
    x = np.zeros((n, 1, s, s), np.float32)
    for i, y in enumerate(labels):
        r, c = rng.integers(0, s - p + 1, 2)
        x[i, 0, r : r + p, c : c + p] = np.rot90(pats[y], rng.integers(4))
    x += cfg.noise * rng.standard_normal(x.shape).astype(np.float32)
    return torch.from_numpy(x)


class C4Classifier(nn.Module):
    """Lift → ReLU → C4 group conv → ReLU → orientation max → spatial max → linear."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.lift = LiftingConv2d(1, channels, 3)
        self.conv = GroupConv2d(channels, channels, 3)
        self.pool = GroupPool("max")
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        h = self.conv(self.lift(x).relu()).relu()  # (B, C, 4, H, W)
        return self.fc(self.pool(h).amax(dim=(-2, -1)))  # rotation-invariant features


class PlainClassifier(nn.Module):
    """Conv → ReLU → conv → ReLU → spatial max → linear (translation-invariant only)."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.a = nn.Conv2d(1, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 3, padding=1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.b(self.a(x).relu()).relu().amax(dim=(-2, -1)))


@experiment("c4-sample-efficiency")
def c4_sample_efficiency(size: str, seed: int) -> Result:
    cfg = by_size(SAMPLE_EFF, size)
    models = {
        "C4-tied": lambda: C4Classifier(cfg.c4_channels, cfg.classes),
        "plain CNN": lambda: PlainClassifier(cfg.plain_channels, cfg.classes),
    }
    acc = {name: np.zeros((len(cfg.per_class), cfg.seeds)) for name in models}
    sizes = {}
    for r in range(cfg.seeds):
        gen, rng = rngs(seed * 1000 + r)
        pats = _patterns(cfg, rng)
        y_test = rng.integers(0, cfg.classes, cfg.test)
        x_test = _rotated_samples(cfg, pats, y_test, rng)
        y_test = torch.from_numpy(y_test)
        for i, k in enumerate(cfg.per_class):
            y = np.repeat(np.arange(cfg.classes), k)
            x, y = _rotated_samples(cfg, pats, y, rng), torch.from_numpy(y)
            for name, make in models.items():
                with seeded(seed * 1000 + r):
                    net = make()
                sizes[name] = n_params(net)
                train(
                    net,
                    lambda m, idx, x=x, y=y: F.cross_entropy(m(x[idx]), y[idx]),
                    len(y),
                    steps=cfg.steps,
                    batch=len(y),
                    lr=cfg.lr,
                    gen=gen,
                )
                with torch.no_grad():
                    acc[name][i, r] = float((net(x_test).argmax(1) == y_test).float().mean())
    mean = {name: a.mean(axis=1) for name, a in acc.items()}
    gap = mean["C4-tied"] - mean["plain CNN"]
    rows = [
        {
            "images per class": k,
            "C4-tied accuracy": float(mean["C4-tied"][i]),
            "plain CNN accuracy": float(mean["plain CNN"][i]),
            "gap": float(gap[i]),
        }
        for i, k in enumerate(cfg.per_class)
    ]
    passed = float(gap.mean()) >= 0.1 and bool((gap >= -0.02).all())
    log.info("c4-sample-efficiency: mean gap %.3f", gap.mean())

    fig, (ax,) = new_figure(width=5.2, height=3.6)
    for name, color in (("C4-tied", "#4c72b0"), ("plain CNN", "#c44e52")):
        ax.plot(
            cfg.per_class, mean[name], "o-", color=color, label=f"{name} ({sizes[name]:,} params)"
        )
        for r in range(cfg.seeds):
            ax.plot(cfg.per_class, acc[name][:, r], ".", color=color, alpha=0.35)
    ax.axhline(1 / cfg.classes, color="gray", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training images per class (random 90° orientation)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Same data, same size: the tied net needs fewer samples")
    return Result(
        tables=[Table(f"Test accuracy, mean of {cfg.seeds} runs", rows)],
        figures={"accuracy_vs_samples": fig},
        passed=passed,
        measured={
            "mean accuracy gap (C4 − plain)": float(gap.mean()),
            "smallest gap": float(gap.min()),
            "parameters C4 / plain": (sizes["C4-tied"], sizes["plain CNN"]),
        },
        key_figure=f"C4 beats plain by {format_number(gap.mean(), sign=True)} accuracy on average",
        notes=f"{cfg.classes} random {cfg.pattern}×{cfg.pattern} binary patterns, each at a random "
        f"position and 90° orientation in a {cfg.image}×{cfg.image} image with noise "
        f"σ={cfg.noise}. The C4 net pools over orientations, so it is invariant by construction. "
        "Check: mean gap ≥ 0.10 and C4 never more than 0.02 behind.",
    )


# ---------------------------------------------------------------------------- A4


@dataclasses.dataclass(frozen=True)
class MotifConfig:
    length: int  # sequence length; motifs in training start in the left half only
    train: int  # positive and negative training sequences, each
    steps: int  # Adam steps on minibatches of 128
    filters: int = 8  # conv filters of width len(motif); spares survive dead-ReLU starts
    test: int = 300  # test sequences per group (seen positions, unseen positions, negatives)
    lr: float = 0.02
    motif: str = "GATTACA"


MOTIF = {
    "quick": MotifConfig(length=40, train=300, steps=150),
    "report": MotifConfig(length=80, train=600, steps=300, filters=16),
}


def _sequences(cfg: MotifConfig, rng, n: int, starts: tuple[int, int] | None) -> torch.Tensor:
    """One-hot (n, 4, L) random DNA; with ``starts`` the motif is planted at a start in that range."""
    s = rng.integers(0, 4, (n, cfg.length))
    if starts is not None:
        motif = np.array(["ACGT".index(ch) for ch in cfg.motif])
        for i, p in enumerate(rng.integers(starts[0], starts[1] + 1, n)):
            s[i, p : p + len(motif)] = motif
    return F.one_hot(torch.from_numpy(s), 4).float().transpose(1, 2)


@experiment("motif-scan")
def motif_scan(size: str, seed: int) -> Result:
    cfg = by_size(MOTIF, size)
    gen, rng = rngs(seed)
    m, L = len(cfg.motif), cfg.length
    seen, unseen = (0, L // 2 - m), (L // 2, L - m)
    x = torch.cat([_sequences(cfg, rng, cfg.train, seen), _sequences(cfg, rng, cfg.train, None)])
    y = torch.cat([torch.ones(cfg.train), torch.zeros(cfg.train)])
    with seeded(seed):
        # padding m-1: a filter keyed on a shifted alignment still sees a motif at the edge
        conv = nn.Sequential(
            nn.Conv1d(4, cfg.filters, m, padding=m - 1),
            nn.ReLU(),
            nn.AdaptiveMaxPool1d(1),
            nn.Flatten(),
            nn.Linear(cfg.filters, 1),
        )
        dense = nn.Sequential(nn.Flatten(), nn.Linear(4 * L, 32), nn.ReLU(), nn.Linear(32, 1))
    nets = {"conv + global max pool": conv, "dense MLP": dense}
    for net in nets.values():
        train(
            net,
            lambda mod, idx: F.binary_cross_entropy_with_logits(mod(x[idx]).squeeze(1), y[idx]),
            len(y),
            steps=cfg.steps,
            batch=128,
            lr=cfg.lr,
            gen=gen,
        )
    tests = {
        "positives, seen positions": (_sequences(cfg, rng, cfg.test, seen), 1.0),
        "positives, unseen positions": (_sequences(cfg, rng, cfg.test, unseen), 1.0),
        "negatives": (_sequences(cfg, rng, cfg.test, None), 0.0),
    }
    rows, accs = [], {}
    with torch.no_grad():
        for name, net in nets.items():
            row = {"model": name, "parameters": n_params(net)}
            for tname, (xt, label) in tests.items():
                a = float(((net(xt).squeeze(1) > 0).float() == label).float().mean())
                row[tname] = accs[(name, tname)] = a
            rows.append(row)
        # accuracy per motif start, for the figure
        starts = np.arange(0, L - m + 1)
        per_pos = {name: [] for name in nets}
        for p in starts:
            xp = _sequences(cfg, rng, 60, (int(p), int(p)))
            for name, net in nets.items():
                per_pos[name].append(float((net(xp).squeeze(1) > 0).float().mean()))
    unseen_conv = accs[("conv + global max pool", "positives, unseen positions")]
    neg_conv = accs[("conv + global max pool", "negatives")]
    unseen_dense = accs[("dense MLP", "positives, unseen positions")]
    passed = unseen_conv >= 0.95 and neg_conv >= 0.9 and unseen_dense < unseen_conv - 0.2
    log.info("motif-scan: conv unseen %.3f, dense unseen %.3f", unseen_conv, unseen_dense)

    fig, (ax,) = new_figure(width=6.4, height=3.4)
    ax.axvspan(seen[0] - 0.5, seen[1] + 0.5, color="#dddddd", label="motif starts seen in training")
    for (name, vals), color in zip(per_pos.items(), ("#4c72b0", "#c44e52")):
        ax.plot(starts, vals, "o-", ms=3, color=color, label=name)
    ax.set_xlabel(f"start position of {cfg.motif}")
    ax.set_ylabel("detection rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("One filter scanned over every position generalises to new positions")
    return Result(
        tables=[Table("Test accuracy by group", rows)],
        figures={"detection_by_position": fig},
        passed=passed,
        measured={
            "conv accuracy, unseen positions": unseen_conv,
            "conv accuracy, negatives": neg_conv,
            "dense accuracy, unseen positions": unseen_dense,
        },
        key_figure=f"unseen positions: conv {format_number(unseen_conv)} vs dense {format_number(unseen_dense)}",
        notes=f"Training positives carry {cfg.motif} only in the left half of a length-{L} "
        "sequence. Check: conv ≥ 0.95 on unseen positions and ≥ 0.9 on negatives; the dense net "
        "at least 0.2 lower on unseen positions.",
    )
