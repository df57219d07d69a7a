"""B9 kv-sharing and B10 encdec-kv-sharing at quick size (report size: slow)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import tying
from tying.experiments.attention_sharing import (
    ENCDEC,
    _copy_data,
    _copy_verdict,
    _ensemble_logits,
    _geometry_data,
    _logical,
    _model,
    _train_ensemble,
    encdec_kv_sharing,
    kv_sharing,
)


def test_kv_sharing_rank_is_params_minus_gauge():
    r = kv_sharing("quick", 0)
    assert r.passed
    rows = {row["attention"].split(" (")[0]: row for row in r.tables[0].rows}
    assert [rows[k]["Jacobian rank"] for k in ("MHA", "shared W_V", "GQA", "MQA")] == [
        224,
        188,
        176,
        152,
    ]
    for row in rows.values():
        assert row["Jacobian rank"] == row["params − gauge (predicted rank)"] < row["params"]
    # sharing loses fewer reachable output dimensions than parameters
    assert rows["MQA"]["rank / MHA rank"] > rows["MQA"]["params"] / rows["MHA"]["params"]


def _shifted(tgt, bos):
    return torch.cat([torch.full((*tgt.shape[:-1], 1), bos), tgt[..., :-1]], dim=-1)


@pytest.mark.parametrize("variant", ["separate", "shared K/V"])
@pytest.mark.parametrize("task", ["copy", "geometry"])
def test_ensemble_logits_are_the_library_model(variant, task):
    """The batched forward is EncoderDecoder.forward, model by model, ties included."""
    cfg = ENCDEC["quick"]
    make = _copy_data if task == "copy" else _geometry_data
    src, tgt, vocab = make(cfg, 5, 0)
    models = [_model(cfg, vocab, src.shape[1], variant, s) for s in (1, 2)]
    stacked, _ = torch.func.stack_module_state(models)
    tgt_in = _shifted(tgt, vocab)
    both = _ensemble_logits(
        _logical(models[0], stacked), torch.stack([src, src]), torch.stack([tgt_in, tgt_in]), 4
    )
    for m, model in enumerate(models):
        torch.testing.assert_close(both[m], model(src, tgt_in), atol=1e-5, rtol=1e-5)


@pytest.fixture
def float64():
    # in float32 the batched and the per-model sums round differently, and Adam turns
    # a rounding-noise gradient into a ±lr step; float64 leaves only real differences
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("variant", ["separate", "shared K/V"])
def test_ensemble_training_is_independent_runs(variant, float64):
    """Training seeds together equals training each model alone, ties included."""
    cfg = dataclasses.replace(ENCDEC["quick"], n_test=8)
    seeds, steps, n = [3, 7], 4, 16
    ens = _train_ensemble(cfg, "geometry", n, steps, variant, seeds)
    for m, seed in enumerate(seeds):
        src, tgt, vocab = _geometry_data(cfg, n + cfg.n_test, seed)
        model = _model(cfg, vocab, src.shape[1], variant, seed)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(10_000 + seed)
        for _ in range(steps):
            i = torch.randint(n, (cfg.batch,), generator=gen)
            logits = model(src[i], _shifted(tgt[i], vocab))
            loss = F.cross_entropy(logits.reshape(-1, vocab + 1), tgt[i].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        alone = dict(model.named_parameters())
        assert set(alone) == set(ens["weights"])
        for name, w in alone.items():
            if name.endswith("k_proj.bias"):
                # gauge: a key bias adds the same score to every key, which softmax cancels, so
                # its gradient is rounding noise and Adam turns noise into ±lr steps
                continue
            torch.testing.assert_close(ens["weights"][name][m], w.detach(), atol=1e-9, rtol=1e-7)
        tying.verify(model)


def test_geometry_task_answers_with_the_complement_colours_position():
    cfg = ENCDEC["quick"]
    src, tgt, vocab = _geometry_data(cfg, 200, 0)
    assert vocab == cfg.geo_colours + cfg.geo_length
    assert src.max() < cfg.geo_colours and (tgt >= cfg.geo_colours).all()
    for k in range(len(src)):
        assert len(set(src[k].tolist())) == cfg.geo_length  # each colour once
        for i in range(cfg.geo_length):
            ((j,),) = (src[k] == src[k, i] ^ 1).nonzero().tolist()
            assert tgt[k, i] == cfg.geo_colours + j


def test_copy_verdict_in_words():
    assert _copy_verdict(0.01, 0.05).startswith("reproduced")
    assert _copy_verdict(-0.05, -0.01).startswith("contradicted")
    assert _copy_verdict(-0.02, 0.03).startswith("neither")


def test_encdec_kv_sharing_measures_the_claim():
    r = encdec_kv_sharing("quick", 0)
    m = r.measured
    d = ENCDEC["quick"].d_model
    assert m["(1) K/V params removed"] == m["(1) expected 4·(d²+d)"] == 4 * (d * d + d)
    assert m["separate models learn both tasks (> 2× chance)"]
    rows = r.tables[0].rows
    assert [row["K/V"] for row in rows] == ["separate", "shared K/V"] * 2
    copy_rows = [row for row in rows if row["task"].startswith("copy")]
    assert all(row["train accuracy"] > 0.95 for row in copy_rows)  # both fit the few strings
    # the check is exactly (1) and (2) and (3) resolved, whatever the sign of (3)
    cost_shown = m["(2) cost task: shared − separate"] < -2 * m["(2) paired s.e."]
    assert m["(2) shared worse by > 2 s.e."] == cost_shown
    low, high = (float(x) for x in m["(3) ±2 s.e. interval"].strip("[]").split(","))
    assert m["(3) resolved (half-width ≤ 0.05)"] == ((high - low) / 2 <= 0.05 + 1e-9)
    assert r.passed == (cost_shown and m["(3) resolved (half-width ≤ 0.05)"])
    word = m["(3) 'helps copying' is"]
    assert word in r.notes and word in r.key_figure
    if m["(3) resolved (half-width ≤ 0.05)"]:
        assert word == _copy_verdict(low, high).split(":")[0]
    else:
        assert word == "unresolved" and m["(3) paired seeds"] == ENCDEC["quick"].copy_max_seeds


def test_encdec_sets_no_global_thread_count(monkeypatch):
    """The runner decides threads; the experiment must not override them (issue 16)."""
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    cfg = dataclasses.replace(
        ENCDEC["quick"], copy_steps=1, geo_steps=1, copy_block=2, copy_max_seeds=2, geo_seeds=2
    )
    monkeypatch.setitem(ENCDEC, "quick", cfg)
    encdec_kv_sharing("quick", 0)
    assert calls == []


@pytest.mark.slow
def test_kv_sharing_report_size():
    assert kv_sharing("report", 0).passed


@pytest.mark.slow
def test_encdec_kv_sharing_report_size_resolves_copying():
    r = encdec_kv_sharing("report", 0)
    m = r.measured
    assert m["(1) K/V params removed"] == m["(1) expected 4·(d²+d)"]
    assert m["separate models learn both tasks (> 2× chance)"]
    assert m["(3) resolved (half-width ≤ 0.05)"]  # 64 paired seeds suffice at report size
    assert r.passed == m["(2) shared worse by > 2 s.e."]
