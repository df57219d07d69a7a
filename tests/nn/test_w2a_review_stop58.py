"""Stop 58 review of c5da779 (fit: held slots in predictions) and 28f1ab1 (nn: Siamese re-draw).

- ``result.predict(i, x)`` (values only) of a fit holding a slot now takes the derivative to
  warn; a difference step past the model's own domain check refused the values, under the
  name ``predict(..., stderr=True)`` (they came back before c5da779).
- ``Siamese(nn.MultiheadAttention(...), tied=False)``: out_proj's own reset, run after the
  attention's, re-drew out_proj.bias (up to 0.24; 0 in a fresh one).
- ``Siamese(nn.Linear(1, 1), tied=False)``: one-element parameters were never re-drawn: the
  right tower a copy of the left, no warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tying.fit import FitWarning, GlobalFit
from tying.nn import Siamese


def _guarded(x, a, b, c):
    arg = x - c
    if np.any(np.real(arg) < 0):  # a model's own domain check
        raise ValueError("x below the threshold c")
    return a * np.sqrt(arg) + b * np.sin(x)


def test_values_alone_at_the_edge_of_the_domain_need_no_derivative():
    rng = np.random.default_rng(3)
    x1, x2 = np.linspace(0.5, 3, 30), np.zeros(30)  # data set 1 never reads b: held
    data = [(x1, _guarded(x1, 1, 2, -0.5) + rng.normal(0, 0.01, 30), 0.01),
            (x2, _guarded(x2, 1.5, 2, -0.5) + rng.normal(0, 0.01, 30), 0.01)]  # fmt: skip
    with pytest.warns(FitWarning):
        res = GlobalFit(_guarded, data, shared=["c"], local=["a", "b"],
                        init={"a": 1.0, "b": 1.0, "c": -1.0}, bounds={"c": (None, 0.0)}).run()  # fmt: skip
    c = res.values["c"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        y = res.predict(1, [c, 1.0])
    want = res.values["a"][1] * np.sqrt(np.array([c, 1.0]) - c) + np.sin([c, 1.0])
    np.testing.assert_allclose(y, want, rtol=1e-12)


def test_attention_out_proj_bias_keeps_the_attention_scheme():
    for make, path in ((lambda: nn.MultiheadAttention(16, 4), "out_proj.bias"),
                       (lambda: nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0),
                        "self_attn.out_proj.bias")):  # fmt: skip
        torch.manual_seed(0)
        net = Siamese(make(), tied=False)
        assert torch.count_nonzero(make().get_parameter(path)) == 0  # a fresh one: 0
        assert torch.count_nonzero(net.right.get_parameter(path)) == 0
        w = "out_proj.weight" if path == "out_proj.bias" else "self_attn.out_proj.weight"
        assert not torch.equal(net.right.get_parameter(w), net.left.get_parameter(w))


def test_one_element_parameters_are_redrawn_as_before():
    torch.manual_seed(0)
    tower = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 8))
    torch.manual_seed(5)
    net = Siamese(tower, tied=False)
    for name, p in net.right.named_parameters():
        assert not torch.equal(p, net.left.get_parameter(name)), name
    # the same numbers as resetting each layer in turn (the parent commit's draw)
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 8))
    torch.manual_seed(5)
    for m in ref:
        m.reset_parameters()
    for name, p in net.right.named_parameters():
        assert torch.equal(p, ref.get_parameter(name)), name
