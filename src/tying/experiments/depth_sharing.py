"""Sharing across depth: ALBERT-style stacks and their neural-ODE limit (seed 001).

B8 ``cross-layer-sharing``:

1. At equal width, tying all L layers divides the stored parameters by L
   (``tying.count``: logical = L × physical).
2. At an equal budget, the tied stack can be ~L× wider. On a task that needs
   width (fitting the flow map of a wide random vector field), the tied wide
   stack beats the untied narrow stack with the same number of parameters.
3. A tied residual stack ``x ← x + (T/L) f(x; θ)`` is Euler's method for
   ``dx/dt = f(x; θ)``: with the trained field fixed, the stack's output converges
   to the ODE solution at first order as L grows.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics

import numpy as np
import torch

import tying
from tying.experiments.common import new_figure, still_gaining
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.nn import TiedResidualNet, VectorField, odeint
from tying.report.format import format_number

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DepthConfig:
    dim: int = 4  # state width
    depth: int = 8  # layers of every stack
    narrow: int = 8  # hidden width of the untied stack
    teacher_hidden: int = 64  # the target field is wide: width is what the task needs
    n_train: int = 512
    n_test: int = 1000
    train_steps: int = 200
    lr: float = 1e-2
    seeds: int = 2
    ode_depths: tuple[int, ...] = (4, 8, 16, 32, 64, 128)


DEPTH = {
    "quick": DepthConfig(),
    "report": DepthConfig(train_steps=300, seeds=4, ode_depths=(4, 8, 16, 32, 64, 128, 256, 512)),
}


def _equal_budget_hidden(cfg: DepthConfig) -> int:
    """Hidden width of one tied layer with about the untied stack's parameter count."""
    per_layer = lambda h: cfg.dim * h + h + h * cfg.dim + cfg.dim  # noqa: E731
    budget = cfg.depth * per_layer(cfg.narrow)
    return max(h for h in range(1, budget) if per_layer(h) <= budget)


def _flow_task(cfg: DepthConfig, seed: int):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(10_000 + seed)
    teacher = VectorField(cfg.dim, cfg.teacher_hidden)
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(1.5)  # a field that moves points by O(1) in unit time
        x = torch.randn(cfg.n_train, cfg.dim, generator=gen)
        x_test = torch.randn(cfg.n_test, cfg.dim, generator=gen)
        y = odeint(teacher, x, 1.0, method="rk4", steps=64)
        y_test = odeint(teacher, x_test, 1.0, method="rk4", steps=64)
    return x, y, x_test, y_test


def _fit(
    cfg: DepthConfig, hidden: int, tied: bool, data, seed: int
) -> tuple[TiedResidualNet, float, bool]:
    """Train one stack; returns it, its relative test error, and whether it was still gaining."""
    x, y, x_test, y_test = data
    torch.manual_seed(seed)
    net = TiedResidualNet(cfg.dim, hidden, cfg.depth, tied=tied)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    losses = []
    for _ in range(cfg.train_steps):
        opt.zero_grad()
        loss = (net(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        rel = float((net(x_test) - y_test).pow(2).mean() / y_test.var())
    return net, rel, still_gaining(losses)


@experiment("cross-layer-sharing")
def cross_layer_sharing(size: str, seed: int) -> Result:
    check_size(size)
    cfg = DEPTH[size]
    torch.set_num_threads(1)
    wide = _equal_budget_hidden(cfg)
    models = {
        f"untied, hidden {cfg.narrow}": (cfg.narrow, False),
        f"tied, hidden {cfg.narrow}": (cfg.narrow, True),
        f"tied, hidden {wide} (same budget)": (wide, True),
    }
    errors: dict[str, list[float]] = {name: [] for name in models}
    counts, trained, gaining = {}, None, 0
    for s in range(cfg.seeds):
        data = _flow_task(cfg, seed * 1000 + s)
        for name, (hidden, tied) in models.items():
            net, rel, still = _fit(cfg, hidden, tied, data, seed * 1000 + s)
            errors[name].append(rel)
            gaining += still
            counts[name] = tying.count(net)
            if tied and hidden == wide and s == 0:
                trained = net
    untied_name, narrow_name, wide_name = list(models)
    wins = sum(w < u for w, u in zip(errors[wide_name], errors[untied_name]))

    # the ODE limit of the trained tied stack: same field, more and smaller steps
    field = trained.field.double()
    x = torch.randn(
        256, cfg.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    with torch.no_grad():
        exact = odeint(field, x, 1.0)
        ode_err = []
        for depth in cfg.ode_depths:
            stack = TiedResidualNet(cfg.dim, wide, depth).double()
            stack.field.load_state_dict(field.state_dict())
            ode_err.append(float((stack(x) - exact).abs().max()))
    slopes = np.diff(np.log(ode_err)) / np.diff(np.log(cfg.ode_depths))
    order = float(-np.mean(slopes))

    c_untied, c_narrow = counts[untied_name], counts[narrow_name]
    passed = (
        c_narrow.logical == c_untied.physical == cfg.depth * c_narrow.physical
        and counts[wide_name].physical <= c_untied.physical
        and statistics.mean(errors[wide_name]) < statistics.mean(errors[untied_name])
        and 2 * wins > cfg.seeds
        and statistics.mean(errors[narrow_name]) > statistics.mean(errors[untied_name])
        and 0.85 < order < 1.15
        and ode_err[-1] < ode_err[0] / 10
    )
    rows = [
        {
            "stack (depth " + str(cfg.depth) + ")": name,
            "physical params": counts[name].physical,
            "logical params": counts[name].logical,
            "test error (rel. MSE, mean)": statistics.mean(errors[name]),
            "per seed": ", ".join(f"{format_number(e, 5)}" for e in errors[name]),
        }
        for name in models
    ]
    ode_rows = [{"depth L": d, "max |stack − ODE|": e} for d, e in zip(cfg.ode_depths, ode_err)]
    fig = _cross_layer_figure(models, errors, counts, ode_err, cfg)
    return Result(
        tables=[
            Table("equal budget", rows),
            Table("convergence to the neural ODE (dopri5 / RK4 reference)", ode_rows),
        ],
        figures={"cross_layer_sharing": fig},
        passed=passed,
        measured={
            "params untied / tied at equal width": c_untied.physical / c_narrow.physical,
            "error tied wide": statistics.mean(errors[wide_name]),
            "error untied narrow": statistics.mean(errors[untied_name]),
            "error tied narrow": statistics.mean(errors[narrow_name]),
            "seeds where tied wide wins": f"{wins}/{cfg.seeds}",
            "convergence order": order,
            f"ODE error at L={cfg.ode_depths[0]}": ode_err[0],
            f"ODE error at L={cfg.ode_depths[-1]}": ode_err[-1],
            "runs still gaining at the step budget": f"{gaining} of {cfg.seeds * len(models)}",
        },
        key_figure=(
            f"same budget: tied h={wide} error {format_number(statistics.mean(errors[wide_name]), 5)} vs untied "
            f"h={cfg.narrow} {format_number(statistics.mean(errors[untied_name]), 5)}; ODE order {format_number(order)}"
        ),
        notes=(
            "Task: map x to x(1) under dx/dt = f*(x), f* a random tanh field of width "
            f"{cfg.teacher_hidden}. The ODE limit uses the trained tied field in stacks of growing depth. "
            "Check: counts exact (tied narrow logical = untied physical = depth × tied physical); "
            "the tied wide stack, within the untied budget, has a lower mean error than untied "
            "and wins on a majority of seeds; tied narrow is worse than untied; convergence order "
            f"in (0.85, 1.15); the error at L={cfg.ode_depths[-1]} below a tenth of L={cfg.ode_depths[0]}'s."
            f" The errors are at a budget of {cfg.train_steps} Adam steps, not at convergence: "
            f"{gaining} of {cfg.seeds * len(models)} runs were still gaining at the end (best "
            "training loss down over 10% in the last fifth). With more steps every error falls "
            "and the tied wide stack's edge shrinks (quick, seed 0: untied / tied-wide error "
            "about 2.0 at 200 steps, 1.4 at 3,200) but it still wins (stop 36)."
        ),
    )


def _cross_layer_figure(models, errors, counts, ode_err, cfg):
    fig, (ax1, ax2) = new_figure(2, height=3.3)
    names = list(models)
    ax1.bar(range(3), [statistics.mean(errors[n]) for n in names], color=["C1", "0.6", "C0"])
    for i, n in enumerate(names):
        ax1.scatter([i] * len(errors[n]), errors[n], color="k", s=10, zorder=3)
    ax1.set_xticks(
        range(3),
        [f"{n.split(',')[0]}\nh={models[n][0]}\n{counts[n].physical} params" for n in names],
        fontsize=8,
    )
    ax1.set_ylabel("test error (relative MSE)")
    ax1.set_title("fit the flow map of a wide field")
    ax2.loglog(cfg.ode_depths, ode_err, "o-", label="trained tied stack")
    ref = ode_err[0] * cfg.ode_depths[0] / np.array(cfg.ode_depths)
    ax2.loglog(cfg.ode_depths, ref, "k:", label="slope −1 (Euler)")
    ax2.set_xlabel("depth L (step 1/L)")
    ax2.set_ylabel("max |stack(x) − x(1)|")
    ax2.set_title("same field, more layers → the ODE")
    ax2.legend()
    return fig
