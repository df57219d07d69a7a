"""Training dynamics: CTC's blank phase and decoding, and clipped GAN flows (seed 004).

- D3 ``ctc``: a small conv net trained with ``torch.nn.CTCLoss`` on synthetic
  symbol streams. CTC sums over every alignment with a blank symbol by dynamic
  programming; early in training the net predicts blanks almost everywhere
  before it learns to emit symbols; at inference, greedy (best path) and prefix
  beam search (best labelling, approximately) are searches the training loss
  never sees, and they can disagree.
- D8 ``gan-clipping``: the Dirac GAN (a generator point θ against a linear
  discriminator ψ) with a little weight decay on the discriminator. Simultaneous
  gradient steps rotate around the equilibrium and never settle; clipping the
  gradient norm shortens the steps far from it and the flow spirals in. In the
  purely bilinear game (no damping) clipping only slows the outward spiral.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tying.experiments.common import largest, new_figure
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.report.format import format_number

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- D3


@dataclasses.dataclass(frozen=True)
class CTCConfig:
    symbols: int = 4  # labels 1..4; 0 is the blank
    min_len: int = 2
    max_len: int = 4
    frames: int = 24  # T
    noise: float = 0.3  # feature noise per frame
    hidden: int = 32
    batch: int = 32
    steps: int = 250
    lr: float = 1e-2
    eval_every: int = 5
    n_test: int = 200
    beam: int = 8


CTC = {"quick": CTCConfig(), "report": CTCConfig(steps=600, n_test=400)}


def _ctc_batch(cfg: CTCConfig, n: int, gen: torch.Generator):
    """Noisy one-hot frames: each symbol held 2–4 frames, 1–2 silent frames between symbols."""
    x = torch.zeros(n, cfg.symbols + 1, cfg.frames)
    labels, lengths = [], []
    for i in range(n):
        k = int(torch.randint(cfg.min_len, cfg.max_len + 1, (1,), generator=gen))
        seq = (torch.randint(1, cfg.symbols + 1, (k,), generator=gen)).tolist()
        t = int(torch.randint(0, 3, (1,), generator=gen))
        for s in seq:
            d = int(torch.randint(2, 5, (1,), generator=gen))
            x[i, s, t : t + d] = 1.0
            t += d + int(torch.randint(1, 3, (1,), generator=gen))
        x[i, 0, :] = (x[i, 1:].sum(0) == 0).float()  # a "silence" channel
        labels.append(seq)
        lengths.append(k)
    x = x + cfg.noise * torch.randn(x.shape, generator=gen)
    targets = torch.tensor([s for seq in labels for s in seq])
    return x, labels, targets, torch.tensor(lengths)


class _FrameNet(nn.Module):
    def __init__(self, cfg: CTCConfig) -> None:
        super().__init__()
        c = cfg.symbols + 1
        self.net = nn.Sequential(
            nn.Conv1d(c, cfg.hidden, 5, padding=2), nn.ReLU(), nn.Conv1d(cfg.hidden, c, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).log_softmax(1).permute(2, 0, 1)  # (T, B, C) for CTCLoss


def greedy_decode(log_probs: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. ``log_probs`` is ``(T, B, C)``."""
    best = log_probs.argmax(-1).T.tolist()  # (B, T)
    out = []
    for path in best:
        seq, prev = [], 0
        for c in path:
            if c != prev and c != 0:
                seq.append(c)
            prev = c
        out.append(seq)
    return out


def beam_decode(log_probs: torch.Tensor, beam: int) -> list[list[int]]:
    """CTC prefix beam search (blank 0): keeps the ``beam`` labellings of highest total probability."""
    lp = log_probs.detach().double().exp().numpy()  # (T, B, C)
    out = []
    for b in range(lp.shape[1]):
        beams = {(): (1.0, 0.0)}  # prefix -> (P ending in blank, P ending in its last symbol)
        for t in range(lp.shape[0]):
            p = lp[t, b]
            nxt: dict[tuple, list[float]] = {}
            for prefix, (pb, pnb) in beams.items():
                e = nxt.setdefault(prefix, [0.0, 0.0])
                e[0] += (pb + pnb) * p[0]  # a blank keeps the prefix
                if prefix:
                    e[1] += pnb * p[prefix[-1]]  # the last symbol repeated, no blank between
                for c in range(1, len(p)):
                    ext = prefix + (c,)
                    e2 = nxt.setdefault(ext, [0.0, 0.0])
                    # a repeat of the last symbol needs a blank between: only from pb
                    e2[1] += (pb if prefix and c == prefix[-1] else pb + pnb) * p[c]
            beams = dict(sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam])
            beams = {k: (v[0], v[1]) for k, v in beams.items()}
        out.append(list(max(beams.items(), key=lambda kv: kv[1][0] + kv[1][1])[0]))
    return out


def _label_logprob(log_probs: torch.Tensor, seqs: list[list[int]]) -> torch.Tensor:
    """Exact log P(labelling | x), summed over all alignments (CTC's forward algorithm)."""
    t, b, _ = log_probs.shape
    lengths = torch.tensor([len(s) for s in seqs])
    flat = torch.tensor([c for s in seqs for c in s], dtype=torch.long)
    nll = F.ctc_loss(
        log_probs,
        flat,
        torch.full((b,), t),
        lengths,
        blank=0,
        reduction="none",
        zero_infinity=False,
    )
    return -nll


def _decode_stats(cfg: CTCConfig, model: nn.Module, x, labels) -> dict:
    with torch.no_grad():
        lp = model(x)
    greedy, beam = greedy_decode(lp), beam_decode(lp, cfg.beam)
    lg, lb = _label_logprob(lp, greedy), _label_logprob(lp, beam)
    return {
        "greedy accuracy": statistics.mean(g == y for g, y in zip(greedy, labels)),
        "beam accuracy": statistics.mean(b == y for b, y in zip(beam, labels)),
        "greedy ≠ beam": statistics.mean(g != b for g, b in zip(greedy, beam)),
        "beam ≥ greedy in P(labelling)": float((lb >= lg - 1e-9).float().mean()),
        "mean log P gain of beam": float((lb - lg)[torch.isfinite(lg)].mean()),
    }


@experiment("ctc")
def ctc(size: str, seed: int) -> Result:
    check_size(size)
    cfg = CTC[size]
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _FrameNet(cfg)
    loss_fn = nn.CTCLoss(blank=0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x_eval, labels_eval, *_ = _ctc_batch(cfg, cfg.n_test, gen)
    true_blank = float((x_eval[:, 0] > 0.5).float().mean())  # roughly: silent frames
    history, snapshot = [], None
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0:
            with torch.no_grad():
                lp = model(x_eval)
            history.append(
                {
                    "step": step,
                    "blank ratio": float((lp.argmax(-1) == 0).float().mean()),
                    "greedy accuracy": statistics.mean(
                        g == y for g, y in zip(greedy_decode(lp), labels_eval)
                    ),
                }
            )
            if snapshot is None and history[-1]["greedy accuracy"] >= 0.3:
                snapshot = _decode_stats(cfg, model, x_eval, labels_eval)  # a half-trained net
                snapshot["step"] = step
        if step == cfg.steps:
            break
        x, _, targets, lengths = _ctc_batch(cfg, cfg.batch, gen)
        lp = model(x)
        loss = loss_fn(lp, targets, torch.full((cfg.batch,), cfg.frames), lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = _decode_stats(cfg, model, x_eval, labels_eval)
    blank = [h["blank ratio"] for h in history]
    first_third = blank[: max(2, len(blank) // 3)]
    peak = largest(first_third)
    passed = (
        peak > 0.95  # the blank phase
        and blank[-1] < peak - 0.1  # left behind
        and final["greedy accuracy"] > 0.8
        and snapshot is not None
        and snapshot["greedy ≠ beam"] > 0.0
        and snapshot["beam ≥ greedy in P(labelling)"] >= 0.95
    )
    fig, (ax1, ax2) = new_figure(2, height=3.3)
    steps = [h["step"] for h in history]
    ax1.plot(steps, blank, label="blank ratio (argmax = blank)")
    ax1.plot(steps, [h["greedy accuracy"] for h in history], label="greedy sequence accuracy")
    ax1.axhline(true_blank, color="k", ls=":", lw=0.8, label="silent frames in data")
    ax1.set_xlabel("training step")
    ax1.set_ylim(0, 1.02)
    ax1.legend(fontsize=8)
    with torch.no_grad():
        probs = model(x_eval[:1]).exp()[:, 0].T.numpy()  # (C, T)
    ax2.imshow(probs, aspect="auto", cmap="viridis", interpolation="nearest")
    ax2.set_yticks(range(cfg.symbols + 1), ["blank"] + [str(i) for i in range(1, cfg.symbols + 1)])
    ax2.set_xlabel("frame")
    ax2.set_title(f"trained outputs for label {labels_eval[0]}: peaky spikes")
    rows = [
        {
            "model": f"half-trained (step {snapshot['step']})" if snapshot else "half-trained",
            **(snapshot or {}),
        },
        {"model": f"trained (step {cfg.steps})", **final},
    ]
    for row in rows:
        row.pop("step", None)
    return Result(
        tables=[
            Table(f"decoding {cfg.n_test} test streams (beam {cfg.beam})", rows),
            Table("blank ratio over training", history[:: max(1, len(history) // 12)]),
        ],
        figures={"ctc": fig},
        passed=passed,
        measured={
            "peak blank ratio (first third)": peak,
            "final blank ratio": blank[-1],
            "final greedy accuracy": final["greedy accuracy"],
            "half-trained: greedy ≠ beam": snapshot["greedy ≠ beam"] if snapshot else None,
            "half-trained: beam ≥ greedy in P": snapshot["beam ≥ greedy in P(labelling)"]
            if snapshot
            else None,
        },
        key_figure=(
            f"blank ratio peaks at {format_number(peak)}, ends {format_number(blank[-1])}; accuracy {format_number(final['greedy accuracy'])}; "
            + (
                f"greedy ≠ beam on {format_number(snapshot['greedy ≠ beam'], 2, percent=True)} (half-trained)"
                if snapshot
                else "no half-trained snapshot to compare greedy and beam on"
            )
        ),
        notes=(
            "Blank ratio: fraction of frames whose most likely output is the blank. P(labelling) is "
            "computed exactly with CTC's forward algorithm (torch.nn.functional.ctc_loss); greedy "
            "decoding maximises one path, beam search approximately maximises the sum over paths."
        ),
    )


# ---------------------------------------------------------------------------- D8


@dataclasses.dataclass(frozen=True)
class GANConfig:
    steps: int = 1500
    lr: float = 1.0  # large against the rotation: plain steps never settle
    bilinear_lr: float = 0.1  # the undamped game grows by √(1+lr²) per step: keep it finite
    weight_decay: float = 0.1  # on the discriminator: the only damping in the game
    clips: tuple[float, ...] = (0.3, 0.1, 0.03)
    starts: int = 8  # initial points on the unit circle (the check uses their mean)


GAN = {"quick": GANConfig(), "report": GANConfig(steps=4000, starts=16)}


def _dirac_gan(
    cfg: GANConfig, clip: float | None, damping: float, bilinear: bool, seed: int
) -> np.ndarray:
    """Distance to the equilibrium (0, 0) per step, for each start: ``(steps + 1, starts)``."""
    gen = torch.Generator().manual_seed(seed)
    angle = torch.rand(cfg.starts, generator=gen, dtype=torch.float64) * 2 * math.pi
    theta = torch.cos(angle).requires_grad_(True)  # generator: position of the fake point mass
    psi = torch.sin(angle).requires_grad_(True)  # discriminator: D(x) = ψ·x
    dist = [torch.hypot(theta, psi).detach().numpy().copy()]
    for _ in range(cfg.steps):
        # L = f(ψθ) + f(0), f(t) = −log(1 + e^{−t}); G minimises L, D maximises L − (γ/2)ψ²
        value = theta * psi if bilinear else -F.softplus(-theta * psi)
        g_theta, g_psi = torch.autograd.grad(value.sum(), (theta, psi))
        g_psi = -g_psi + damping * psi.detach()  # the discriminator's descent direction
        if clip is not None:  # clip each run's joint gradient norm, as clip_grad_norm_ does
            norm = torch.hypot(g_theta, g_psi)
            scale = torch.clamp(clip / (norm + 1e-12), max=1.0)
            g_theta, g_psi = g_theta * scale, g_psi * scale
        lr = cfg.bilinear_lr if bilinear else cfg.lr
        with torch.no_grad():
            theta -= lr * g_theta
            psi -= lr * g_psi
        dist.append(torch.hypot(theta, psi).detach().numpy().copy())
    return np.array(dist)


@experiment("gan-clipping")
def gan_clipping(size: str, seed: int) -> Result:
    check_size(size)
    cfg = GAN[size]
    torch.set_num_threads(1)
    runs = {}
    for clip in (None, *cfg.clips):
        runs[("GAN", clip)] = _dirac_gan(cfg, clip, cfg.weight_decay, bilinear=False, seed=seed)
        runs[("bilinear", clip)] = _dirac_gan(cfg, clip, 0.0, bilinear=True, seed=seed)
    tail = max(1, cfg.steps // 10)

    def final(key):  # mean distance over the last 10% of steps and over starts
        return float(runs[key][-tail:].mean())

    start = float(runs[("GAN", None)][0].mean())
    best = min(cfg.clips)
    rows = []
    for game in ("GAN", "bilinear"):
        for clip in (None, *cfg.clips):
            rows.append(
                {
                    "game": "Dirac GAN, D weight decay"
                    if game == "GAN"
                    else "bilinear x·y, no damping",
                    "clip (grad norm)": "none" if clip is None else clip,
                    "start distance": start,
                    "final distance (last 10%)": final((game, clip)),
                }
            )
    passed = (
        final(("GAN", best)) < 0.25 * start  # clipped: spirals in
        and final(("GAN", None)) > 0.8 * start  # plain steps: keep circling
        and final(("GAN", best)) < 0.25 * final(("GAN", None))
        and final(("bilinear", best))
        < final(("bilinear", None))  # bilinear: clipping only slows it
    )
    fig, (ax1, ax2) = new_figure(2, height=3.3)
    for clip in (None, *cfg.clips):
        label = "no clipping" if clip is None else f"clip {clip}"
        ax1.semilogy(runs[("GAN", clip)].mean(1), label=label)
        ax2.semilogy(runs[("bilinear", clip)].mean(1), label=label)
    ax1.set_title(f"Dirac GAN, lr {cfg.lr}, D weight decay {cfg.weight_decay}")
    ax2.set_title(f"bilinear game (no damping), lr {cfg.bilinear_lr}")
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        ax.set_ylabel("distance to equilibrium")
        ax.legend(fontsize=8)
    return Result(
        tables=[
            Table(
                f"mean over {cfg.starts} starts on the unit circle, {cfg.steps} simultaneous steps",
                rows,
            )
        ],
        figures={"gan_clipping": fig},
        passed=passed,
        measured={
            "start distance": start,
            "final distance, no clipping": final(("GAN", None)),
            f"final distance, clip {best}": final(("GAN", best)),
            "bilinear final, no clipping": final(("bilinear", None)),
            f"bilinear final, clip {best}": final(("bilinear", best)),
        },
        key_figure=(
            f"distance to equilibrium {format_number(start)} → {format_number(final(('GAN', None)))} plain, "
            f"{format_number(final(('GAN', best)), 4)} with clip {best}"
        ),
        notes=(
            "Simultaneous gradient steps on both players. Clipping caps the step length, which far "
            "from equilibrium acts as a smaller learning rate, small enough for the discriminator's "
            "damping to beat the rotation; near it the flow circles at a radius of order the clip "
            "threshold. Without any damping (bilinear game) clipping turns exponential growth into "
            "slow growth but cannot converge: the flow itself conserves the distance."
        ),
    )
