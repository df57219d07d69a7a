"""Sharing keys and values in attention: across heads (B9) and across encoder/decoder (B10).

- B9 ``kv-sharing``: MHA, one W_V shared by all heads, GQA and MQA, counted with
  ``tying.count`` and measured by the rank of the Jacobian of the outputs with
  respect to all parameters (the local dimension of the reachable output space).
  The measured rank equals ``params − gauge``, where the gauge directions are the
  invertible ``d_head × d_head`` maps that cancel inside ``W_Q W_Kᵀ`` and
  ``W_V W_O``: one per head for MHA, one per shared K (or V) group otherwise.
- B10 ``encdec-kv-sharing``: W_K, W_V shared across encoder self-, decoder self-
  and cross-attention (one :class:`tying.Plan`) vs nothing shared, in a small
  encoder-decoder transformer: (1) the parameters removed; (2) the cost on a task
  where the encoder must find tokens by colour and cross-attention by position;
  (3) copying random strings from 32 examples, with paired seeds until the
  interval of the difference is resolved. Many paired seeds train at once as one
  batched computation over stacked weights, through the ties.

  What to expect of (2), from the algebra: with separate W_Q and W_O, one head's
  scores are ``x W_Q,hᵀ W_K,h y``, so tying W_K,h only fixes which d_head-wide
  slice of the key input head h reads; with a single full-width head nothing at
  all is lost (W_Q absorbs W_K⁻¹). The cost is that the heads must be divided
  between the geometries, which bites only when an attention needs every head.
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
from tying.report.format import format_number

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
    ax1.set_ylabel("count")
    ax1.legend()
    for name, sv in spectra.items():
        ax2.semilogy(sv / sv[0], label=name)
    ax2.set_ylim(1e-18, 2)
    ax2.set_xlabel("singular value index")
    ax2.set_ylabel("σ / σ_max of ∂outputs/∂params")
    ax2.set_title("Jacobian singular values")
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
#
# The claim has three parts, each measured on its own (claim B10 in CLAIMS.md):
# (1) the parameters removed, counted with tying.count on the real EncoderDecoder;
# (2) the cost: a task whose encoder self-attention must find tokens by one feature
#     (colour) while cross-attention must find them by another (position), so one
#     W_K/W_V per head has to serve two geometries;
# (3) copying at small data, the seeds' "helps copying" case: paired seeds are added
#     until the ±2 s.e. interval of shared − separate is at most 0.05 on each side.
#
# All seeds of one variant train at once: their weights are stacked along a leading
# "model" axis and `_ensemble_logits` computes EncoderDecoder.forward as batched
# einsums (one kernel for every model, where vmap would loop over SDPA per model).
# `test_ensemble_logits_are_the_library_model` pins it to EncoderDecoder, ties included.


@dataclasses.dataclass(frozen=True)
class EncDecConfig:
    d_model: int = 16  # 4 heads of d_head 4: a head reads a narrow slice of the features
    n_heads: int = 4
    d_ff: int = 32
    lr: float = 1e-2  # Adam, the same for every variant and task (a tiny model, few steps)
    batch: int = 32
    n_test: int = 256  # held-out strings per seed
    # (3) copying: random strings over `copy_vocab` symbols, `copy_train` of them to learn from
    copy_vocab: int = 24
    copy_length: int = 6
    copy_train: int = 32  # small data: the seeds' case for "helps copying"
    copy_steps: int = 100  # both variants fit the training strings by then
    copy_block: int = 16  # paired seeds added per round until the interval is resolved
    copy_max_seeds: int = 16  # the cap: an interval still wider is reported as unresolved
    # (2) the cost task: `geo_length` coloured tokens; colours come in complementary
    # pairs (2c, 2c+1), both of a pair in a string; the answer at position i is the
    # position of the token whose colour complements token i's
    geo_colours: int = 8
    geo_length: int = 4  # longer strings are not learned within the step budget
    geo_train: int = 2000  # enough strings that the rule, not the strings, is learned
    geo_steps: int = 200
    geo_seeds: int = 4
    half_width: float = 0.05  # the claim's resolution for (3): ±2 s.e. at most this


ENCDEC = {
    "quick": EncDecConfig(),
    # at most 64 + 16 + 16 models' training on one thread: well under a minute
    "report": EncDecConfig(copy_steps=200, copy_max_seeds=64, geo_steps=300, geo_seeds=8),
}

#: which projections each variant ties across encoder self-, decoder self- and cross-attention
_TIED_PARTS = {"separate": (), "shared K/V": ("k_proj", "v_proj")}
_VARIANTS = tuple(_TIED_PARTS)


def _copy_data(cfg: EncDecConfig, n: int, seed: int):
    """Random strings to copy: ``(src, tgt, vocab)``; the target is the source."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(cfg.copy_vocab, (n, cfg.copy_length), generator=gen)
    return src, src.clone(), cfg.copy_vocab


def _geometry_data(cfg: EncDecConfig, n: int, seed: int):
    """The cost task: ``(src, tgt, vocab)``.

    Source token = a colour; the colours of a string are ``geo_length / 2``
    complementary pairs (2c, 2c+1) of ``geo_colours``, shuffled. Target at position i
    (its own token range) = the position of the token whose colour is token i's
    complement. One decoder layer cannot find it alone (its cross-attention query at
    i knows only i), so the encoder must look tokens up by colour (content) and
    cross-attention must read memory position i (source and target share one
    positional table): two attentions, two geometries.
    """
    gen = torch.Generator().manual_seed(seed)
    pairs, length = cfg.geo_colours // 2, cfg.geo_length
    chosen = torch.argsort(torch.rand(n, pairs, generator=gen), dim=1)[:, : length // 2]
    colours = torch.cat([2 * chosen, 2 * chosen + 1], dim=1)  # (n, L): pair k at k and k+L/2
    order = torch.argsort(torch.rand(n, length, generator=gen), dim=1)
    colours = torch.gather(colours, 1, order)
    # partner[k, i] = the position j whose colour complements token i's: colours[k, j] == c ^ 1
    partner = (colours[:, None, :] == (colours ^ 1)[:, :, None]).int().argmax(-1)
    return colours, cfg.geo_colours + partner, cfg.geo_colours + length


def _model(cfg: EncDecConfig, vocab: int, length: int, variant: str, seed: int) -> EncoderDecoder:
    torch.manual_seed(seed)  # the same initial weights for every variant: comparisons are paired
    model = EncoderDecoder(
        vocab + 1, cfg.d_model, cfg.n_heads, layers=1, max_len=length, d_ff=cfg.d_ff
    )
    # one positional table for source and target, so "position i" is one vector on both sides
    tying.Plan([tying.share("tgt_pos.weight", like="src_pos.weight")]).apply(model)
    if _TIED_PARTS[variant]:
        model.kv_plan(across_layers=True, parts=_TIED_PARTS[variant]).apply(model)
    return model


def _logical(model: torch.nn.Module, physical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every slot the forward reads, by name: the physical tensors plus each tie's source."""
    out = dict(physical)
    for tie in tying.ties(model):
        if not isinstance(tie.relation, tying.Same):
            raise ValueError(f"{tie.target}: the ensemble handles identity ties only, got {tie}")
        out[tie.target] = physical[tie.source]
    return out


def _layer_norm(x: torch.Tensor, p: dict, name: str) -> torch.Tensor:
    w, b = p[f"{name}.weight"], p[f"{name}.bias"]  # (E, d)
    x = F.layer_norm(x, x.shape[-1:])
    return x * w[:, None, None] + b[:, None, None]


def _linear(x: torch.Tensor, p: dict, name: str) -> torch.Tensor:
    y = torch.einsum("ebtd,eod->ebto", x, p[f"{name}.weight"])  # (E, B, T, out)
    bias = p.get(f"{name}.bias")
    return y if bias is None else y + bias[:, None, None]


def _attention(x, ctx, p: dict, name: str, n_heads: int, causal: bool) -> torch.Tensor:
    e, b, t, d = x.shape
    s = ctx.shape[2]

    def heads(y, n):  # (E, B, n, H, dh) -> (E, B, H, n, dh)
        return y.view(e, b, n, n_heads, d // n_heads).transpose(2, 3)

    q = heads(_linear(x, p, f"{name}.q_proj"), t)
    k = heads(_linear(ctx, p, f"{name}.k_proj"), s)
    v = heads(_linear(ctx, p, f"{name}.v_proj"), s)
    scores = q @ k.transpose(-1, -2) / (d // n_heads) ** 0.5  # (E, B, H, T, S)
    if causal:
        scores = scores.masked_fill(torch.ones(t, s, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(2, 3).reshape(e, b, t, d)
    return _linear(out, p, f"{name}.out_proj")


def _block(x, p: dict, name: str, n_heads: int, memory=None) -> torch.Tensor:
    # TransformerBlock.forward (pre-norm), for E models at once
    cross = memory is not None  # the decoder's block: causal self-attention, then cross
    y = _layer_norm(x, p, f"{name}.norm1")
    x = x + _attention(y, y, p, f"{name}.self_attn", n_heads, causal=cross)
    if cross:
        x = x + _attention(
            _layer_norm(x, p, f"{name}.norm3"), memory, p, f"{name}.cross_attn", n_heads, False
        )
    h = F.gelu(_linear(_layer_norm(x, p, f"{name}.norm2"), p, f"{name}.mlp.0"))
    return x + _linear(h, p, f"{name}.mlp.2")


def _ensemble_logits(p: dict, src: torch.Tensor, tgt_in: torch.Tensor, n_heads: int):
    """``EncoderDecoder.forward`` (one layer) for E models: ``(E, B, S)``, ``(E, B, T)`` → logits."""
    embed = p["embed.weight"]  # (E, V, d)

    def embed_tokens(tokens, pos):
        rows = torch.gather(
            embed, 1, tokens.reshape(len(embed), -1, 1).expand(-1, -1, embed.shape[-1])
        )
        n = tokens.shape[-1]
        return rows.view(*tokens.shape, -1) + p[pos][:, None, :n]

    memory = _block(embed_tokens(src, "src_pos.weight"), p, "encoder.layers.0", n_heads)
    memory = _layer_norm(memory, p, "enc_norm")
    h = _block(embed_tokens(tgt_in, "tgt_pos.weight"), p, "decoder.layers.0", n_heads, memory)
    return torch.einsum("ebtd,evd->ebtv", _layer_norm(h, p, "dec_norm"), p["head.weight"])


def _train_ensemble(
    cfg: EncDecConfig, task: str, n_train: int, steps: int, variant: str, seeds: list[int]
) -> dict:
    """Train one model per seed at once and score each on held-out strings.

    The loss is the sum of the models' losses, so each model's gradient is its own,
    and Adam is elementwise: the same as training each model alone
    (``test_ensemble_training_is_independent_runs``).
    """
    make = _copy_data if task == "copy" else _geometry_data
    data = [make(cfg, n_train + cfg.n_test, s) for s in seeds]
    src, tgt = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])  # (E, N, L)
    vocab, length = data[0][2], src.shape[-1]
    models = [_model(cfg, vocab, length, variant, s) for s in seeds]
    stacked, _ = torch.func.stack_module_state(models)
    opt = torch.optim.Adam(list(stacked.values()), lr=cfg.lr)
    gens = [torch.Generator().manual_seed(10_000 + s) for s in seeds]

    def shifted(t):  # decoder input: BOS (= vocab) then the target shifted right
        return torch.cat([torch.full((*t.shape[:-1], 1), vocab), t[..., :-1]], dim=-1)

    def pick(x, idx):  # (E, N, L), (E, B) -> (E, B, L)
        return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))

    train_src, train_tgt = src[:, :n_train], tgt[:, :n_train]
    for _ in range(steps):
        idx = torch.stack([torch.randint(n_train, (cfg.batch,), generator=g) for g in gens])
        s, t = pick(train_src, idx), pick(train_tgt, idx)
        logits = _ensemble_logits(_logical(models[0], stacked), s, shifted(t), cfg.n_heads)
        loss = F.cross_entropy(logits.reshape(-1, vocab + 1), t.reshape(-1)) * len(seeds)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        p = _logical(models[0], stacked)
        test_src, test_tgt = src[:, n_train:], tgt[:, n_train:]
        right = _ensemble_logits(p, test_src, shifted(test_tgt), cfg.n_heads).argmax(-1) == test_tgt
        fit = (
            _ensemble_logits(p, train_src, shifted(train_tgt), cfg.n_heads).argmax(-1) == train_tgt
        )
    return {
        "test accuracy": right.float().mean(dim=(1, 2)).tolist(),
        "train accuracy": fit.float().mean(dim=(1, 2)).tolist(),
        "params": tying.count(models[0]).physical,
        "vocab": vocab,
        "weights": {k: v.detach() for k, v in stacked.items()},  # (E, ...)
    }


def _paired(task_runs: dict[str, dict]) -> list[float]:
    """Per-seed test accuracy, shared K/V − separate."""
    return [
        a - b
        for a, b in zip(
            task_runs["shared K/V"]["test accuracy"], task_runs["separate"]["test accuracy"]
        )
    ]


def _mean_se(d: list[float]) -> tuple[float, float]:
    """Mean and standard error of per-seed (paired) differences."""
    return statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5


def _copy_verdict(low: float, high: float) -> str:
    if low > 0:
        return "reproduced: shared K/V copies better than separate"
    if high < 0:
        return "contradicted: shared K/V copies worse than separate"
    return "neither: the interval contains 0 (no difference this large is resolved)"


@experiment("encdec-kv-sharing")
def encdec_kv_sharing(size: str, seed: int) -> Result:
    check_size(size)
    cfg = ENCDEC[size]

    # (1) parameters: 4 of the 6 K/V projections (weight + bias) of the three attentions go
    sizes = {
        v: tying.count(_model(cfg, cfg.copy_vocab, cfg.copy_length, v, seed)).physical
        for v in _VARIANTS
    }
    removed = sizes["separate"] - sizes["shared K/V"]
    expected = 4 * (cfg.d_model * cfg.d_model + cfg.d_model)

    # (2) the cost task, paired seeds
    geo_seeds = [seed * 1000 + 500 + s for s in range(cfg.geo_seeds)]
    geo = {
        v: _train_ensemble(cfg, "geometry", cfg.geo_train, cfg.geo_steps, v, geo_seeds)
        for v in _VARIANTS
    }
    cost_d = _paired(geo)
    cost, cost_se = _mean_se(cost_d)
    cost_shown = cost < -2 * cost_se

    # (3) copying at small data: add paired seeds until ±2 s.e. <= half_width or the cap
    copy = {v: {"test accuracy": [], "train accuracy": []} for v in _VARIANTS}
    while True:
        start = seed * 1000 + len(copy["separate"]["test accuracy"])
        block = list(range(start, start + cfg.copy_block))
        for v in _VARIANTS:
            run = _train_ensemble(cfg, "copy", cfg.copy_train, cfg.copy_steps, v, block)
            for key in ("test accuracy", "train accuracy"):
                copy[v][key] += run[key]
        copy_d = _paired(copy)
        copy_mean, copy_se = _mean_se(copy_d)
        if 2 * copy_se <= cfg.half_width or len(copy_d) >= cfg.copy_max_seeds:
            break
    resolved = 2 * copy_se <= cfg.half_width
    low, high = copy_mean - 2 * copy_se, copy_mean + 2 * copy_se
    verdict = _copy_verdict(low, high) if resolved else "unresolved: interval wider than ±0.05"
    learned = {  # a comparison means something only if separate models beat chance clearly
        "geometry": statistics.mean(geo["separate"]["test accuracy"]) > 2 / cfg.geo_length,
        "copy": statistics.mean(copy["separate"]["test accuracy"]) > 2 / cfg.copy_vocab,
    }
    passed = removed == expected and cost_shown and resolved and all(learned.values())

    rows = []
    for task, runs, n, steps in (
        ("geometry (cost)", geo, cfg.geo_train, cfg.geo_steps),
        ("copy (small data)", copy, cfg.copy_train, cfg.copy_steps),
    ):
        d = _paired(runs)
        m, se = _mean_se(d)
        for v in _VARIANTS:
            rows.append(
                {
                    "task": task,
                    "training strings": n,
                    "Adam steps": steps,
                    "paired seeds": len(d),
                    "K/V": v,
                    "params": sizes[v],
                    "test accuracy": statistics.mean(runs[v]["test accuracy"]),
                    "train accuracy": statistics.mean(runs[v]["train accuracy"]),
                    "shared − separate ± 2 s.e.": ""
                    if v == "separate"
                    else f"{format_number(m, 4, sign=True)} ± {format_number(2 * se, 4)}",
                }
            )
    figure = _encdec_figure({"geometry (cost)": cost_d, "copy (small data)": copy_d})
    return Result(
        tables=[Table("shared K/V vs separate, paired seeds", rows)],
        figures={"encdec_kv_sharing": figure},
        passed=passed,
        measured={
            "(1) K/V params removed": removed,
            "(1) expected 4·(d²+d)": expected,
            "(2) cost task: shared − separate": cost,
            "(2) paired s.e.": cost_se,
            "(2) shared worse by > 2 s.e.": cost_shown,
            "(3) copy: shared − separate": copy_mean,
            "(3) ±2 s.e. interval": f"[{format_number(low, 4, sign=True)}, {format_number(high, 4, sign=True)}]",
            "(3) paired seeds": len(copy_d),
            "(3) resolved (half-width ≤ 0.05)": resolved,
            "(3) 'helps copying' is": verdict.split(":")[0],
            "separate models learn both tasks (> 2× chance)": all(learned.values()),
        },
        key_figure=(
            f"−{removed} params; cost {format_number(cost, 4, sign=True)}±{format_number(2 * cost_se, 4)}; copying {format_number(copy_mean, 4, sign=True)}"
            f"±{format_number(2 * copy_se, 4)} ({verdict.split(':')[0]})"
        ),
        notes=(
            f"'Helps copying' is {verdict}. "
            "Teacher-forced per-token accuracy on held-out strings; each seed fixes the data and the "
            "initial weights of both variants, so differences are taken seed by seed. Shared K/V "
            "ties the K and V projections of all three attentions to the encoder's (4 of 6 "
            "removed). Cost task: every token has a colour; the answer at position i is the "
            "position of the token whose colour complements token i's, so the "
            "encoder must look tokens up by colour and cross-attention by position. The check "
            "passes iff (1) the count is exact, (2) shared is worse on the cost task by more than "
            "2 paired s.e., and (3) the copying interval is resolved to ±0.05, whatever its sign."
        ),
    )


def _encdec_figure(diffs: dict[str, list[float]]):
    fig, axes = new_figure(1, width=5.4, height=3.4)
    ax = axes[0]
    for i, d in enumerate(diffs.values()):
        ax.scatter([i] * len(d), d, s=9, alpha=0.45, color=f"C{i}")
        m, se = _mean_se(d)
        ax.errorbar(i + 0.15, m, yerr=2 * se, fmt="o", color=f"C{i}", capsize=4)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(range(len(diffs)), list(diffs))
    ax.set_ylabel("test accuracy, shared K/V − separate")
    ax.set_title("per seed (dots) and mean ± 2 s.e. (paired seeds)", fontsize=9)
    return fig
