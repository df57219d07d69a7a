"""Sharing keys and values in attention: across heads (B9) and across encoder/decoder (B10).

- B9 ``kv-sharing``: MHA, one W_V shared by all heads, GQA and MQA, counted with
  ``tying.count`` and measured by the rank of the Jacobian of the outputs with
  respect to all parameters (the local dimension of the reachable output space).
  The measured rank equals ``params − gauge``, where the gauge directions are the
  invertible ``d_head × d_head`` maps that cancel inside ``W_Q W_Kᵀ`` and
  ``W_V W_O``: one per head for MHA, one per shared K (or V) group otherwise.
- B10 ``encdec-kv-sharing``: a small encoder-decoder transformer learns to copy
  from few examples (random strings; and a "names" task that translates common
  words and copies rare names), with W_K, W_V shared across encoder self-,
  decoder self- and cross-attention (one :class:`tying.Plan`), with W_Q shared
  too, or with nothing shared. Many paired seeds are trained at once with
  ``torch.vmap`` over stacked weights, through the ties.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev

import tying
from tying.experiments.common import new_figure
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.nn import Attention, EncoderDecoder

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- B9


@dataclasses.dataclass(frozen=True)
class KVConfig:
    d_model: int = 8
    n_heads: int = 4
    sequences: int = 8  # inputs at which the Jacobian is taken
    tokens: int = 6  # outputs = sequences·tokens·d_model, more than any model's parameters
    big_d: int = 768  # a realistic width, for the parameter table only
    big_heads: int = 12


KV = {"quick": KVConfig(), "report": KVConfig(d_model=16, sequences=16)}


def _variants(n_heads: int) -> dict[str, dict]:
    return {
        "MHA": {},
        "shared W_V": {"v_heads": 1},
        f"GQA ({n_heads // 2} K/V heads)": {"kv_heads": n_heads // 2},
        "MQA": {"kv_heads": 1},
    }


def _gauge(n_heads: int, d_head: int, kv_heads: int, v_heads: int) -> int:
    # W_Q,h A and A⁻¹ W_K,g cancel for each K group g (A shared by the heads reading it);
    # likewise B for each V group in W_V,g B and B⁻¹ W_O,h.
    return (kv_heads + v_heads) * d_head * d_head


def _jacobian_rank(attn: Attention, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    params = {k: v.detach() for k, v in attn.named_parameters()}

    def outputs(p):
        return functional_call(attn, p, (x,)).reshape(-1)

    with warnings.catch_warnings():  # vmap falls back to a loop for SDPA's backward: only slower
        warnings.simplefilter("ignore", UserWarning)
        jac = jacrev(outputs)(params)
    mat = torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in params], dim=1)
    sv = torch.linalg.svdvals(mat)
    tol = sv.max() * max(mat.shape) * torch.finfo(mat.dtype).eps
    return int((sv > tol).sum()), sv


@experiment("kv-sharing")
def kv_sharing(size: str, seed: int) -> Result:
    check_size(size)
    cfg = KV[size]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.sequences, cfg.tokens, cfg.d_model, generator=gen, dtype=torch.float64)
    d_head = cfg.d_model // cfg.n_heads
    rows, spectra = [], {}
    for name, kw in _variants(cfg.n_heads).items():
        torch.manual_seed(seed)
        attn = Attention(cfg.d_model, cfg.n_heads, bias=False, **kw).double()
        params = tying.count(attn).physical
        rank, sv = _jacobian_rank(attn, x)
        gauge = _gauge(cfg.n_heads, d_head, attn.kv_heads, attn.v_heads)
        big = Attention(
            cfg.big_d, cfg.big_heads, bias=False, **_variants(cfg.big_heads)[_big_name(name, cfg)]
        )
        rows.append(
            {
                "attention": name,
                "params": params,
                "Jacobian rank": rank,
                "params − gauge (predicted rank)": params - gauge,
                "rank / MHA rank": None,
                f"params at d={cfg.big_d}, {cfg.big_heads} heads": tying.count(big).physical,
            }
        )
        spectra[name] = sv.numpy()
    for row in rows:
        row["rank / MHA rank"] = row["Jacobian rank"] / rows[0]["Jacobian rank"]
    ranks = [r["Jacobian rank"] for r in rows]
    params = [r["params"] for r in rows]
    outputs = cfg.sequences * cfg.tokens * cfg.d_model
    passed = (
        all(r["Jacobian rank"] == r["params − gauge (predicted rank)"] for r in rows)
        and all(a > b for a, b in zip(ranks, ranks[1:]))
        and all(a > b for a, b in zip(params, params[1:]))
        and outputs > max(params)
    )
    fig, (ax1, ax2) = new_figure(2, height=3.3)
    idx = np.arange(len(rows))
    ax1.bar(idx - 0.2, params, 0.4, label="parameters")
    ax1.bar(idx + 0.2, ranks, 0.4, label="Jacobian rank")
    ax1.set_xticks(idx, [r["attention"].split(" (")[0] for r in rows])
    ax1.set_title(f"d={cfg.d_model}, {cfg.n_heads} heads")
    ax1.legend()
    for name, sv in spectra.items():
        ax2.semilogy(sv / sv[0], label=name)
    ax2.set_ylim(1e-18, 2)
    ax2.set_xlabel("singular value index")
    ax2.set_ylabel("σ / σ_max of ∂outputs/∂params")
    ax2.legend(fontsize=8)
    return Result(
        tables=[Table(f"{outputs} outputs at {cfg.sequences} random sequences", rows)],
        figures={"kv_sharing_rank": fig},
        passed=passed,
        measured={r["attention"]: f"params {r['params']}, rank {r['Jacobian rank']}" for r in rows},
        key_figure=" > ".join(f"{r['attention'].split(' (')[0]} {r['Jacobian rank']}" for r in rows)
        + " (Jacobian rank)",
        notes=(
            "Rank of the float64 Jacobian of all outputs w.r.t. all parameters (no biases), counted "
            "above σ_max·size·eps. Sharing loses fewer output dimensions than parameters: part of "
            "each removed matrix was gauge (directions that never changed the output)."
        ),
    )


def _big_name(name: str, cfg: KVConfig) -> str:
    small, big = list(_variants(cfg.n_heads)), list(_variants(cfg.big_heads))
    return big[small.index(name)]


# ---------------------------------------------------------------------------- B10


@dataclasses.dataclass(frozen=True)
class CopyConfig:
    # (task, training sequences): "copy" copies random strings; "names" translates
    # common words (a fixed word-to-word map) and copies names drawn from a large
    # set, so most test names were rare or unseen in training: the claim's case
    tasks: tuple[tuple[str, int], ...] = (("copy", 32),)
    variants: tuple[str, ...] = ("separate", "shared K/V")
    seeds: int = 4  # paired: each seed's data and initial weights are the same for every variant
    steps: int = 200
    d_model: int = 32
    n_heads: int = 4
    d_ff: int = 64
    batch: int = 32
    lr: float = 3e-3
    n_test: int = 500
    copy_vocab: int = 24
    copy_length: int = 6
    words: int = 16
    names: int = 200
    names_length: int = 8
    p_name: float = 0.3


COPY = {
    "quick": CopyConfig(),
    "report": CopyConfig(
        tasks=(("copy", 32), ("copy", 64), ("names", 128)),
        variants=("separate", "shared K/V", "shared Q/K/V"),
        seeds=16,
        steps=400,
    ),
}

#: which projections each variant ties across encoder self-, decoder self- and cross-attention
_TIED_PARTS = {
    "separate": (),
    "shared K/V": ("k_proj", "v_proj"),
    "shared Q/K/V": ("q_proj", "k_proj", "v_proj"),
}


def _copy_data(cfg: CopyConfig, task: str, n: int, seed: int):
    """``(src, tgt, copied, vocab)``: token strings, and which target tokens are copies."""
    gen = torch.Generator().manual_seed(seed)
    if task == "copy":
        src = torch.randint(cfg.copy_vocab, (n, cfg.copy_length), generator=gen)
        return src, src.clone(), torch.ones_like(src, dtype=torch.bool), cfg.copy_vocab
    if task == "names":  # tokens: source words | target words | names
        shape = (n, cfg.names_length)
        words = torch.randint(cfg.words, shape, generator=gen)
        names = 2 * cfg.words + torch.randint(cfg.names, shape, generator=gen)
        is_name = torch.rand(shape, generator=gen) < cfg.p_name
        translate = cfg.words + torch.randperm(
            cfg.words, generator=torch.Generator().manual_seed(0)
        )
        src = torch.where(is_name, names, words)
        return (
            src,
            torch.where(is_name, names, translate[words]),
            is_name,
            2 * cfg.words + cfg.names,
        )
    raise ValueError(f"unknown copy task {task!r}; use 'copy' or 'names'")


def _copy_model(cfg: CopyConfig, vocab: int, length: int, parts: tuple[str, ...], seed: int):
    torch.manual_seed(seed)  # same initial weights for every variant: the comparison is paired
    model = EncoderDecoder(
        vocab + 1, cfg.d_model, cfg.n_heads, layers=1, max_len=length, d_ff=cfg.d_ff
    )
    # one positional table for source and target, so "position i" is one vector on both sides
    tying.Plan([tying.share("tgt_pos.weight", like="src_pos.weight")]).apply(model)
    if parts:
        model.kv_plan(across_layers=True, parts=parts).apply(model)
    return model


def _copy_ensemble(
    cfg: CopyConfig, task: str, n_train: int, variant: str, seeds: list[int]
) -> dict:
    """Train one model per seed, all at once (``vmap`` over stacked weights), and score them.

    The summed loss has independent gradients per model and Adam is elementwise, so
    this is the same as training each model alone (``test_copy_ensemble_is_independent_runs``).
    """
    data = [_copy_data(cfg, task, n_train + cfg.n_test, s) for s in seeds]
    src, tgt, copied = (torch.stack([d[i] for d in data]) for i in range(3))
    vocab, bos, length = data[0][3], data[0][3], src.shape[-1]
    models = [_copy_model(cfg, vocab, length, _TIED_PARTS[variant], s) for s in seeds]
    params, buffers = torch.func.stack_module_state(models)
    base, n_models = models[0], len(seeds)

    def run(p, b, s, t):
        return functional_call(base, (p, b), (s, t))

    batched = torch.vmap(run)
    opt = torch.optim.Adam(list(params.values()), lr=cfg.lr)
    gens = [torch.Generator().manual_seed(10_000 + s) for s in seeds]

    def shifted(s):  # decoder input: BOS then the target shifted right
        return torch.cat([torch.full((*s.shape[:-1], 1), bos), s[..., :-1]], dim=-1)

    def pick(x, idx):
        return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))

    train_src, train_tgt = src[:, :n_train], tgt[:, :n_train]
    with warnings.catch_warnings():  # vmap runs SDPA through a slower per-model loop: only slower
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(cfg.steps):
            idx = torch.stack([torch.randint(n_train, (cfg.batch,), generator=g) for g in gens])
            s, t = pick(train_src, idx), pick(train_tgt, idx)
            logits = batched(params, buffers, s, shifted(t))
            loss = F.cross_entropy(logits.reshape(-1, vocab + 1), t.reshape(-1)) * n_models
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            test_src, test_tgt, test_copied = (
                src[:, n_train:],
                tgt[:, n_train:],
                copied[:, n_train:],
            )
            right = batched(params, buffers, test_src, shifted(test_tgt)).argmax(-1) == test_tgt
            train_right = (
                batched(params, buffers, train_src, shifted(train_tgt)).argmax(-1) == train_tgt
            )
    return {
        "copy accuracy": [float(right[m][test_copied[m]].float().mean()) for m in range(n_models)],
        "other accuracy": [
            float(right[m][~test_copied[m]].float().mean()) if (~test_copied[m]).any() else None
            for m in range(n_models)
        ],
        "train accuracy": [float(train_right[m].float().mean()) for m in range(n_models)],
        "params": tying.count(base).physical,
        "vocab": vocab,
        "weights": {k: v.detach() for k, v in params.items()},  # stacked: (n_models, ...)
    }


def _mean_se(d: list[float]) -> tuple[float, float]:
    """Mean and standard error of per-seed (paired) differences."""
    return statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5


@experiment("encdec-kv-sharing")
def encdec_kv_sharing(size: str, seed: int) -> Result:
    check_size(size)
    cfg = COPY[size]
    torch.set_num_threads(1)
    seeds = [seed * 1000 + s for s in range(cfg.seeds)]
    runs = {
        (task, n, v): _copy_ensemble(cfg, task, n, v, seeds)
        for task, n in cfg.tasks
        for v in cfg.variants
    }
    per_seed = {  # shared − separate copy accuracy, seed by seed
        (task, n, v): [
            a - b for a, b in zip(r["copy accuracy"], runs[(task, n, "separate")]["copy accuracy"])
        ]
        for (task, n, v), r in runs.items()
        if v != "separate"
    }
    rows, diffs = [], {}
    for (task, n, v), r in runs.items():
        diff, se = _mean_se(per_seed[(task, n, v)]) if v != "separate" else (0, 0)
        if v == "shared K/V":
            diffs[(task, n)] = (diff, se)
        others = [x for x in r["other accuracy"] if x is not None]
        rows.append(
            {
                "task": task,
                "training strings": n,
                "W tied across the 3 attentions": v,
                "params": r["params"],
                "test copy accuracy": statistics.mean(r["copy accuracy"]),
                "− separate (paired, ± s.e.)": "" if v == "separate" else f"{diff:+.3f} ± {se:.3f}",
                "translated-word accuracy": statistics.mean(others) if others else "",
                "train accuracy": statistics.mean(r["train accuracy"]),
            }
        )
    first = cfg.tasks[0]
    saved = runs[(*first, "separate")]["params"] - runs[(*first, "shared K/V")]["params"]
    proj = cfg.d_model * cfg.d_model + cfg.d_model
    learned = all(
        statistics.mean(r["copy accuracy"]) > 5 / r["vocab"]
        for (task, n, v), r in runs.items()
        if v == "separate"
    )
    # "helps copying": shared K/V beats separate by more than two paired standard errors
    helps = {k: d > 2 * se for k, (d, se) in diffs.items()}
    passed = saved == 4 * proj and learned and all(helps.values())

    fig, axes = new_figure(1, width=5.4, height=3.4)
    ax = axes[0]
    shared = [v for v in cfg.variants if v != "separate"]
    for j, v in enumerate(shared):
        for i, (task, n) in enumerate(cfg.tasks):
            d = per_seed[(task, n, v)]
            x = i + (j - (len(shared) - 1) / 2) * 0.3
            ax.scatter([x] * len(d), d, s=9, alpha=0.45, color=f"C{j}")
            m, se = _mean_se(d)
            ax.errorbar(
                x,
                m,
                yerr=2 * se,
                fmt="o",
                color=f"C{j}",
                capsize=4,
                label=f"{v} − separate" if i == 0 else None,
            )
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(range(len(cfg.tasks)), [f"{t}\n{n} strings" for t, n in cfg.tasks])
    ax.set_ylabel("test copy accuracy, shared − separate")
    ax.set_title(f"per seed (dots) and mean ± 2 s.e., {cfg.seeds} paired seeds", fontsize=9)
    ax.legend(fontsize=8)
    key = ", ".join(f"{t} n={n}: {d:+.3f}±{se:.3f}" for (t, n), (d, se) in diffs.items())
    return Result(
        tables=[Table(f"copying with and without tied projections, {cfg.steps} Adam steps", rows)],
        figures={"encdec_copy": fig},
        passed=passed,
        measured={
            "K/V params removed": saved,
            **{
                f"copy accuracy shared K/V − separate, {t} n={n}": d
                for (t, n), (d, _) in diffs.items()
            },
            **{f"paired s.e., {t} n={n}": se for (t, n), (_, se) in diffs.items()},
            "separate models learn to copy (> 5× chance)": learned,
        },
        key_figure="shared K/V − separate: " + key,
        notes=(
            "Teacher-forced per-token accuracy on unseen strings; for the names task only the copied "
            "name tokens count (translated words are shown apart). Each seed fixes the data and the "
            "initial weights, so every variant is compared with 'separate' seed by seed. Shared K/V "
            "ties the K and V projections of all three attentions to the encoder's (4 of 6 removed); "
            "shared Q/K/V also ties the queries. The check asks that shared K/V beat separate by "
            "more than two paired standard errors on every task. Outcomes at these data sizes "
            "depend strongly on the seed (a model finds the alignment or memorises), which is why "
            "the seeds are paired and many."
        ),
    )
