"""Small models and checks shared by the core tests."""

from __future__ import annotations

import torch
from safetensors.torch import save
from torch import nn


class Stack(nn.Module):
    """An encoder of identical blocks plus an LM head: ALBERT/embedding tying targets."""

    def __init__(self, vocab: int = 11, d: int = 8, n: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"fc": nn.Linear(d, d), "norm": nn.LayerNorm(d)}) for _ in range(n)
        )
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens):  # (B, T) -> (B, T, V)
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer["norm"](h + torch.tanh(layer["fc"](h)))
        return self.lm_head(h)


class AE(nn.Module):
    def __init__(self, d_in: int = 6, d_hid: int = 3):
        super().__init__()
        self.enc = nn.Linear(d_in, d_hid)
        self.dec = nn.Linear(d_hid, d_in)

    def forward(self, x):
        return self.dec(torch.tanh(self.enc(x)))


def state_bytes(model: nn.Module) -> bytes:
    """Every tensor of the state dict, as bytes: equal bytes == bit-identical state."""
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return save(sd) + repr(sorted((k, type(m).__name__) for k, m in model.named_modules())).encode()


def sgd_step(model: nn.Module, loss: torch.Tensor, lr: float = 0.1) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    loss.backward()
    opt.step()
