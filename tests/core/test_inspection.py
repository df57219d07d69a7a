import pytest
import torch
from torch import nn

import tying


@pytest.mark.parametrize(
    "module,expected",
    [
        (nn.Linear(7, 3), 7),
        (nn.Conv2d(3, 16, 3), 27),
        (nn.Conv2d(8, 8, (3, 5), groups=4), 2 * 15),
        (nn.Conv1d(4, 2, 9), 36),
        (nn.ConvTranspose2d(6, 4, 3), 54),
        (nn.RNN(10, 20), 30),
        (nn.GRUCell(5, 7), 12),
        (nn.Embedding(100, 8), 1),
    ],
)
def test_fan_in_counts_one_output_unit(module, expected):
    assert tying.fan_in(module) == expected


def test_fan_in_unknown_module_names_supported_types():
    with pytest.raises(TypeError, match="ReLU has no weight to count; supported: Linear"):
        tying.fan_in(nn.ReLU())


def test_accidental_ties_found_after_constant_init_and_training():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1))
    for p in net.parameters():
        nn.init.constant_(p, 0.3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(20):
        opt.zero_grad()
        (net(x) - y).pow(2).mean().backward()
        opt.step()
    # identical in exact arithmetic; SIMD summation order may differ in the last bit
    found = tying.find_accidental_ties(net, atol=1e-6)
    assert [(t.path, t.units) for t in found] == [("0", tuple(range(6))), ("2", tuple(range(6)))]


def test_no_accidental_ties_after_random_init_and_partial_groups():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    assert tying.find_accidental_ties(net) == []
    with torch.no_grad():
        net[0].weight[3] = net[0].weight[1]
        net[0].bias[3] = net[0].bias[1]
    assert tying.find_accidental_ties(net) == []  # outgoing columns still differ
    with torch.no_grad():
        net[2].weight[:, 3] = net[2].weight[:, 1]
    assert tying.find_accidental_ties(net) == [tying.AccidentalTie("0", (1, 3), "2")]
    with torch.no_grad():
        net[2].weight[:, 3] += 1e-4
    assert tying.find_accidental_ties(net, atol=1e-3) == [tying.AccidentalTie("0", (1, 3), "2")]
