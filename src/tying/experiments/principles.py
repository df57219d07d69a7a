"""Principles of sharing (seed 003): what it saves, and what it is.

- A1 ``param-counts``: a dense layer on a 32×32×3 image costs H²W²cc' weights; a
  3×3 conv 3→16 costs 448.
- A2 ``conv-is-tied-lc``: a conv layer is a locally connected layer whose
  per-position filters are tied.
- A5 ``rnn-unrolled``: an RNN unrolled in time is a deep net whose layers share
  one weight set.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

import tying
from tying.experiments.common import (
    UnrolledRNN,
    by_size,
    largest,
    log,
    max_abs_diff,
    new_figure,
    rngs,
)
from tying.experiments.registry import Result, Table, experiment
from tying.nn import LocallyConnected2d
from tying.report.format import format_number


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------- A1


@dataclasses.dataclass(frozen=True)
class CountsConfig:
    height: int = 32  # the seed's image: 32×32 pixels ...
    width: int = 32
    channels: int = 3  # ... with three colour channels
    conv_out: int = 16  # the seed's conv: 3 → 16 channels, 3×3 kernel
    kernel: int = 3


# The counts are exact and cheap at the seed's own sizes, so both sizes use them.
COUNTS = {"quick": CountsConfig(), "report": CountsConfig()}


@experiment("param-counts")
def param_counts(size: str, seed: int) -> Result:
    cfg = by_size(COUNTS, size)
    H, W, c, k = cfg.height, cfg.width, cfg.channels, cfg.kernel
    # Real layers, counted by walking their parameters; the formulas are the seed's.
    layers = [
        (
            "fully connected, same-size output (weights)",
            nn.Linear(H * W * c, H * W * c, bias=False),
            "H²W²cc'",
            (H * W) ** 2 * c * c,
            (c, H, W),
        ),
        (
            "locally connected 3×3, same-size output (weights)",
            LocallyConnected2d(c, c, (H, W), k, padding=k // 2, bias=False),
            "HW·c'·k²c",
            H * W * c * k * k * c,
            (c, H, W),
        ),
        (
            "conv 3×3, same-size output (weights + biases)",
            nn.Conv2d(c, c, k, padding=k // 2),
            "c'(k²c+1)",
            c * (k * k * c + 1),
            (c, H, W),
        ),
        (
            f"conv 3×3, {c}→{cfg.conv_out} (weights + biases)",
            nn.Conv2d(c, cfg.conv_out, k, padding=k // 2),
            "c'(k²c+1)",
            cfg.conv_out * (k * k * c + 1),
            (cfg.conv_out, H, W),
        ),
    ]
    x = torch.randn(1, c, H, W, generator=torch.Generator().manual_seed(seed))
    rows, counts = [], {}
    for name, layer, formula, expected, out_shape in layers:
        with torch.no_grad():
            y = layer(x.flatten(1)) if isinstance(layer, nn.Linear) else layer(x)
        counted = _numel(layer)
        counts[name] = counted
        rows.append(
            {
                "layer": name,
                "formula": formula,
                "formula value": expected,
                "counted from the layer": counted,
                "output elements": y.numel(),
                "matches": counted == expected and y.numel() == out_shape[0] * H * W,
            }
        )
        log.info("param-counts: %s: %d", name, counted)
    fc, conv16 = counts[layers[0][0]], counts[layers[3][0]]
    passed = all(r["matches"] for r in rows) and fc == 9_437_184 and conv16 == 448

    fig, (ax,) = new_figure(width=7.0, height=2.8)
    names = [r["layer"].split(" (")[0] for r in rows]
    values = [r["counted from the layer"] for r in rows]
    bars = ax.barh(names[::-1], values[::-1], color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"])
    ax.set_xscale("log")
    ax.bar_label(bars, labels=[f"{v:,}" for v in values[::-1]], padding=3)
    ax.set_xlim(10, 2e8)
    ax.set_xlabel("parameters (log scale)")
    ax.set_title(f"One layer on a {H}×{W}×{c} image")
    return Result(
        tables=[Table("Parameter counts of real layers vs the formulas", rows)],
        figures={"counts": fig},
        passed=passed,
        measured={"fully connected": fc, "conv 3→16": conv16, "all match formulas": passed},
        key_figure=f"dense {fc:,} vs conv {conv16:,} parameters",
        notes="Each count walks the layer's parameters; the check also requires the "
        "seed's two numbers exactly (9,437,184 and 448).",
    )


# ---------------------------------------------------------------------------- A2


@dataclasses.dataclass(frozen=True)
class ConvLCConfig:
    in_channels: int  # small, so the per-position picture stays readable
    out_channels: int
    image: int  # square input side; positions = image² with padding 1
    batch: int  # a few inputs, so gradients mix several examples
    lr: float = 0.1  # one SGD step shows untied filters drifting apart
    tol: float = 1e-10  # float64 round-off is ~1e-15; anything above 1e-10 is a real gap


CONV_LC = {
    "quick": ConvLCConfig(in_channels=2, out_channels=3, image=8, batch=4),
    "report": ConvLCConfig(in_channels=3, out_channels=4, image=16, batch=8),
}


@experiment("conv-is-tied-lc")
def conv_is_tied_lc(size: str, seed: int) -> Result:
    cfg = by_size(CONV_LC, size)
    gen, _ = rngs(seed)
    torch.manual_seed(seed)  # the conv's own initialiser
    conv = nn.Conv2d(cfg.in_channels, cfg.out_channels, 3, padding=1).double()
    untied = LocallyConnected2d.from_conv(conv, cfg.image)  # independent copies
    tied = LocallyConnected2d.from_conv(conv, cfg.image).tie_filters()  # one stored filter

    shape = (cfg.batch, cfg.in_channels, cfg.image, cfg.image)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    g_out = torch.randn(cfg.batch, cfg.out_channels, cfg.image, cfg.image, generator=gen)
    g_out = g_out.double()  # a random upstream gradient probes every output

    grads = {}
    for name, layer in (("conv", conv), ("tied", tied), ("untied", untied)):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)  # (B, C_out, H, W)
        y.backward(g_out)
        grads[name] = {"out": y.detach(), "input": xi.grad}
    tied_w = tied.parametrizations.weight.original
    tied_b = tied.parametrizations.bias.original
    per_position = untied.weight.grad  # (H, W, C_out, C_in, 3, 3)

    diffs = {
        "output": max_abs_diff(grads["tied"]["out"], grads["conv"]["out"]),
        "input gradient": max_abs_diff(grads["tied"]["input"], grads["conv"]["input"]),
        "filter gradient": max_abs_diff(tied_w.grad, conv.weight.grad),
        "bias gradient": max_abs_diff(tied_b.grad, conv.bias.grad),
        # the gradient-level meaning of the tie: the shared gradient sums all positions
        "Σ per-position gradients": max_abs_diff(per_position.sum((0, 1)), conv.weight.grad),
    }
    # Control: one SGD step moves each untied position its own way, so the untied layer
    # stops being a convolution, while the tied one stays the conv after the same step.
    with torch.no_grad():
        for p in (*conv.parameters(), *tied.parameters(), *untied.parameters()):
            p -= cfg.lr * p.grad
    stepped = max_abs_diff(tied.to_conv().weight, conv.weight)
    spread = float((untied.weight - untied.weight[0, 0]).abs().max().detach())
    params = {"conv": _numel(conv), "tied LC": _numel(tied), "untied LC": _numel(untied)}

    passed = (
        largest(diffs.values()) <= cfg.tol
        and stepped <= cfg.tol
        and spread > 1e3 * cfg.tol
        and params["tied LC"] == params["conv"]
    )
    rows = [{"compared with Conv2d": k, "max |difference|": v} for k, v in diffs.items()]
    rows.append({"compared with Conv2d": "filter after one SGD step", "max |difference|": stepped})
    param_rows = [{"layer": k, "stored parameters": v} for k, v in params.items()]

    fig, (ax1, ax2) = new_figure(2, width=4.4, height=3.4)
    im = ax1.imshow(per_position.flatten(2).norm(dim=2).numpy(), cmap="viridis")
    fig.colorbar(im, ax=ax1, shrink=0.8)
    ax1.set_title("untied LC: ‖∂L/∂w‖ per position\n(the tied gradient is their sum)")
    ax1.set_xlabel("output column")
    ax1.set_ylabel("output row")
    labels = list(diffs) + ["untied filters\nafter one step"]
    values = [max(v, 1e-18) for v in diffs.values()] + [spread]
    colors = ["#4c72b0"] * len(diffs) + ["#c44e52"]
    ax2.barh(labels[::-1], values[::-1], color=colors[::-1])
    ax2.set_xscale("log")
    ax2.axvline(cfg.tol, color="k", ls="--", lw=1, label=f"tolerance {cfg.tol:g}")
    ax2.set_xlabel("max |difference| to Conv2d (log)")
    ax2.set_title("tied LC vs Conv2d")
    ax2.legend(loc="lower right", fontsize=8)
    return Result(
        tables=[
            Table("Tied LocallyConnected2d vs Conv2d (float64)", rows),
            Table("Stored parameters", param_rows),
        ],
        figures={"conv-vs-lc": fig},
        passed=passed,
        measured={
            "largest difference tied vs conv": largest(diffs.values()),
            "after one step": stepped,
            "untied spread after one step": spread,
            **{f"params {k}": v for k, v in params.items()},
        },
        key_figure=f"max |tied − conv| = {format_number(largest(diffs.values()))}; "
        f"{params['untied LC']:,} → {params['tied LC']:,} params",
        notes="The tied layer stores one filter that every position reads; the check "
        f"requires outputs and all gradients within {cfg.tol:g} of Conv2d's, before and "
        "after an SGD step, and the untied copies to drift apart under the same step.",
    )


# ---------------------------------------------------------------------------- A5


@dataclasses.dataclass(frozen=True)
class UnrolledConfig:
    input_size: int = 4  # small: the claim is exactness, not scale
    hidden_size: int = 8
    batch: int = 3
    steps: int = 20  # time steps = depth of the unrolled net
    depths: tuple[int, ...] = (1, 2, 5, 10, 20)  # depths for the parameter-count curve
    tol: float = 1e-12  # float64; a different weight anywhere gives differences ~1e-1


UNROLLED = {
    "quick": UnrolledConfig(),
    "report": UnrolledConfig(steps=50, depths=(1, 2, 5, 10, 20, 50, 100)),
}


def _tie_steps(net: UnrolledRNN) -> None:
    # claim A5: every step (layer) reads step 0's weights
    tying.Plan([tying.share("steps.*", like="steps.0")]).apply(net)


@experiment("rnn-unrolled")
def rnn_unrolled(size: str, seed: int) -> Result:
    cfg = by_size(UNROLLED, size)
    gen, _ = rngs(seed)
    torch.manual_seed(seed)
    rnn = nn.RNN(cfg.input_size, cfg.hidden_size, batch_first=True).double()
    x = torch.randn(cfg.batch, cfg.steps, cfg.input_size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        reference, _ = rnn(x)  # (B, T, H)

    tied = UnrolledRNN(cfg.input_size, cfg.hidden_size, cfg.steps).double()
    _tie_steps(tied)
    tied.load_rnn(rnn)
    # Control: the same feed-forward net, untied, with the RNN's weights only in layer 0.
    untied = UnrolledRNN(cfg.input_size, cfg.hidden_size, cfg.steps).double()
    with torch.no_grad():
        untied.steps[0].load_state_dict(tied.steps[0].state_dict())
        out_tied, out_untied = tied(x), untied(x)
    err_t = (out_tied - reference).abs().amax(dim=(0, 2))  # (T,)
    err_u = (out_untied - reference).abs().amax(dim=(0, 2))

    rnn_params = _numel(rnn)
    count_rows = []
    for depth in sorted(set(cfg.depths) | {cfg.steps}):
        net = UnrolledRNN(cfg.input_size, cfg.hidden_size, depth)
        before = _numel(net)
        _tie_steps(net)
        c = tying.count(net)
        count_rows.append(
            {
                "depth (steps)": depth,
                "untied params": before,
                "logical (tied)": c.logical,
                "physical (tied)": c.physical,
                "nn.RNN params": rnn_params,
            }
        )
    last = next(r for r in count_rows if r["depth (steps)"] == cfg.steps)
    counts_ok = all(
        r["physical (tied)"] == rnn_params and r["logical (tied)"] == r["untied params"]
        for r in count_rows
    )
    max_err = float(err_t.max())
    passed = max_err <= cfg.tol and counts_ok and float(err_u.max()) > 1e-3
    log.info("rnn-unrolled: max |tied - RNN| = %.3g over %d steps", max_err, cfg.steps)

    fig, (ax1, ax2) = new_figure(2, width=4.4, height=3.4)
    t = range(1, cfg.steps + 1)
    exact = " (exactly 0, drawn at 1e-18)" if max_err == 0 else ""
    ax1.semilogy(t, err_t.clamp_min(1e-18).numpy(), "o-", ms=3, label="tied unrolled net" + exact)
    ax1.semilogy(t, err_u.clamp_min(1e-18).numpy(), "s-", ms=3, label="untied (control)")
    ax1.axhline(cfg.tol, color="k", ls="--", lw=1, label=f"tolerance {cfg.tol:g}")
    ax1.set_xlabel("time step = layer")
    ax1.set_ylabel("max |h_t − RNN h_t|")
    ax1.set_title("unrolled net vs nn.RNN")
    ax1.legend(fontsize=8)
    depths = [r["depth (steps)"] for r in count_rows]
    ax2.loglog(depths, [r["logical (tied)"] for r in count_rows], "o-", label="logical")
    ax2.loglog(depths, [r["physical (tied)"] for r in count_rows], "s-", label="physical")
    ax2.set_xlabel("depth (time steps)")
    ax2.set_ylabel("parameters")
    ax2.set_title("tying.count of the unrolled net")
    ax2.legend(fontsize=8)
    return Result(
        tables=[
            Table("Parameters of the unrolled net (tying.count)", count_rows),
            Table(
                "Hidden states vs nn.RNN",
                [
                    {"model": "tied unrolled net", "max |difference|": max_err},
                    {
                        "model": "untied net, RNN weights in layer 0 only",
                        "max |difference|": float(err_u.max()),
                    },
                ],
            ),
        ],
        figures={"unrolled": fig},
        passed=passed,
        measured={
            "max |tied − RNN|": max_err,
            "steps": cfg.steps,
            "physical params": last["physical (tied)"],
            "logical params": last["logical (tied)"],
            "nn.RNN params": rnn_params,
        },
        key_figure=f"{cfg.steps} tied layers = nn.RNN to {format_number(max_err)}",
        notes="The unrolled net's layers are tied with tying.Plan([share('steps.*', "
        "like='steps.0')]); the check requires every hidden state within "
        f"{cfg.tol:g} of nn.RNN's and physical parameters equal to the RNN's at every depth.",
    )
