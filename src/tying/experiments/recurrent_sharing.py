"""Recurrent networks: sharing inside the LSTM cell, and what training wires up (seeds 002, 004).

- B11 ``lstm-tied-gates``: tying the input weights of the forget, input and output
  gates (``W_f = W_i = W_o``) removes ``2·H·D`` parameters. On a task whose gates are
  driven by one hidden feature of the input, the tied LSTM pools the evidence for
  that feature across gates: a smaller train/test gap at small data (a regulariser),
  bought with a higher training error (less expressiveness).
- D6 ``network-motifs``: read a trained RNN's wiring (input → hidden → output, the
  strongest weights) as a directed graph and count feed-forward loops (FFL: a→b→c
  with a→c). Against degree-preserving random graphs, the FFL z-score is ≈ 0 at
  initialisation and clearly positive after training on persistence detection,
  the function the coherent FFL performs in gene networks.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics

import numpy as np
import torch
from torch import nn

import tying
from tying.experiments.common import new_figure
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.nn import TiedGateLSTM
from tying.report.format import format_number

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- B11


@dataclasses.dataclass(frozen=True)
class GateConfig:
    n_train: int = 256  # small data: the regime where a regulariser matters
    n_test: int = 512
    steps_per_seq: int = 8  # T
    features: int = 16  # input features; the gates are driven by one direction of them
    hidden: int = 8
    train_steps: int = 200  # full-batch Adam steps
    lr: float = 1e-2
    seeds: int = 2  # independent data sets and inits; the check uses all of them


GATE = {"quick": GateConfig(), "report": GateConfig(train_steps=300, seeds=6)}


def _gate_task(cfg: GateConfig, n: int, direction: torch.Tensor, gen: torch.Generator):
    """Read out the running sum of marked values, at marked steps only.

    A step is marked when its features point along ``direction`` (unknown to the
    model): the input gate must open there (write the value) and the output gate
    too (read it out), so both gates need the same input feature.
    """
    values = torch.randn(n, cfg.steps_per_seq, 1, generator=gen)
    feats = torch.randn(n, cfg.steps_per_seq, cfg.features, generator=gen)
    mark = ((feats @ direction) > 0.5).float().unsqueeze(-1)  # (n, T, 1)
    x = torch.cat([values, feats], dim=-1)  # (n, T, 1 + features)
    return x, mark * torch.cumsum(values * mark, dim=1)


class _Regressor(nn.Module):
    def __init__(self, d_in: int, hidden: int, tie: bool) -> None:
        super().__init__()
        self.rnn = TiedGateLSTM(d_in, hidden, tie_gates=tie)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0])  # (B, T, 1)


def _fit_lstm(cfg: GateConfig, tie: bool, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(cfg.features, generator=gen)
    direction = direction / direction.norm()
    x_tr, y_tr = _gate_task(cfg, cfg.n_train, direction, gen)
    x_te, y_te = _gate_task(cfg, cfg.n_test, direction, gen)
    torch.manual_seed(seed)
    model = _Regressor(1 + cfg.features, cfg.hidden, tie)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for _ in range(cfg.train_steps):
        opt.zero_grad()
        loss = (model(x_tr) - y_tr).pow(2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train = float((model(x_tr) - y_tr).pow(2).mean())
        test = float((model(x_te) - y_te).pow(2).mean())
    return {
        "train": train,
        "test": test,
        "gap": test - train,
        "params": tying.count(model).physical,
    }


@experiment("lstm-tied-gates")
def lstm_tied_gates(size: str, seed: int) -> Result:
    check_size(size)
    cfg = GATE[size]
    torch.set_num_threads(1)
    runs = {
        tie: [_fit_lstm(cfg, tie, seed * 1000 + s) for s in range(cfg.seeds)]
        for tie in (False, True)
    }
    mean = {
        tie: {k: statistics.mean(r[k] for r in runs[tie]) for k in ("train", "test", "gap")}
        for tie in runs
    }
    smaller_gap = sum(t["gap"] < u["gap"] for t, u in zip(runs[True], runs[False]))
    higher_train = sum(t["train"] > u["train"] for t, u in zip(runs[True], runs[False]))
    p_tied, p_untied = runs[True][0]["params"], runs[False][0]["params"]
    saved = 2 * cfg.hidden * (1 + cfg.features)
    passed = (
        p_untied - p_tied == saved
        and mean[True]["gap"] < mean[False]["gap"]
        and 2 * smaller_gap >= cfg.seeds
        and mean[True]["train"] > mean[False]["train"]
    )
    rows = [
        {
            "LSTM": "untied" if not tie else "tied W_f = W_i = W_o",
            "params": runs[tie][0]["params"],
            "train MSE": mean[tie]["train"],
            "test MSE": mean[tie]["test"],
            "gap (test − train)": mean[tie]["gap"],
        }
        for tie in (False, True)
    ]
    fig, (ax,) = new_figure(1, width=5.0, height=3.3)
    for tie, marker in ((False, "s"), (True, "o")):
        ax.scatter(
            [r["train"] for r in runs[tie]],
            [r["test"] for r in runs[tie]],
            marker=marker,
            label=f"{'tied' if tie else 'untied'} ({runs[tie][0]['params']} params)",
        )
    lim = max(r["test"] for rs in runs.values() for r in rs) * 1.1
    ax.plot([0, lim], [0, lim], "k:", lw=0.8)
    ax.set_xlabel("train MSE")
    ax.set_ylabel("test MSE")
    ax.set_title(f"{cfg.seeds} seeds, {cfg.n_train} training sequences")
    ax.legend()
    return Result(
        tables=[Table(f"mean over {cfg.seeds} seeds", rows)],
        figures={"lstm_tied_gates": fig},
        passed=passed,
        measured={
            "params saved (2·H·D)": p_untied - p_tied,
            "gap tied": mean[True]["gap"],
            "gap untied": mean[False]["gap"],
            "seeds with smaller tied gap": f"{smaller_gap}/{cfg.seeds}",
            "train MSE tied": mean[True]["train"],
            "train MSE untied": mean[False]["train"],
            "seeds with higher tied train MSE": f"{higher_train}/{cfg.seeds}",
        },
        key_figure=(
            f"gap {format_number(mean[True]['gap'], 4)} tied vs {format_number(mean[False]['gap'], 4)} untied; "
            f"train MSE {format_number(mean[True]['train'], 4)} vs {format_number(mean[False]['train'], 4)}"
        ),
        notes=(
            "Task: a step is marked when its 16 features point along a hidden direction; the model "
            "outputs the running sum of marked values at marked steps, so the input and output gates "
            "need the same input feature. The tie pools their evidence for it. On tasks whose gates "
            "need different features the tie only costs."
        ),
    )


# ---------------------------------------------------------------------------- D6


@dataclasses.dataclass(frozen=True)
class MotifConfig:
    hidden: int = 24  # RNN units
    seq_len: int = 12
    batch: int = 128
    train_steps: int = 300
    lr: float = 1e-2
    l1: float = 1e-3  # sparse wiring; without it no circuit stands out (see notes)
    density: float = 0.1  # fraction of the strongest connections kept as edges
    null_graphs: int = 60  # degree-preserving random graphs per z-score
    seeds: int = 4  # trained networks; the check uses the mean z-score


MOTIF = {"quick": MotifConfig(), "report": MotifConfig(null_graphs=100, seeds=12)}


def ffl_count(adj: np.ndarray) -> int:
    """Feed-forward loops a→b→c with a→c in a 0/1 adjacency (``adj[a, b]``: edge a→b)."""
    a = adj.copy()
    np.fill_diagonal(a, 0)
    return int(((a @ a) * a).sum())


def null_ffl_counts(adj: np.ndarray, rng: np.random.Generator, n_null: int) -> np.ndarray:
    """FFL counts of ``n_null`` random graphs with the same in- and out-degrees as ``adj``.

    Maslov–Sneppen directed edge swaps (a→b, c→d ⇒ a→d, c→b, refused when they would
    make a self-loop or a double edge), 10 attempts per edge, run on all graphs at once.
    """
    src0, dst0 = np.nonzero(adj)
    n_edges = len(src0)
    graphs = np.arange(n_null)
    src = np.tile(src0, (n_null, 1))
    dst = np.tile(dst0, (n_null, 1))
    a = np.repeat(adj[None].astype(bool), n_null, axis=0)  # (G, n, n)
    for _ in range(10 * n_edges):
        i, j = rng.integers(n_edges, size=(2, n_null))
        s1, d1, s2, d2 = src[graphs, i], dst[graphs, i], src[graphs, j], dst[graphs, j]
        ok = (s1 != s2) & (d1 != d2) & (s1 != d2) & (s2 != d1)
        ok &= ~a[graphs, s1, d2] & ~a[graphs, s2, d1]
        g, s1, d1, s2, d2 = graphs[ok], s1[ok], d1[ok], s2[ok], d2[ok]
        a[g, s1, d1] = a[g, s2, d2] = False
        a[g, s1, d2] = a[g, s2, d1] = True
        dst[g, i[ok]], dst[g, j[ok]] = d2, d1
    af = a.astype(float)
    return ((af @ af) * af).sum(axis=(1, 2))


def ffl_zscore(adj: np.ndarray, rng: np.random.Generator, n_null: int) -> tuple[float, int, float]:
    """(z, observed FFLs, mean FFLs of the degree-preserving null)."""
    observed = ffl_count(adj)
    null = null_ffl_counts(adj, rng, n_null)
    return (
        (observed - float(null.mean())) / (float(null.std()) + 1e-9),
        observed,
        float(null.mean()),
    )


def _wiring(rnn: nn.RNN, out: nn.Linear, density: float) -> np.ndarray:
    """Input, hidden and output units as one directed graph of the strongest weights."""
    w_in = rnn.weight_ih_l0.detach().numpy()  # (H, I)
    w_hh = rnn.weight_hh_l0.detach().numpy().copy()  # (H, H): row = target
    w_out = out.weight.detach().numpy()  # (O, H)
    np.fill_diagonal(w_hh, 0.0)
    h, i, o = w_hh.shape[0], w_in.shape[1], w_out.shape[0]
    m = np.zeros((i + h + o, i + h + o))
    # m[a, b]: strength of a → b; each block scaled by its RMS so the three compare
    m[:i, i : i + h] = np.abs(w_in.T) / np.sqrt((w_in**2).mean())
    m[i : i + h, i : i + h] = np.abs(w_hh.T) / np.sqrt((w_hh**2).mean())
    m[i : i + h, i + h :] = np.abs(w_out.T) / np.sqrt((w_out**2).mean())
    weights = m[m > 0]
    threshold = np.sort(weights)[-int(density * weights.size)]
    return (m >= threshold).astype(float)


def _persistence_task(cfg: MotifConfig, gen: torch.Generator):
    x = (torch.rand(cfg.batch, cfg.seq_len, 1, generator=gen) < 0.5).float()
    y = torch.zeros_like(x)
    y[:, 2:] = (
        x[:, 2:] * x[:, 1:-1] * x[:, :-2]
    )  # on only after 3 steps "on": a persistence detector
    return x, y


def _motif_run(cfg: MotifConfig, seed: int, l1: float) -> dict:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    rnn, out = nn.RNN(1, cfg.hidden, batch_first=True), nn.Linear(cfg.hidden, 1)
    before = ffl_zscore(_wiring(rnn, out, cfg.density), rng, cfg.null_graphs)
    x, y = _persistence_task(cfg, gen)
    opt = torch.optim.Adam([*rnn.parameters(), *out.parameters()], lr=cfg.lr)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, out.weight)
    for _ in range(cfg.train_steps):
        opt.zero_grad()
        mse = (out(rnn(x)[0]) - y).pow(2).mean()
        (mse + l1 * sum(w.abs().sum() for w in weights)).backward()
        opt.step()
    after = ffl_zscore(_wiring(rnn, out, cfg.density), rng, cfg.null_graphs)
    return {
        "z before": before[0],
        "z after": after[0],
        "FFL before": before[1],
        "FFL after": after[1],
        "null after": after[2],
        "mse": float(mse.detach()),
    }


@experiment("network-motifs")
def network_motifs(size: str, seed: int) -> Result:
    check_size(size)
    cfg = MOTIF[size]
    torch.set_num_threads(1)
    runs = [_motif_run(cfg, seed * 1000 + s, cfg.l1) for s in range(cfg.seeds)]
    z_before = [r["z before"] for r in runs]
    z_after = [r["z after"] for r in runs]
    mean_before, mean_after = float(np.mean(z_before)), float(np.mean(z_after))
    rose = sum(a > b for a, b in zip(z_after, z_before))
    control = []
    if size == "report":  # the same training without the L1 penalty
        control = [_motif_run(cfg, seed * 1000 + s, 0.0) for s in range(cfg.seeds // 2)]
    passed = abs(mean_before) < 1.5 and mean_after > 2.0 and mean_after - mean_before > 1.5
    log.info("D6: FFL z %.2f -> %.2f", mean_before, mean_after)
    fig, (ax,) = new_figure(1, width=5.0, height=3.3)
    for b, a in zip(z_before, z_after):
        ax.plot([0, 1], [b, a], "o-", color="C0", alpha=0.5)
    for r in control:
        ax.plot([0, 1], [r["z before"], r["z after"]], "s--", color="0.6", alpha=0.6)
    ax.axhline(2.0, color="k", ls=":", lw=0.8)
    ax.set_xticks([0, 1], ["initialisation", "trained"])
    ax.set_ylabel("FFL z-score vs degree-preserving graphs")
    ax.set_title("persistence detection" + (" (grey: no L1)" if control else ""))
    rows = [
        {
            "network": f"seed {i}",
            **r,
        }
        for i, r in enumerate(runs)
    ]
    tables = [
        Table(
            f"FFL z-scores, {cfg.hidden} units, top {format_number(cfg.density, 2, percent=True)} of weights",
            rows,
        )
    ]
    if control:
        tables.append(
            Table(
                "control: trained without the L1 penalty",
                [
                    {"network": f"seed {i}", "z before": r["z before"], "z after": r["z after"]}
                    for i, r in enumerate(control)
                ],
            )
        )
    return Result(
        tables=tables,
        figures={"ffl_zscores": fig},
        passed=passed,
        measured={
            "mean FFL z before": mean_before,
            "mean FFL z after": mean_after,
            "networks whose z rose": f"{rose}/{cfg.seeds}",
        },
        key_figure=f"FFL z-score {format_number(mean_before)} → {format_number(mean_after)} (mean of {cfg.seeds} RNNs)",
        notes=(
            "Graph: input, hidden and output units; an edge for each of the strongest 10% of weights "
            "(each weight matrix scaled by its RMS). Training uses an L1 penalty so that the wiring is "
            "sparse; the report's control shows that without it the trained weights are spread over "
            "all edges and no FFL enrichment is seen."
        ),
    )
