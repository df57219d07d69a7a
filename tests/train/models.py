"""Small tied and untied models shared by the DP tests (float64, so 1e-6 relative is meaningful)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import tying


def ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def mse(out, y):
    return (out - y).pow(2).flatten(1).sum(1)


def seq_ce(logits, y):  # (B, T, V), (B, T) -> (B,)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").sum(1)


def mlp(seed=0):
    """Untied: Linear-Tanh-Linear."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


class Albert(nn.Module):
    """Three 8x8 layers tied with a Plan (weights and biases), between untied in/out layers."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(6, 8)
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.out = nn.Linear(8, 3)
        tying.Plan([tying.share("layers.*", like="layers.0")]).apply(self)
        self.double()

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return self.out(h)


class TiedAE(nn.Module):
    """Autoencoder whose decoder reads the encoder's weight transposed."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Linear(6, 4)
        self.dec = nn.Linear(4, 6)
        tying.Plan(
            [tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]
        ).apply(self)
        self.double()

    def forward(self, x):
        return self.dec(torch.tanh(self.enc(x)))


class TinyLM(nn.Module):
    """Tied-embedding language model: the output layer is the embedding (Same)."""

    def __init__(self, vocab=7, d=4, seed=0, padding_idx=None):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, d, padding_idx=padding_idx)
        self.mix = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(self)
        self.double()

    def forward(self, tokens):  # (B, T) -> (B, T, V)
        h = self.embed(tokens)  # (B, T, d)
        h = h + torch.tanh(self.mix(h))
        return self.lm_head(h)


class BagTied(nn.Module):
    """An embedding also read, transposed, by a Linear over a dense bag-of-words input."""

    def __init__(self, vocab=7, d=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, d)
        self.bag = nn.Linear(vocab, d, bias=False)  # weight (d, V) = embed.weightᵀ
        self.head = nn.Linear(d, 3)
        tying.Plan(
            [tying.share("bag.weight", like="embed.weight", relation=tying.Transposed())]
        ).apply(self)
        self.double()

    def forward(self, tokens):  # (B, T)
        vocab = torch.arange(self.embed.num_embeddings, device=tokens.device)
        bow = (tokens.unsqueeze(-1) == vocab).double().sum(1)  # (B, V); one_hot breaks vmap
        h = self.embed(tokens).mean(1) + torch.tanh(self.bag(bow))  # (B, d)
        return self.head(h)


class EmbedFromLinear(BagTied):
    """The Linear owns the matrix; the embedding reads it transposed (index on the right)."""

    def __init__(self, vocab=7, d=4, seed=0):
        nn.Module.__init__(self)
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, d)
        self.bag = nn.Linear(vocab, d, bias=False)
        self.head = nn.Linear(d, 3)
        tying.Plan(
            [tying.share("embed.weight", like="bag.weight", relation=tying.Transposed())]
        ).apply(self)
        self.double()


def twice():
    """A hand-made tie: the same Linear module called twice."""
    torch.manual_seed(0)
    lin = nn.Linear(5, 5)
    return nn.Sequential(lin, nn.Tanh(), lin).double()


def loop_grads(model, loss_fn, x, y):
    """The reference: one backward per example, gradients on model.named_parameters()."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    out = {n: [] for n in names}
    for b in range(len(y)):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x[b : b + 1]), y[b : b + 1]).sum().backward()
        params = dict(model.named_parameters())
        for n in names:
            g = params[n].grad
            out[n].append(torch.zeros_like(params[n]) if g is None else g.clone())
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(v) for n, v in out.items()}


def cases():
    """(name, model, loss_fn, x, y) for every model above, float64."""
    g = torch.Generator().manual_seed(1)
    x6 = torch.randn(9, 6, generator=g, dtype=torch.float64)
    y3 = torch.randint(0, 3, (9,), generator=g)
    tok = torch.randint(0, 7, (5, 6), generator=g)
    tgt = torch.randint(0, 7, (5, 6), generator=g)
    x5 = torch.randn(7, 5, generator=g, dtype=torch.float64)
    tok_pad = tok.clone()
    tok_pad[:, ::3] = 0
    return [
        ("mlp", mlp(), ce, x6, y3),
        ("albert", Albert(), ce, x6, y3),
        ("tied_ae", TiedAE(), mse, x6, x6),
        ("tiny_lm", TinyLM(), seq_ce, tok, tgt),
        ("tiny_lm_pad", TinyLM(padding_idx=0), seq_ce, tok_pad, tgt),
        ("bag_tied", BagTied(), ce, tok, tgt[:, 0] % 3),
        ("embed_from_linear", EmbedFromLinear(), ce, tok, tgt[:, 0] % 3),
        ("twice", twice(), mse, x5, x5),
    ]


def sq_err(out, y):
    """Per-example squared error, (B, D), (B, D) -> (B,)."""
    return (out - y).pow(2).sum(1)


class Reads(nn.Module):
    """Linear-tanh-Linear whose hidden rows are mixed by ``mix(h, c)`` (the batch-mixing
    probe's tests: ``c = 0`` mixes nothing)."""

    def __init__(self, mix, c=0.5):
        super().__init__()
        self.a, self.b, self.mix, self.c = nn.Linear(4, 6), nn.Linear(6, 3), mix, c

    def forward(self, x):  # (B, 4) -> (B, 3)
        h = torch.tanh(self.a(x))  # (B, 6)
        return self.b(self.mix(h, self.c))
