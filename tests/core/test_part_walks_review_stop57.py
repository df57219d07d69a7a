"""Review of the part walks (stop 57): optimizers are no walker (an optimizer per part held
the shared weight twice and stepped it twice), and a compiled forward that walks its
parameters traces (sys._getframe stopped fullgraph compilation)."""

import torch
from torch import nn

import tying

X = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))


def _model():
    torch.manual_seed(0)
    m = nn.Module()
    m.enc = nn.Linear(4, 4)
    m.dec = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3))
    tying.Plan([tying.share("dec.0.weight", like="enc.weight")]).apply(m)
    return m


def test_param_groups_per_part_are_accepted_and_hold_the_source_once():
    m = _model()
    opt = torch.optim.AdamW(
        [{"params": m.enc.parameters()}, {"params": m.dec.parameters(), "lr": 1e-4}], lr=1e-3
    )
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))


class _WalksItsParameters(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.dec = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3))

    def forward(self, x):
        dtype = next(self.dec.parameters()).dtype  # the usual self.dtype / self.device idiom
        return self.dec(self.enc(x.to(dtype)))


def test_fullgraph_compile_of_a_forward_that_walks_its_parameters():
    torch.manual_seed(0)
    m = _WalksItsParameters()
    tying.Plan([tying.share("dec.0.weight", like="enc.weight")]).apply(m)
    want = m(X)
    got = torch.compile(m, backend="eager", fullgraph=True)(X)
    torch.testing.assert_close(got, want)
