"""C7 ``meta-fast-slow``: slow weights shared across tasks + a few fast weights give few-shot learning (seed 002).

The task family is sinusoid regression (Finn et al. 2017): ``y = A sin(x + φ)``
with amplitude ``A ∈ [0.1, 5]`` and phase ``φ ∈ [0, π]`` drawn per task, ``x ∈
[−5, 5]``; a new task shows only ``K`` examples. The network is a 1-40-40-1 MLP.

- *fast/slow* (:class:`tying.train.FastSlow`, ANIL with Meta-SGD's learned
  inner rates): the body is slow — one tensor for every task, meta-trained over
  many tasks; the last layer is fast — its meta-learned start is adapted to each
  task by one gradient step on the ``K = 5`` examples. A new task costs 41
  numbers instead of 1,761.
- *from scratch*: the same network, randomly initialised, trained on the ``K``
  examples alone (Adam, to convergence on them).
- *fast weights on untrained slow weights*: the same inner loop on a randomly
  initialised body: shows that what the slow weights learned is what matters.

The check: on held-out tasks the fast/slow model's mean query error is less
than half the from-scratch error, it is lower on at least two thirds of the
tasks (paired), and less than half that of the same fast weights on untrained
slow weights (what the slow weights learned is what matters).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from tying.experiments.registry import Result, Table, check_size, experiment
from tying.report.format import format_number
from tying.train import FastSlow

log = logging.getLogger("tying.experiments")


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    shots: int = 5  # K examples of a new task: too few to pin a sinusoid without a prior
    meta_steps: int = 1500  # outer (slow) steps; each draws `meta_batch` tasks
    meta_batch: int = 25  # tasks per outer step
    meta_lr: float = 3e-3  # Adam on the slow weights and the fast weights' start
    inner_steps: int = 1  # fast-weight gradient steps per task (training and test alike)
    inner_lr: float = 0.05  # fast-weight learning rate (the start, when learned)
    learn_inner_lr: bool = True  # Meta-SGD: one learned rate per fast weight
    eval_tasks: int = 60  # held-out tasks
    query: int = 100  # query points per held-out task (a dense grid of x)
    scratch_steps: int = 150  # Adam steps for the from-scratch baseline (fits the K shots)
    scratch_lr: float = 1e-2


CONFIGS = {
    "quick": MetaConfig(meta_steps=400, eval_tasks=40),
    "report": MetaConfig(),
}


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)
    )


def _mse(out, y):
    return ((out - y) ** 2).mean()


def _draw(g: torch.Generator, n_tasks: int):
    amp = 0.1 + 4.9 * torch.rand(n_tasks, 1, 1, generator=g)
    phase = math.pi * torch.rand(n_tasks, 1, 1, generator=g)
    return amp, phase


def _sampler(cfg: MetaConfig):
    def sample(g):
        amp, phase = _draw(g, cfg.meta_batch)
        x = -5 + 10 * torch.rand(cfg.meta_batch, 2 * cfg.shots, 1, generator=g)
        y = amp * torch.sin(x + phase)
        return x[:, : cfg.shots], y[:, : cfg.shots], x[:, cfg.shots :], y[:, cfg.shots :]

    return sample


def _scratch(cfg: MetaConfig, xs, ys, xq, seed: int):
    """Train one fresh network per task on its K shots (all tasks at once, one vmap)."""
    torch.manual_seed(seed)
    nets = [_net() for _ in range(xs.shape[0])]
    params, _ = stack_module_state(nets)  # each leaf (n_tasks, ...)
    base = copy.deepcopy(nets[0]).to("meta")

    def loss_one(p, x, y):
        return _mse(functional_call(base, p, (x,)), y)

    opt = torch.optim.Adam(params.values(), lr=cfg.scratch_lr)  # elementwise: = one Adam per task
    for _ in range(cfg.scratch_steps):
        opt.zero_grad(set_to_none=True)
        vmap(loss_one)(params, xs, ys).sum().backward()
        opt.step()
    with torch.no_grad():
        return vmap(lambda p, x: functional_call(base, p, (x,)))(params, xq)


def _adapted(fs: FastSlow, xs, ys, xq):
    out = []
    for i in range(xs.shape[0]):
        fast = fs.adapt(_mse, xs[i], ys[i])
        with torch.no_grad():
            out.append(fs.predict(fast, xq[i]))
    return torch.stack(out)


def _figure(xs, ys, xq, yq, preds: dict[str, torch.Tensor], history, n_fast, n_all) -> Figure:
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    colors = {
        "fast/slow (meta-trained)": "C0",
        "from scratch": "C3",
        "fast on untrained slow": "C7",
    }
    for j, ax in enumerate(axes[:3]):
        x = xq[j, :, 0]
        order = x.argsort()
        ax.plot(x[order], yq[j, order, 0], "k-", lw=1, label="truth")
        for name, p in preds.items():
            ax.plot(x[order], p[j, order, 0], color=colors[name], lw=1.5, label=name)
        ax.plot(xs[j, :, 0], ys[j, :, 0], "k^", ms=6, label=f"{xs.shape[1]} shots")
        ax.set_title(f"held-out task {j + 1}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    axes[0].legend(fontsize=7, loc="lower left")
    ax = axes[3]
    h = np.convolve(history, np.ones(20) / 20, mode="valid")
    ax.plot(h)
    ax.set_yscale("log")
    ax.set_xlabel("meta step")
    ax.set_ylabel("query MSE (20-step mean)")
    ax.set_title("meta-training query loss")
    # the counts are the model's own (they were typed in: a change of the net left them wrong)
    fig.suptitle(
        f"C7: a new task from {xs.shape[1]} examples: adapt {n_fast} fast weights "
        f"(of {n_all:,}) on shared slow weights"
    )
    return fig


@experiment("meta-fast-slow")
def meta_fast_slow(size: str, seed: int) -> Result:
    check_size(size)
    cfg = CONFIGS[size]
    torch.manual_seed(seed)
    model = _net()
    untrained = copy.deepcopy(model)
    fs = FastSlow(
        model,
        fast=["4"],
        inner_lr=cfg.inner_lr,
        inner_steps=cfg.inner_steps,
        learn_inner_lr=cfg.learn_inner_lr,
    )
    history = fs.meta_fit(
        _sampler(cfg),
        _mse,
        meta_steps=cfg.meta_steps,
        lr=cfg.meta_lr,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    # held-out tasks: K shots to adapt on, a dense grid to score
    g = torch.Generator().manual_seed(seed + 2)
    amp, phase = _draw(g, cfg.eval_tasks)
    xs = -5 + 10 * torch.rand(cfg.eval_tasks, cfg.shots, 1, generator=g)
    ys = amp * torch.sin(xs + phase)
    xq = torch.linspace(-5, 5, cfg.query).expand(cfg.eval_tasks, cfg.query)[..., None]
    yq = amp * torch.sin(xq + phase)

    fs_untrained = FastSlow(
        untrained, fast=["4"], inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps
    )
    preds = {
        "fast/slow (meta-trained)": _adapted(fs, xs, ys, xq),
        "from scratch": _scratch(cfg, xs, ys, xq, seed + 3),
        "fast on untrained slow": _adapted(fs_untrained, xs, ys, xq),
    }
    per_task = {n: ((p - yq) ** 2).mean((1, 2)) for n, p in preds.items()}  # (eval_tasks,)
    meta = per_task["fast/slow (meta-trained)"]
    scratch = per_task["from scratch"]
    wins = float((meta < scratch).float().mean())
    ratio = float(meta.mean() / scratch.mean())
    measured = {
        "shots": cfg.shots,
        "meta_mse": float(meta.mean()),
        "scratch_mse": float(scratch.mean()),
        "fast_on_untrained_slow_mse": float(per_task["fast on untrained slow"].mean()),
        "meta_over_scratch": ratio,
        "tasks_where_meta_wins": wins,
        "fast_params_per_task": fs.n_fast,
        "all_params": fs.n_fast + fs.n_slow,
    }
    untrained_mse = float(per_task["fast on untrained slow"].mean())
    passed = bool(ratio < 0.5 and wins >= 2 / 3 and float(meta.mean()) < 0.5 * untrained_mse)
    rows = [
        {
            "model": n,
            "query MSE (mean)": float(v.mean()),
            "query MSE (median)": float(v.median()),
            "params trained per new task": fs.n_fast if "fast" in n else fs.n_fast + fs.n_slow,
        }
        for n, v in per_task.items()
    ]
    log.info("meta-fast-slow: %s", measured)
    return Result(
        tables=[Table(f"{cfg.eval_tasks} held-out tasks, {cfg.shots} shots each", rows)],
        figures={
            "meta_fast_slow": _figure(
                xs, ys, xq, yq, preds, history, fs.n_fast, fs.n_fast + fs.n_slow
            )
        },
        passed=passed,
        measured=measured,
        key_figure=(
            f"{cfg.shots}-shot MSE: fast/slow {format_number(meta.mean())} vs scratch {format_number(scratch.mean())} "
            f"(wins on {format_number(wins, 2, percent=True)} of tasks; {fs.n_fast} of {fs.n_fast + fs.n_slow} weights adapted)"
        ),
        notes=(
            "Pass: mean query error of the meta-trained fast/slow model below half the "
            "from-scratch error, lower on at least two thirds of the held-out tasks, and below "
            "half the error of the same fast weights on untrained slow weights."
        ),
    )
