"""docs/coming-from.md rows added at stop 60: our side of each, as the row states it.

The anchors' side (torch, hmmlearn 0.3.3, lmfit 1.3.4, Opacus 1.6.0, OpenFF toolkit 0.18 /
pint 0.25) was run once by hand on the same inputs; importing them here would cost seconds
per test. A change on our side would leave the page wrong without a failing test.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import tying
from tying.nn import (
    Attention,
    HashedEmbedding,
    HashedEmbeddingBag,
    LocallyConnected2d,
    TiedGateLSTM,
)


def test_attention_rows_time_first_output_views_and_mha_calls_are_named():
    torch.manual_seed(0)
    att = Attention(16, n_heads=4, batch_first=False)
    x = torch.randn(5, 3, 16)
    assert att(x).is_contiguous() and att(x).view(-1, 16).shape == (15, 16)
    with pytest.raises(TypeError, match=r"pass attn\(x\) \(self-attention\)"):
        att(x, x, x)
    with pytest.raises(TypeError, match=r"4th positional is key_padding_mask"):
        att(x, x, x, torch.zeros(3, 5, dtype=torch.bool))
    for name in ("need_weights", "average_attn_weights"):
        with pytest.raises(TypeError, match=rf"no keyword '{name}' here.*drop {name}="):
            att(x, **{name: False})
    with pytest.raises(TypeError, match=r"causal=True\), or pass attn_mask=torch\.ones\(T, S"):
        att(x, is_causal=True)
    with pytest.raises(TypeError, match=r"is_causal=False is .*default; this layer is not causal"):
        att(x, is_causal=False)
    # the row's warning: the output alone, so unpacking a batch of 2 splits it
    out, _ = Attention(16, n_heads=4)(torch.randn(2, 5, 16))
    assert out.shape == (5, 16)
    lstm = TiedGateLSTM(3, 5, batch_first=False)
    assert lstm(torch.randn(5, 3, 3))[0].is_contiguous()


def test_embedding_lstm_and_padding_rows_name_what_to_do():
    with pytest.raises(ValueError, match=r"nn\.EmbeddingBag's pooling mode; pass pooling='sum'"):
        HashedEmbeddingBag(100, 8, 64, mode="sum")
    with pytest.raises(TypeError, match=r"pass offsets\[:-1\]"):
        HashedEmbeddingBag(100, 8, 64, include_last_offset=True)
    with pytest.raises(TypeError, match=r"out \* \(ids != padding_idx\)\.unsqueeze\(-1\)"):
        HashedEmbedding(100, 8, 64, padding_idx=0)
    with pytest.raises(TypeError, match=r"max_norm' here; rows are not renormalised"):
        HashedEmbedding(100, 8, 64, max_norm=1.0)
    with pytest.raises(TypeError, match=r"second\(first\(x\)\[0\]\)\[0\]"):
        TiedGateLSTM(3, 5, num_layers=2)
    with pytest.raises(TypeError, match=r"nn\.LSTM's num_layers=2; .*pass them by keyword"):
        TiedGateLSTM(3, 5, 2)
    h0 = torch.zeros(1, 3, 5)
    with pytest.raises(ValueError, match=r"pass state=\(h0\[0\], c0\[0\]\)"):
        TiedGateLSTM(3, 5)(torch.randn(3, 4, 3), state=(h0, h0))
    x = torch.randn(1, 2, 6, 6)
    for padding, side in (("same", 6), ("valid", 4)):
        lc = LocallyConnected2d(2, 4, kernel_size=3, input_size=(6, 6), padding=padding)
        assert lc(x).shape == (1, 4, side, side)


def _tied_head():
    torch.manual_seed(0)
    model = nn.ModuleDict({"embed": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(model)
    return model


def test_part_conversion_and_functional_call_rows_and_their_fixes():
    model = _tied_head()
    with pytest.raises(tying.TieError, match=r"head\.weight .*nothing was converted"):
        model.head.half()
    assert model.head.weight.dtype == model.embed.weight.dtype == torch.float32
    tying.Plan([tying.free("head.weight")]).apply(model)  # the row's fix
    model.head.half()
    assert (model.head.weight.dtype, model.embed.weight.dtype) == (torch.float16, torch.float32)
    model, w, x = _tied_head(), torch.randn(10, 4), torch.randn(2, 4)
    with pytest.raises(tying.TieError, match=r"c = copy\.deepcopy\(model\); tying\.untie\(c\)"):
        functional_call(model.head, {"weight": w}, (x,))
    c = copy.deepcopy(model)
    tying.untie(c)
    torch.testing.assert_close(functional_call(c.head, {"weight": w}, (x,)), x @ w.T)


def test_fit_rows_degenerate_pair_errors_and_lmfit_keywords():
    from tying.fit import FitWarning, GlobalFit

    eps = 1e-7
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 30)
    y = 2 * x + 1 + rng.normal(0, 0.01, 30)
    design = np.column_stack([x, x**2, np.ones_like(x)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    s2 = np.sum((y - design @ coef) ** 2) / 27
    t = np.array([[1, -1 / eps, 0], [0, 1 / eps, 0], [0, 0, 1]])
    exact = np.sqrt(np.diag(t @ np.linalg.inv(design.T @ design) @ t.T * s2))

    def model(x, a, b, c):
        return a * x + b * (x + eps * x**2) + c

    with pytest.warns(FitWarning, match="'a' and 'b'"):
        res = GlobalFit(
            model, [(x, y)], shared=["a", "b", "c"], init={"a": 1, "b": 0.5, "c": 0}
        ).run()
    np.testing.assert_allclose([res.stderr[n] for n in "abc"], exact, rtol=3e-8)

    def line(x, a, c):
        return a * x + c

    data = [(x, 2 * x + 1)]
    fit = dict(shared=["a", "c"], init={"a": 1.0, "c": 0.0})
    with pytest.raises(TypeError, match=r"pass GlobalFit\(\.\.\., xtol=1e-12, max_iter=500\)"):
        GlobalFit(line, data, fit_kws={"xtol": 1e-12, "maxfev": 500}, **fit)
    with pytest.raises(TypeError, match=r"pass fixed=\{'c': 1\.0\}"):
        GlobalFit(line, data, kws={"c": 1.0}, **fit)
    with pytest.raises(TypeError, match=r"'args': .*fixed=\{name: value\}"):
        GlobalFit(line, data, args=(x, x), **fit)
    for key, said in (("iter_cb", "no per-iteration callback"), ("calc_covar", "always computed")):
        with pytest.raises(TypeError, match=said):
            GlobalFit(line, data, **{key: None}, **fit)
    assert GlobalFit(line, data, xtol=1e-12, max_iter=500, **fit).run().success


def test_hmm_rows_zero_d_integers_and_raw_ids():
    from tying.hmm import CategoricalHMM, GaussianHMM

    m = GaussianHMM(2, random_state=0, n_iter=5, tol=-np.inf).fit(
        np.random.default_rng(0).normal(size=(60, 1))
    )
    _, states = m.sample(np.array(3), currstate=np.array(1), random_state=0)
    assert len(states) == 3 and states[0] == 1
    with pytest.raises(ValueError, match=r"got 1\.0 \(float\); pass one state"):
        m.sample(3, currstate=1.0)
    ids = np.array([[7], [2**40], [7], [2**40], [7], [123456789012]])
    cat = CategoricalHMM(2, n_iter=3, tol=-np.inf, random_state=0)
    with pytest.raises(ValueError, match=r"X holds 3 distinct symbols: code them as 0\.\.2 first"):
        cat.fit(ids)
    labels, codes = np.unique(ids, return_inverse=True)  # the row's recipe
    cat.fit(codes.reshape(-1, 1))  # logs "7 free scalar parameters", as hmmlearn does
    assert cat.n_symbols_ == 3 and np.isfinite(cat.score(np.searchsorted(labels, ids)))


def test_train_rows_empty_batch_and_a_batch_of_one_after_an_evaluation():
    from tying.train import ghost_norms, per_example_grads, per_example_norms

    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(7, 4), nn.Flatten(), nn.Linear(20, 3))

    def ce(out, y):
        return F.cross_entropy(out, y, reduction="none")

    x, y = torch.zeros(0, 5, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    grads = per_example_grads(net, ce, x, y)
    assert {n: g.shape for n, g in grads.items()} == {
        n: (0, *p.shape) for n, p in net.named_parameters()
    }
    assert per_example_norms(grads).shape == ghost_norms(net, ce, x, y).shape == (0,)
    net = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6)).double()
    scaled = tying.share("2.weight", like="0.weight", relation=tying.Scaled(init=0.5))
    tying.Plan([scaled]).apply(net)
    xs, ys = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    _alive = net(xs)  # an evaluation outside the step

    def mse(out, t):
        return ((out - t) ** 2).sum(-1)

    got = per_example_grads(net, mse, xs[:1], ys[:1])
    with torch.no_grad():
        net(xs)  # an evaluation as Opacus users write it
    again = per_example_grads(net, mse, xs[:1], ys[:1])
    net.zero_grad()
    mse(net(xs[:1]), ys[:1]).sum().backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(got[name][0], p.grad, rtol=0, atol=1e-14)
        torch.testing.assert_close(again[name][0], p.grad, rtol=0, atol=1e-14)


def test_chem_rows_toolkit_idioms():
    from tying.chem import SmirksAssigner, load_force_field

    a = SmirksAssigner("openff-2.3.0").assign("CCO")
    assert (1, 0) in a.bonds.keys() and a.bonds[[1, 0]].id == a.bonds[np.array([1, 0])].id
    assert a.ids("Bonds").get((1, 0)) == "b1"
    torsion = a.propers[(8, 2, 1, 0)]  # the toolkit's (0, 1, 2, 8), read backwards
    assert torsion.id == "t94" and torsion["phase1"] == 0 and not bool(torsion["phase1"])
    ff = load_force_field("openff-2.3.0")
    bonds = ff["Bonds"]
    assert sorted(["b1", "b2", "b3"], key=lambda i: bonds[i]["length"]) == ["b2", "b3", "b1"]
    with pytest.raises(TypeError, match=r"q\.to\('angstrom'\)\.value < 1"):
        _ = bonds["b1"]["length"] < 1
    assert "b1" in bonds and "[#6X4:1]-[#6X4:2]" in bonds and "k" in bonds["b1"]
    assert "Bonds" in a and "Bonds" in ff


def test_cli_row_ids_apart_and_in_upper_case(capsys):
    from tying.cli import EXIT_USAGE, main

    assert main(["run", "param-counts", "A2"]) == EXIT_USAGE
    assert "tying report --only param-counts,A2" in capsys.readouterr().err
    assert main(["run", "PARAM-COUNTS"]) == EXIT_USAGE
    assert "ids are lower-case, without spaces; pass 'param-counts'" in capsys.readouterr().err
