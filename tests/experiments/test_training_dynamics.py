"""D3 ctc and D8 gan-clipping at quick size (report size: slow)."""

from __future__ import annotations

import pytest
import torch

from tying.experiments.training_dynamics import beam_decode, ctc, gan_clipping, greedy_decode


def test_ctc():
    r = ctc("quick", 0)
    assert r.passed
    m = r.measured
    assert m["peak blank ratio (first third)"] > 0.95
    assert m["final greedy accuracy"] > 0.8
    assert m["half-trained: greedy ≠ beam"] > 0.0


def test_greedy_and_beam_decoding_on_a_known_case():
    # best path is "blank blank" (0.6·0.6 = .36) but label [1] has 1 − .36 = .64 in total
    p = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log().unsqueeze(1)  # (T=2, B=1, C=2)
    assert greedy_decode(p) == [[]]
    assert beam_decode(p, beam=4) == [[1]]
    q = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.1, 0.9, 0.0]]).clamp_min(1e-9).log()
    assert greedy_decode(q.unsqueeze(1)) == [[1, 1]]  # a blank between repeats keeps both


def test_gan_clipping():
    r = gan_clipping("quick", 0)
    assert r.passed
    m = r.measured
    assert m["final distance, clip 0.03"] < 0.25 * m["start distance"]
    assert m["final distance, no clipping"] > m["start distance"]
    assert m["bilinear final, clip 0.03"] < m["bilinear final, no clipping"]


@pytest.mark.slow
@pytest.mark.parametrize("fn", [ctc, gan_clipping])
def test_report_size(fn):
    assert fn("report", 0).passed
