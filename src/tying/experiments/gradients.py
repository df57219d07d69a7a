"""Gradients and initialisation of shared weights (seeds 000–002).

- B5 ``bptt-sum``: the gradient of a weight used many times (over time, over Siamese
  towers, over layers) is the sum of its per-use gradients.
- B15 ``tied-init``: Xavier/He fan-in counts the inputs of one output unit and is not
  multiplied by how often a shared weight is reused.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
from torch import nn

import tying
from tying.experiments.common import (
    UnrolledRNN,
    by_size,
    largest,
    log,
    new_figure,
    rngs,
    smallest,
)
from tying.experiments.registry import Result, Table, experiment
from tying.nn import LocallyConnected2d
from tying.report.format import format_number

# ---------------------------------------------------------------------------- B5


@dataclasses.dataclass(frozen=True)
class BPTTConfig:
    input_size: int = 4
    hidden_size: int = 8
    steps: int = 12  # RNN time steps = uses of the recurrent weights
    towers_in: int = 6  # Siamese tower input width
    layers: int = 6  # ALBERT-style stack depth = uses of the shared block
    width: int = 16  # width of the shared block
    batch: int = 5
    tol: float = 1e-12  # relative, float64: the sum is exact up to round-off


BPTT = {
    "quick": BPTTConfig(),
    "report": BPTTConfig(steps=40, layers=12, width=32, batch=16),
}


class _Tower(nn.Module):
    def __init__(self, d_in: int, d_hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh(), nn.Linear(d_hidden, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Siamese(nn.Module):
    def __init__(self, d_in: int, d_hidden: int) -> None:
        super().__init__()
        self.left = _Tower(d_in, d_hidden)
        self.right = _Tower(d_in, d_hidden)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.left(a) - self.right(b)).pow(2).sum(1)  # (B,) squared distances


class _Block(nn.Module):
    """A pre-norm residual MLP block (the shape of a transformer layer's FFN half)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


class _Stack(nn.Module):
    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(width) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _same_start(untied: nn.Module, uses: list[str]) -> None:
    """Copy the first use's weights into every other use (untied, but equal values)."""
    src = untied.get_submodule(uses[0]).state_dict()
    for path in uses[1:]:
        untied.get_submodule(path).load_state_dict(src)


def _compare(untied: nn.Module, tied: nn.Module, uses: list[str], loss_fn) -> dict:
    """Autograd gradient of the tied model vs the sum of the untied model's per-use grads."""
    loss_fn(untied).backward()
    loss_fn(tied).backward()
    rels, singles, total = [], [], 0.0  # per tensor; a NaN must reach the check (largest)
    per_use_norms = []
    for name, p in tied.get_submodule(uses[0]).named_parameters():
        per_use = [untied.get_submodule(u).get_parameter(name).grad for u in uses]
        summed = torch.stack(per_use).sum(0)
        scale = float(summed.abs().max()) or 1.0
        rels.append(float((p.grad - summed).abs().max()) / scale)
        # control: no single use's gradient is the tied gradient
        singles += [float((p.grad - g).abs().max()) / scale for g in per_use]
        total += float(p.grad.norm() ** 2)
        per_use_norms.append([float(g.norm() ** 2) for g in per_use])
    norms = np.sqrt(np.sum(per_use_norms, axis=0))  # per-use gradient norm over all tensors
    c = tying.count(tied)
    return {
        "rel error": largest(rels),
        "closest single use": smallest(singles),
        "uses": len(uses),
        "grad norm": math.sqrt(total),
        "per-use norms": norms.tolist(),
        "logical": c.logical,
        "physical": c.physical,
    }


@experiment("bptt-sum")
def bptt_sum(size: str, seed: int) -> Result:
    cfg = by_size(BPTT, size)
    gen, _ = rngs(seed)
    torch.manual_seed(seed)
    dt = torch.float64

    def tie(model: nn.Module, target: str, like: str) -> nn.Module:
        tied = copy.deepcopy(model)  # same values as the untied model, then one storage
        tying.Plan([tying.share(target, like=like)]).apply(tied)
        return tied

    # RNN over time: steps.t all read steps.0 (backpropagation through time).
    rnn = nn.RNN(cfg.input_size, cfg.hidden_size, batch_first=True).to(dt)
    untied_rnn = UnrolledRNN(cfg.input_size, cfg.hidden_size, cfg.steps).to(dt)
    untied_rnn.load_rnn(rnn)
    tied_rnn = tie(untied_rnn, "steps.*", "steps.0")
    xs = torch.randn(cfg.batch, cfg.steps, cfg.input_size, generator=gen, dtype=dt)
    gs = torch.randn(cfg.batch, cfg.steps, cfg.hidden_size, generator=gen, dtype=dt)
    steps = [f"steps.{t}" for t in range(cfg.steps)]
    rnn_case = _compare(untied_rnn, tied_rnn, steps, lambda m: (m(xs) * gs).sum())
    (rnn(xs)[0] * gs).sum().backward()  # PyTorch's own BPTT must agree too
    ref = tied_rnn.steps[0].hh.weight.grad
    torch_rel = float((ref - rnn.weight_hh_l0.grad).abs().max() / ref.abs().max())

    # Siamese towers: right reads left.
    siamese = _Siamese(cfg.towers_in, cfg.width).to(dt)
    _same_start(siamese, ["left", "right"])
    tied_siamese = tie(siamese, "right", "left")
    a = torch.randn(cfg.batch, cfg.towers_in, generator=gen, dtype=dt)
    b = torch.randn(cfg.batch, cfg.towers_in, generator=gen, dtype=dt)
    same = (torch.arange(cfg.batch) % 2).to(dt)  # contrastive: pull pairs together or apart
    siamese_case = _compare(
        siamese,
        tied_siamese,
        ["left", "right"],
        lambda m: (same * m(a, b) + (1 - same) * torch.relu(1 - m(a, b))).mean(),
    )

    # Cross-layer (ALBERT-style): blocks.l all read blocks.0.
    stack = _Stack(cfg.width, cfg.layers).to(dt)
    blocks = [f"blocks.{i}" for i in range(cfg.layers)]
    _same_start(stack, blocks)
    tied_stack = tie(stack, "blocks.*", "blocks.0")
    h = torch.randn(cfg.batch, cfg.width, generator=gen, dtype=dt)
    gh = torch.randn(cfg.batch, cfg.width, generator=gen, dtype=dt)
    stack_case = _compare(stack, tied_stack, blocks, lambda m: (m(h) * gh).sum())

    cases = {
        "RNN over time": rnn_case,
        "Siamese towers": siamese_case,
        "cross-layer (ALBERT)": stack_case,
    }
    for name, c in cases.items():
        log.info("bptt-sum: %s: relative error %.2e over %d uses", name, c["rel error"], c["uses"])
    passed = (
        all(c["rel error"] <= cfg.tol and c["closest single use"] > 1e-3 for c in cases.values())
        and torch_rel <= cfg.tol
        and all(c["physical"] * c["uses"] <= c["logical"] for c in cases.values())
    )
    rows = [
        {
            "sharing": name,
            "uses": c["uses"],
            "logical params": c["logical"],
            "physical params": c["physical"],
            "max |tied − Σ per-use| / max|grad|": c["rel error"],
            "closest single use (control)": c["closest single use"],
        }
        for name, c in cases.items()
    ]
    rows.append(
        {
            "sharing": "nn.RNN weight_hh (PyTorch BPTT) vs tied",
            "uses": cfg.steps,
            "max |tied − Σ per-use| / max|grad|": torch_rel,
        }
    )

    worst = largest(c["rel error"] for c in cases.values())
    fig = _bptt_sum_figure(rnn_case, cases, cfg)
    return Result(
        tables=[Table("Tied gradient vs the sum of per-use gradients (float64)", rows)],
        figures={"gradient-sum": fig},
        passed=passed,
        measured={
            **{f"{n}: relative error": c["rel error"] for n, c in cases.items()},
            "nn.RNN vs tied": torch_rel,
            **{f"{n}: closest single use": c["closest single use"] for n, c in cases.items()},
        },
        key_figure=f"tied grad = Σ per-use grads to {format_number(worst)} (3 kinds of sharing)",
        notes="Each tied model is an untied model with equal starting values, tied with "
        "tying.Plan([share(...)]) so one tensor serves every use; per-use gradients come "
        "from the untied copy. The check also requires nn.RNN's own BPTT gradient to agree.",
    )


def _bptt_sum_figure(rnn_case, cases, cfg):
    fig, (ax1, ax2) = new_figure(2, width=4.4, height=3.4)
    norms = rnn_case["per-use norms"]
    ax1.bar(range(1, len(norms) + 1), norms, color="#4c72b0")
    ax1.set_xlabel("time step t (use of the recurrent weights)")
    ax1.set_ylabel("‖∂L/∂W at use t‖")
    ax1.set_title(f"RNN: {len(norms)} per-use gradients,\nsummed by autograd into one tensor")
    names = list(cases)
    errs = [max(cases[n]["rel error"], 1e-18) for n in names]
    ctrl = [cases[n]["closest single use"] for n in names]
    ypos = np.arange(len(names))
    ax2.barh(ypos + 0.2, errs, height=0.4, color="#4c72b0", label="tied vs Σ per-use")
    ax2.barh(ypos - 0.2, ctrl, height=0.4, color="#c44e52", label="tied vs best single use")
    ax2.set_yticks(ypos, names)
    ax2.set_xscale("log")
    ax2.axvline(cfg.tol, color="k", ls="--", lw=1, label=f"tolerance {cfg.tol:g}")
    ax2.set_xlabel("relative difference (log)")
    ax2.set_title("autograd gradient of the tied weight")
    ax2.legend(fontsize=7, loc="lower right")
    return fig


# ---------------------------------------------------------------------------- B15


@dataclasses.dataclass(frozen=True)
class InitConfig:
    channels: int = 64  # conv width: finite width makes each layer's gain random
    image: int = 8  # 8×8 = 64 positions reuse every conv weight
    depth: int = 20  # conv layers the signal passes through
    batch: int = 4
    inits: int = 16  # independent weight draws averaged: He preserves the mean over draws
    rnn_input: int = 64  # input = hidden keeps W_hh's spectral radius near 0.7 < 1, so
    rnn_hidden: int = 64  # no single draw of the tied recurrent weights blows up
    rnn_steps: int = 50  # time steps that reuse the recurrent weights
    rnn_batch: int = 256
    # "stays ≈ 1": within a factor 4 over the whole depth (finite width drifts by up to
    # ~2× over 20 layers), while a wrong fan-in moves it by orders of magnitude.
    band: tuple[float, float] = (0.25, 4.0)


INIT = {
    "quick": InitConfig(channels=32, depth=10, inits=8, rnn_steps=25, rnn_batch=128),
    "report": InitConfig(),
}


def _conv_variances(cfg: InitConfig, fan: int, gen: torch.Generator) -> list[float]:
    """Mean square of the pre-activations through a deep He-initialised ReLU conv net.

    Averaged over ``cfg.inits`` independent weight draws; returns one value per layer
    (index 0 is the input).
    """
    conv = nn.Conv2d(
        cfg.channels, cfg.channels, 3, padding=1, padding_mode="circular", bias=False
    ).double()  # float64: the too-small fan-in grows ×64 a layer and would overflow float32
    total = np.zeros(cfg.depth + 1)
    for _ in range(cfg.inits):
        x = torch.randn(cfg.batch, cfg.channels, cfg.image, cfg.image, generator=gen).double()
        out = [float(x.pow(2).mean())]
        for _ in range(cfg.depth):
            with torch.no_grad():
                conv.weight.normal_(0.0, math.sqrt(2.0 / fan), generator=gen)  # He: gain 2
                z = conv(torch.relu(x))  # (B, C, H, W); E relu(x)² = E x² / 2, gain 2 → 1
            out.append(float(z.pow(2).mean()))
            x = z
        total += out
    return (total / cfg.inits).tolist()


def _rnn_variances(cfg: InitConfig, fan: tuple[int, int], gen: torch.Generator) -> list[float]:
    """Mean square of a linear RNN's state h_t = W_ih x_t + W_hh h_(t-1) over time.

    Averaged over ``cfg.inits`` independent weight draws; index 0 is h_0.
    """
    n_in, n_hid = cfg.rnn_input, cfg.rnn_hidden
    total = np.zeros(cfg.rnn_steps + 1)
    for _ in range(cfg.inits):
        w_ih = torch.randn(n_hid, n_in, generator=gen) / math.sqrt(fan[0])
        w_hh = torch.randn(n_hid, n_hid, generator=gen) / math.sqrt(fan[1])
        h = torch.randn(cfg.rnn_batch, n_hid, generator=gen)
        out = [float(h.pow(2).mean())]
        for _ in range(cfg.rnn_steps):
            x = torch.randn(cfg.rnn_batch, n_in, generator=gen)
            h = x @ w_ih.T + h @ w_hh.T  # (B, H)
            out.append(float(h.pow(2).mean()))
        total += out
    return (total / cfg.inits).tolist()


@experiment("tied-init")
def tied_init(size: str, seed: int) -> Result:
    cfg = by_size(INIT, size)
    gen, _ = rngs(seed)
    c = cfg.channels
    positions = cfg.image**2
    layers = [
        ("Linear(64 → 32)", nn.Linear(64, 32), 64, 1),
        (
            f"Conv2d({c} → {c}, 3×3) on {cfg.image}×{cfg.image}",
            nn.Conv2d(c, c, 3, padding=1),
            c * 9,
            positions,
        ),
        ("Conv2d(16 → 32, 3×3, groups=4)", nn.Conv2d(16, 32, 3, groups=4), 4 * 9, positions),
        ("Conv1d(8 → 8, k=5) on length 100", nn.Conv1d(8, 8, 5), 8 * 5, 96),
        (f"LocallyConnected2d({c} → {c}, 3×3)", LocallyConnected2d(c, c, 6, 3), c * 9, 1),
        (
            f"RNN({cfg.rnn_input}, {cfg.rnn_hidden}) over {cfg.rnn_steps} steps",
            nn.RNN(cfg.rnn_input, cfg.rnn_hidden),
            cfg.rnn_input + cfg.rnn_hidden,
            cfg.rnn_steps,
        ),
        ("LSTM(10, 20)", nn.LSTM(10, 20), 30, cfg.rnn_steps),
        ("GRU(10, 20)", nn.GRU(10, 20), 30, cfg.rnn_steps),
    ]
    fan_rows = []
    for name, module, expected, reuse in layers:
        got = tying.fan_in(module)
        fan_rows.append(
            {
                "layer": name,
                "tying.fan_in": got,
                "inputs of one unit": expected,
                "uses of each weight": reuse,
                "fan_in × uses (wrong)": got * reuse,
                "correct": got == expected,
            }
        )

    fan_conv = tying.fan_in(nn.Conv2d(c, c, 3))
    conv_runs = {
        "fan_in = C·k² (tying.fan_in)": _conv_variances(cfg, fan_conv, gen),
        "fan_in × positions (reuse counted)": _conv_variances(cfg, fan_conv * positions, gen),
        "fan_in = k² (channels ignored)": _conv_variances(cfg, 9, gen),
    }
    fan_rnn = tying.fan_in(nn.RNN(cfg.rnn_input, cfg.rnn_hidden))
    rnn_runs = {
        "fan_in = input + hidden (tying.fan_in)": _rnn_variances(cfg, (fan_rnn, fan_rnn), gen),
        "fan_in × steps (reuse counted)": _rnn_variances(
            cfg, (fan_rnn * cfg.rnn_steps, fan_rnn * cfg.rnn_steps), gen
        ),
        "per matrix (input | hidden alone)": _rnn_variances(
            cfg, (cfg.rnn_input, cfg.rnn_hidden), gen
        ),
    }
    lo, hi = cfg.band
    right_conv, reuse_conv = list(conv_runs.values())[:2]
    right_rnn, reuse_rnn = list(rnn_runs.values())[:2]

    def in_band(values: list[float]) -> bool:
        return all(lo <= v <= hi for v in values)

    passed = (
        all(r["correct"] for r in fan_rows)
        and in_band(right_conv)
        and in_band(right_rnn)
        and reuse_conv[-1] < 1e-3
        and reuse_rnn[-1] < 0.1
    )
    log.info(
        "tied-init: conv variance at depth %d: %.3g (right) vs %.3g (reuse counted)",
        cfg.depth,
        right_conv[-1],
        reuse_conv[-1],
    )
    var_rows = [
        {
            "net": net,
            "fan-in used": k,
            "mean square at the end": v[-1],
            "min over depth": smallest(v),
            "max over depth": largest(v),
        }
        for net, runs in (
            (f"ReLU conv, {cfg.depth} layers", conv_runs),
            (f"linear RNN, {cfg.rnn_steps} steps", rnn_runs),
        )
        for k, v in runs.items()
    ]

    fig = _tied_init_figure(conv_runs, rnn_runs, lo, hi, positions, cfg)
    return Result(
        tables=[
            Table("tying.fan_in of shared layers", fan_rows),
            Table("Activation mean square through depth and time", var_rows),
        ],
        figures={"variance": fig},
        passed=passed,
        measured={
            "all fan_in correct": all(r["correct"] for r in fan_rows),
            "conv, right fan-in: min/max over depth": [smallest(right_conv), largest(right_conv)],
            "conv, reuse counted: last layer": reuse_conv[-1],
            "RNN, right fan-in: min/max over time": [smallest(right_rnn), largest(right_rnn)],
            "RNN, reuse counted: last step": reuse_rnn[-1],
        },
        key_figure=f"conv variance at depth {cfg.depth}: {format_number(right_conv[-1])} "
        f"(vs {format_number(reuse_conv[-1])} if reuse is counted)",
        notes=f"He/Xavier variances use tying.fan_in; the check requires every layer's and "
        f"step's mean square within [{lo:g}, {hi:g}] with it, and a collapse when fan-in is "
        "multiplied by the number of reuses.",
    )


def _tied_init_figure(conv_runs, rnn_runs, lo, hi, positions, cfg):
    fig, (ax1, ax2) = new_figure(2, width=4.4, height=3.4)
    for (name, v), style in zip(conv_runs.items(), ("o-", "s-", "^-")):
        ax1.semilogy(v, style, ms=3, label=name)
    for (name, v), style in zip(rnn_runs.items(), ("o-", "s-", "^-")):
        ax2.semilogy(v, style, ms=2, label=name)
    for ax in (ax1, ax2):
        ax.axhspan(lo, hi, color="#55a868", alpha=0.15, lw=0)
        ax.legend(fontsize=7)
        ax.set_ylabel("activation mean square")
    ax1.set_xlabel("conv layer (He init)")
    ax1.set_title(f"conv: each weight reused at {positions} positions")
    ax2.set_xlabel("time step (linear RNN)")
    ax2.set_title(f"RNN: weights reused over {cfg.rnn_steps} steps")
    return fig
