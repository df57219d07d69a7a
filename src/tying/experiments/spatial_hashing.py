"""HashedNets (seed 002): a V×V matrix stored in B hash buckets; fewer buckets, worse model.

- C8 ``hashednets``: a bigram language model whose V×V logit table is a
  :class:`tying.nn.HashedEmbedding` with B buckets. Every logical entry (i, j) shares
  bucket h(i·V + j) with the other entries that hash there; as B shrinks, unrelated
  bigrams interfere and held-out perplexity rises.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tying.experiments._spatial_common import by_size, log, new_figure, rngs, seeded
from tying.experiments.registry import Result, Table, experiment
from tying.nn import HashedEmbedding
from tying.report.format import format_number


@dataclasses.dataclass(frozen=True)
class HashConfig:
    vocab: int  # V; the logit table has V² logical entries
    tokens: int  # training corpus length (held-out: a quarter of it)
    compression: tuple[int, ...]  # B = V² / c for each c
    steps: int = 200  # full-batch Adam on the bigram counts
    lr: float = 0.1
    concentration: float = 0.05  # Dirichlet α of each row: small = peaked next-token choice


HASH = {
    "quick": HashConfig(vocab=48, tokens=30_000, compression=(1, 4, 16, 64)),
    "report": HashConfig(vocab=96, tokens=150_000, compression=(1, 2, 4, 8, 16, 32, 64, 256)),
}


def _corpus(cfg: HashConfig, n: int, trans: np.ndarray, rng) -> np.ndarray:
    """A token sequence from the Markov chain ``trans`` (rows sum to 1)."""
    cum = trans.cumsum(axis=1)
    u = rng.random(n)
    seq = np.empty(n, dtype=np.int64)
    seq[0] = 0
    for t in range(1, n):
        seq[t] = min(int(np.searchsorted(cum[seq[t - 1]], u[t])), cfg.vocab - 1)
    return seq


def _bigram_counts(seq: np.ndarray, vocab: int) -> torch.Tensor:
    counts = np.zeros((vocab, vocab))
    np.add.at(counts, (seq[:-1], seq[1:]), 1)
    return torch.tensor(counts, dtype=torch.float32)


def _nll(logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per token of the bigrams in ``counts``."""
    return -(counts * F.log_softmax(logits, dim=1)).sum() / counts.sum()


class BigramLM(nn.Module):
    """logits(next | prev) = table[prev] + bias: a dense or hashed V×V table."""

    def __init__(self, vocab: int, buckets: int | None, seed: int):
        super().__init__()
        self.table = (
            nn.Embedding(vocab, vocab)
            if buckets is None
            else HashedEmbedding(vocab, vocab, buckets, seed=seed)
        )
        self.bias = nn.Parameter(torch.zeros(vocab))  # unigram part, not hashed
        with torch.no_grad():
            for p in self.table.parameters():
                p.mul_(0.01)  # start near the uniform model

    def forward(self, prev: torch.Tensor) -> torch.Tensor:
        return self.table(prev) + self.bias


@experiment("hashednets")
def hashednets(size: str, seed: int) -> Result:
    cfg = by_size(HASH, size)
    _, rng = rngs(seed)
    V = cfg.vocab
    trans = rng.dirichlet(np.full(V, cfg.concentration), size=V)
    train_counts = _bigram_counts(_corpus(cfg, cfg.tokens, trans, rng), V)
    test_counts = _bigram_counts(_corpus(cfg, cfg.tokens // 4, trans, rng), V)
    rows_idx = torch.arange(V)
    settings: list[tuple[str, int | None]] = [("dense nn.Embedding", None)]
    settings += [(f"hashed, B = V²/{c}", V * V // c) for c in cfg.compression]
    rows, ppl = [], {}
    for name, buckets in settings:
        with seeded(seed):
            model = BigramLM(V, buckets, seed)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for _ in range(cfg.steps):
            opt.zero_grad()
            _nll(model(rows_idx), train_counts).backward()
            opt.step()
        with torch.no_grad():
            logits = model(rows_idx)
            train_ppl = float(_nll(logits, train_counts).exp())
            test_ppl = float(_nll(logits, test_counts).exp())
        c = tying.count(model)
        ppl[name] = test_ppl
        rows.append(
            {
                "model": name,
                "buckets": buckets if buckets is not None else V * V,
                "logical params": c.logical,
                "physical params": c.physical,
                "train perplexity": train_ppl,
                "held-out perplexity": test_ppl,
            }
        )
    truth = torch.tensor(trans, dtype=torch.float32).clamp_min(1e-30).log()
    true_ppl = float(_nll(truth, test_counts).exp())
    unigram = test_counts.sum(0) / test_counts.sum()
    unigram_ppl = float(_nll(unigram.clamp_min(1e-30).log().expand(V, V), test_counts).exp())
    hashed = [ppl[name] for name, b in settings if b is not None]  # B shrinking
    monotone = all(b >= a * 0.99 for a, b in zip(hashed, hashed[1:]))
    passed = (
        monotone and hashed[-1] > 1.5 * hashed[0] and hashed[0] < 1.5 * ppl["dense nn.Embedding"]
    )
    log.info("hashednets: perplexities %s", [format_number(p) for p in hashed])

    fig, (ax,) = new_figure(width=5.4, height=3.6)
    bs = [b for _, b in settings if b is not None]
    ax.plot(bs, hashed, "o-", color="#4c72b0", label="hashed V×V table")
    ax.axhline(
        ppl["dense nn.Embedding"], color="#55a868", ls="--", label=f"dense ({V * V:,} params)"
    )
    ax.axhline(true_ppl, color="k", ls=":", label="true Markov chain")
    ax.axhline(unigram_ppl, color="#c44e52", ls="-.", label="unigram (no context)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(bs, [f"V²/{c}" for c in cfg.compression])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("buckets B (stored parameters of the table)")
    ax.set_ylabel("held-out perplexity")
    ax.legend(fontsize=8)
    ax.set_title(f"Bigram LM, V = {V}: fewer buckets, more interference")
    return Result(
        tables=[Table("Perplexity vs buckets", rows)],
        figures={"perplexity_vs_buckets": fig},
        passed=passed,
        measured={
            "held-out perplexity, B = V² → smallest B": (hashed[0], hashed[-1]),
            "dense perplexity": ppl["dense nn.Embedding"],
            "true-model perplexity": true_ppl,
            "monotone in B": monotone,
        },
        key_figure=f"perplexity {format_number(hashed[0])} → {format_number(hashed[-1])} as B: V² → V²/{cfg.compression[-1]}",
        notes="The table is tying.nn.HashedEmbedding: entry (i, j) reads sign·bucket[h(i·V+j)] "
        "with a universal hash; tying.count reports V² logical against B physical entries. "
        "Check: held-out perplexity never falls (1% tolerance) as B shrinks, rises over 1.5× "
        "from B = V² to the smallest B, and B = V² is within 1.5× of the dense table.",
    )
