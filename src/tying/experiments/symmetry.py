"""Symmetries of the loss landscape, and the accidental tie of a symmetric init.

- A6 ``landscape-symmetry`` (seed 003): K hidden neurons give K! equivalent minima;
  with sharing the unit of symmetry is the filter (F!), and the continuous flat
  directions shrink from one per neuron to one per filter.
- D7 ``symmetry-breaking`` (seed 004): identical initial weights are a tie nobody
  declared: such neurons get identical gradients forever; random init breaks it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

import tying
from tying.experiments.common import by_size, largest, log, new_figure, rngs, smallest
from tying.experiments.registry import Result, Table, experiment
from tying.nn import LocallyConnected2d
from tying.report.format import format_number

# ---------------------------------------------------------------------------- A6


@dataclasses.dataclass(frozen=True)
class LandscapeConfig:
    hidden: int = 48  # the seed's layer: 48 neurons ...
    filters: int = 3  # ... which, as a conv on a 4×4 map, are 3 filters × 16 positions
    inputs: int = 10  # input width of the dense net
    samples: int = 64  # points at which "the function is unchanged" is checked
    random_perms: int = 200  # random neuron permutations tried on the dense layer
    enum_positions: int = 3  # brute force: every permutation of filters × positions units
    hess_length: int = 8  # Hessian net: 1-D input length (kernel 3 → length − 2 positions)
    hess_filters: int = 2
    hess_points: int = 200  # ≫ parameters, so only true symmetries leave flat directions
    tol: float = 1e-12  # float64: "unchanged" means equal up to round-off
    null_rtol: float = 1e-10  # eigenvalue / largest below this is zero (gap: 1e-7 vs 1e-16)


LANDSCAPE = {
    "quick": LandscapeConfig(random_perms=50, enum_positions=2),
    "report": LandscapeConfig(),
}


def _mlp_out(w1, b1, w2, x):
    return torch.tanh(x @ w1.T + b1) @ w2.T  # (N, 1)


def _conv_net_out(filters, bias, readout, x):
    # filters (F, 3, 3), bias (F,), readout (F*P,), x (N, 1, 6, 6): conv → tanh → linear
    h = torch.tanh(nn.functional.conv2d(x, filters.unsqueeze(1), bias))  # (N, F, 4, 4)
    return h.flatten(1) @ readout


def _enumerate_conv_symmetries(cfg: LandscapeConfig, gen: torch.Generator) -> dict:
    """Brute force: permutations of a 1-D conv's F×P hidden units that keep it a conv.

    Every permutation of hidden units (rows of the untied weight matrix, with the
    readout permuted alike) leaves the function unchanged; the question is which
    of them land back on a tied (convolutional) weight matrix.
    """
    F, P, k = cfg.filters, cfg.enum_positions, 3
    length = P + k - 1
    filters = torch.randn(F, k, generator=gen, dtype=torch.float64)
    dense = torch.zeros(F * P, length, dtype=torch.float64)  # row (f, p) = filter f at p
    for f in range(F):
        for p in range(P):
            dense[f * P + p, p : p + k] = filters[f]
    perms = torch.tensor(list(itertools.permutations(range(F * P))))  # (n!, F*P)
    permuted = dense[perms]  # (n!, F*P, L): row u of a permuted matrix is row perm[u]
    # Project each permuted matrix on the conv subspace: average row (f, p)'s window
    # at p over positions, place it back, and measure what the projection moved.
    idx = torch.arange(P).unsqueeze(1) + torch.arange(k)  # (P, k) window columns
    rows = permuted.reshape(len(perms), F, P, length)
    windows = torch.stack([rows[:, :, p, idx[p]] for p in range(P)], dim=2)  # (n!, F, P, k)
    shared = windows.mean(dim=2, keepdim=True).expand_as(windows)
    projected = torch.zeros_like(rows)
    for p in range(P):
        projected[:, :, p, idx[p]] = shared[:, :, p]
    residual = (rows - projected).abs().flatten(1).amax(dim=1)
    admissible = int((residual <= cfg.tol).sum())
    return {"units": F * P, "permutations": len(perms), "keep the conv": admissible}


def _flat_directions(shared: bool, cfg: LandscapeConfig, seed: int) -> tuple[int, int, list]:
    """Hessian null-space dimension at a zero-loss minimum of a tiny ReLU conv net."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    F, L = cfg.hess_filters, cfg.hess_length
    conv = nn.Conv2d(1, F, (1, 3)).double()
    body = conv if shared else LocallyConnected2d.from_conv(conv, (1, L))
    positions = L - 2
    net = nn.Sequential(body, nn.ReLU(), nn.Flatten(), nn.Linear(F * positions, 1)).double()
    x = torch.randn(cfg.hess_points, 1, 1, L, generator=gen, dtype=torch.float64)
    params = {n: p.detach() for n, p in net.named_parameters()}
    with torch.no_grad():
        y = net(x)  # teacher = student at these parameters: a global minimum, loss 0
    names = list(params)
    sizes = [params[n].numel() for n in names]
    theta = torch.cat([params[n].flatten() for n in names])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = {n: t.view_as(params[n]) for n, t in zip(names, flat.split(sizes))}
        return ((functional_call(net, parts, (x,)) - y) ** 2).mean()

    hess = torch.autograd.functional.hessian(loss, theta)  # (n, n)
    eig = torch.linalg.eigvalsh(hess).clamp_min(0)
    null = int((eig <= cfg.null_rtol * eig.max()).sum())
    return null, theta.numel(), sorted(eig.tolist(), reverse=True)


@experiment("landscape-symmetry")
def landscape_symmetry(size: str, seed: int) -> Result:
    cfg = by_size(LANDSCAPE, size)
    gen, rng = rngs(seed)
    K = cfg.hidden
    w1 = torch.randn(K, cfg.inputs, generator=gen, dtype=torch.float64)
    b1 = torch.randn(K, generator=gen, dtype=torch.float64)
    w2 = torch.randn(1, K, generator=gen, dtype=torch.float64)
    x = torch.randn(cfg.samples, cfg.inputs, generator=gen, dtype=torch.float64)
    base = _mlp_out(w1, b1, w2, x)
    # Swapping neurons moves their incoming AND outgoing weights: same function.
    perm_err, control_err = 0.0, math.inf
    for _ in range(cfg.random_perms):
        perm = torch.from_numpy(rng.permutation(K))
        perm_err = largest(
            [perm_err, float((_mlp_out(w1[perm], b1[perm], w2[:, perm], x) - base).abs().max())]
        )
        # control: moving only the incoming weights is a different function
        control_err = smallest(
            [control_err, float((_mlp_out(w1[perm], b1[perm], w2, x) - base).abs().max())]
        )

    # The seed's conv: 48 neurons = 3 filters × 16 positions; only whole filters permute.
    F, positions = cfg.filters, K // cfg.filters
    side = math.isqrt(positions)
    filters = torch.randn(F, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(F, generator=gen, dtype=torch.float64)
    readout = torch.randn(F * positions, generator=gen, dtype=torch.float64)
    xc = torch.randn(cfg.samples, 1, side + 2, side + 2, generator=gen, dtype=torch.float64)
    conv_base = _conv_net_out(filters, bias, readout, xc)
    filter_err = 0.0
    for perm in itertools.permutations(range(F)):
        p = torch.tensor(perm)
        ro = readout.view(F, positions)[p].flatten()
        filter_err = largest(
            [
                filter_err,
                float((_conv_net_out(filters[p], bias[p], ro, xc) - conv_base).abs().max()),
            ]
        )
    n_filter_perms = math.factorial(F)
    enum = _enumerate_conv_symmetries(cfg, gen)

    null_shared, n_shared, eig_shared = _flat_directions(True, cfg, seed)
    null_untied, n_untied, eig_untied = _flat_directions(False, cfg, seed)
    hidden_units = cfg.hess_filters * (cfg.hess_length - 2)
    log.info("landscape-symmetry: null space %d (shared) vs %d (untied)", null_shared, null_untied)

    passed = (
        perm_err <= cfg.tol
        and control_err > 1e-6
        and filter_err <= cfg.tol
        and enum["keep the conv"] == math.factorial(cfg.filters)
        and null_shared == cfg.hess_filters
        and null_untied == hidden_units
    )
    sym_rows = [
        {
            "layer": f"dense, K = {K} neurons",
            "symmetry unit": "neuron",
            "equivalent minima": f"{K}! ≈ {format_number(float(math.factorial(K)))}",
            "verified": f"{cfg.random_perms} random neuron permutations: max |Δf| = {format_number(perm_err)}",
        },
        {
            "layer": f"conv, F = {F} filters × {positions} positions",
            "symmetry unit": "filter",
            "equivalent minima": f"{F}! = {n_filter_perms}",
            "verified": f"all {n_filter_perms} filter permutations: max |Δf| = {format_number(filter_err)}",
        },
        {
            "layer": f"brute force: 1-D conv, {cfg.filters} filters × {cfg.enum_positions} "
            f"positions",
            "symmetry unit": "filter",
            "equivalent minima": f"{enum['keep the conv']} of {enum['units']}! = "
            f"{enum['permutations']:,} unit permutations stay a conv",
            "verified": f"expected {cfg.filters}! = {math.factorial(cfg.filters)}",
        },
    ]
    hess_rows = [
        {
            "net": "shared (Conv)",
            "parameters": n_shared,
            "Hessian null-space dimension": null_shared,
            "expected (one rescaling per filter)": cfg.hess_filters,
        },
        {
            "net": "untied (LocallyConnected)",
            "parameters": n_untied,
            "Hessian null-space dimension": null_untied,
            "expected (one rescaling per neuron)": hidden_units,
        },
    ]

    fig = _landscape_figure(
        K, F, enum, cfg, n_filter_perms, eig_untied, null_untied, eig_shared, null_shared
    )
    return Result(
        tables=[
            Table("Permutation symmetries", sym_rows),
            Table("Continuous symmetries: Hessian null space at a zero-loss minimum", hess_rows),
        ],
        figures={"symmetries": fig},
        passed=passed,
        measured={
            "max |Δf| over neuron permutations": perm_err,
            "min |Δf| when only inputs are permuted (control)": control_err,
            "max |Δf| over filter permutations": filter_err,
            "brute-force conv-keeping permutations": enum["keep the conv"],
            "null space shared": null_shared,
            "null space untied": null_untied,
        },
        key_figure=f"{K}! vs {F}! minima; flat directions {null_untied} → {null_shared}",
        notes="Function invariance is checked numerically in float64; the brute force "
        "enumerates every permutation of a small conv's hidden units and counts those that "
        "stay convolutional; the Hessian is exact (autograd) at a teacher = student minimum.",
    )


def _landscape_figure(
    K, F, enum, cfg, n_filter_perms, eig_untied, null_untied, eig_shared, null_shared
):
    fig, (ax1, ax2) = new_figure(2, width=4.4, height=3.4)
    labels = [
        f"dense\n{K}!",
        f"conv\n{F}!",
        f"brute force\n{enum['units']} units",
        f"brute force\n{cfg.filters} filters",
    ]
    vals = [
        math.log10(math.factorial(K)),
        math.log10(n_filter_perms),
        math.log10(enum["permutations"]),
        math.log10(max(enum["keep the conv"], 1)),
    ]
    bars = ax1.bar(labels, vals, color=["#c44e52", "#4c72b0", "#c44e52", "#4c72b0"])
    ax1.bar_label(bars, labels=[f"{format_number(v)}" for v in vals], padding=2)
    ax1.set_ylabel("log10(number of equivalent minima)")
    ax1.set_title("permutation symmetries")
    for eig, null, name in (
        (eig_untied, null_untied, "untied"),
        (eig_shared, null_shared, "shared"),
    ):
        ax2.semilogy(
            range(1, len(eig) + 1),
            np.maximum(eig, 1e-20),
            "o-",
            ms=2.5,
            label=f"{name}: {null} flat directions",
        )
    ax2.set_xlabel("eigenvalue index")
    ax2.set_ylabel("Hessian eigenvalue at a minimum")
    ax2.set_title("flat directions (tiny ReLU net)")
    ax2.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------- D7


@dataclasses.dataclass(frozen=True)
class BreakingConfig:
    inputs: int = 4
    hidden: int = 8  # the neurons that should (not) stay identical
    teacher: int = 6  # neurons of the random teacher net that makes the data
    samples: int = 128  # full-batch regression data (a multiple of SIMD widths, see below)
    steps: int = 300  # SGD steps: long enough for random init to use every neuron
    lr: float = 0.1
    const: float = 0.3  # the constant every weight starts at in the symmetric init
    nudge: float = 1e-6  # size of the noise that breaks the symmetry in the third run
    atol: float = 1e-10  # detector tolerance: identical up to round-off


BREAKING = {"quick": BreakingConfig(steps=150), "report": BreakingConfig(steps=600)}


def _forward_unit_major(net: nn.Sequential, xt: torch.Tensor) -> torch.Tensor:
    """The student's forward pass, laid out so every neuron gets bit-identical arithmetic.

    ``x @ W.T`` through BLAS rounds the last columns of a tile differently (another
    kernel, FMA or not); the symmetric state is unstable (the nudged run shows it), so
    that round-off alone would split identical neurons after a few hundred steps. Here
    each neuron is one row of (hidden, N) elementwise ops and row reductions, the same
    instructions for every row, so exact arithmetic's "identical forever" is testable.
    """
    l1, l2 = net[0], net[2]
    pre = l1.bias[:, None] + sum(l1.weight[:, i : i + 1] * xt[i] for i in range(xt.shape[0]))
    h = torch.tanh(pre)  # (hidden, N)
    return (l2.weight.T * h).sum(0) + l2.bias  # (N,)


def _spread(net: nn.Sequential) -> float:
    """Largest difference between any hidden neuron's weights and neuron 0's."""
    w = torch.cat([net[0].weight, net[0].bias[:, None], net[2].weight.T], dim=1).detach()
    return float((w - w[0]).abs().max())


@experiment("symmetry-breaking")
def symmetry_breaking(size: str, seed: int) -> Result:
    cfg = by_size(BREAKING, size)
    gen, _ = rngs(seed)
    x = torch.randn(cfg.samples, cfg.inputs, generator=gen, dtype=torch.float64)
    teacher_w = torch.randn(cfg.teacher, cfg.inputs, generator=gen, dtype=torch.float64)
    teacher_v = torch.randn(cfg.teacher, generator=gen, dtype=torch.float64)
    y = torch.tanh(x @ teacher_w.T) @ teacher_v  # (N,)
    xt = x.T.contiguous()  # (inputs, N): unit-major layout, see _forward_unit_major

    def student(init: str) -> nn.Sequential:
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Linear(cfg.inputs, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, 1)
        ).double()
        if init != "random":
            with torch.no_grad():
                for p in net.parameters():
                    p.fill_(cfg.const)  # every neuron is the same neuron
                if init == "constant + nudge":
                    for p in net.parameters():
                        p.add_(cfg.nudge * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        return net

    runs = {}
    for init in ("constant", "constant + nudge", "random"):
        net = student(init)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9)
        spreads, losses = [_spread(net)], []
        for _ in range(cfg.steps):
            opt.zero_grad()
            loss = nn.functional.mse_loss(_forward_unit_major(net, xt), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            spreads.append(_spread(net))
        ties = tying.find_accidental_ties(net, atol=cfg.atol)
        runs[init] = {"spreads": spreads, "losses": losses, "ties": ties}
        log.info(
            "symmetry-breaking: %s init: spread %.3g, loss %.4g, %d tie group(s)",
            init,
            spreads[-1],
            losses[-1],
            len(ties),
        )

    const, nudged, rand = runs["constant"], runs["constant + nudge"], runs["random"]
    all_units = tuple(range(cfg.hidden))
    const_found = [t for t in const["ties"] if t.path == "0"]
    passed = (
        largest(const["spreads"]) <= cfg.atol
        and len(const_found) == 1
        and const_found[0].units == all_units
        and not rand["ties"]
        and rand["spreads"][-1] > 1e-2
        and nudged["spreads"][-1] > 100 * nudged["spreads"][0]
        and const["losses"][-1] > rand["losses"][-1]
    )
    rows = [
        {
            "init": name,
            "spread at start": r["spreads"][0],
            "spread at end": r["spreads"][-1],
            "final loss": r["losses"][-1],
            "find_accidental_ties": "; ".join(f"{t.path}: units {list(t.units)}" for t in r["ties"])
            or "none",
        }
        for name, r in runs.items()
    ]

    fig = _symmetry_breaking_figure(runs, cfg)
    return Result(
        tables=[Table("Training from three initialisations", rows)],
        figures={"symmetry-breaking": fig},
        passed=passed,
        measured={
            "constant: max spread during training": largest(const["spreads"]),
            "constant: units found identical": list(const_found[0].units) if const_found else [],
            "random: tie groups found": len(rand["ties"]),
            "random: final spread": rand["spreads"][-1],
            "nudged: spread growth": nudged["spreads"][-1] / nudged["spreads"][0],
            "final loss constant / random": const["losses"][-1] / rand["losses"][-1],
        },
        key_figure=f"constant init: {cfg.hidden} neurons identical after {cfg.steps} steps "
        f"(spread {format_number(largest(const['spreads']))}); random: no ties",
        notes="The check requires the constant-init neurons to stay identical to "
        f"{cfg.atol:g} through training and be reported by tying.find_accidental_ties as "
        "one group, the random init to have no such group, and a tiny nudge to grow.",
    )


def _symmetry_breaking_figure(runs, cfg):
    fig, (ax1, ax2) = new_figure(2, width=4.4, height=3.4)
    for name, r in runs.items():
        ax1.semilogy(np.maximum(r["spreads"], 1e-18), label=name)
        ax2.semilogy(r["losses"], label=name)
    ax1.axhline(cfg.atol, color="k", ls="--", lw=1, label=f"detector atol {cfg.atol:g}")
    ax1.set_xlabel("SGD step")
    ax1.set_ylabel("max |neuron_i − neuron_0| weights")
    ax1.set_title(f"do the {cfg.hidden} hidden neurons stay identical?")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("SGD step")
    ax2.set_ylabel("training MSE")
    ax2.set_title("a tied layer acts like one neuron")
    ax2.legend(fontsize=8)
    return fig
