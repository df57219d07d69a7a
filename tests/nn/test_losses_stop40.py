"""Stop 40: soft IoU / Dice on bfloat16 masks and complex inputs.

bfloat16 sums were rounded to 8 bits: the score was off by up to 1.4 of its own last
bits against float64 on the same (rounded) inputs. Complex logits came back as a complex
score with no error.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import SoftDiceLoss, SoftIoULoss, soft_dice, soft_iou


def ulps(got: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """Distance of each bfloat16 score from the float64 one, in bfloat16 last bits at ``ref``."""
    return [
        abs(a - b) / 2.0 ** (math.floor(math.log2(b)) - 7)
        for a, b in zip(got.tolist(), ref.tolist())
    ]


def masks(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(2, 1, n, n, generator=g).bfloat16()
    t = (torch.rand(2, 1, n, n, generator=g) < 0.3).bfloat16()
    return p, t


@pytest.mark.parametrize("score", [soft_iou, soft_dice])
def test_a_bfloat16_score_is_the_float64_score_rounded_once(score):
    p, t = masks(512, 0)  # old code: IoU 1.37, Dice 1.13 last bits off
    ref = score(p.double(), t.double(), reduction="none")  # the same inputs, exact sums
    got = score(p, t, reduction="none")
    assert got.dtype == torch.bfloat16
    assert max(ulps(got, ref)) <= 0.5 + 1e-3


@settings(derandomize=True, deadline=None, max_examples=6)
@given(n=st.sampled_from([128, 256, 512]), seed=st.integers(0, 2**16), iou=st.booleans())
def test_property_low_precision_scores_stay_within_a_rounding_of_float64(n, seed, iou):
    """The kind of defect: a reduced-precision accumulation. float16 and bfloat16 scores
    are the float64 score of the same inputs, up to the final rounding."""
    score = soft_iou if iou else soft_dice
    p, t = masks(n, seed)
    ref = score(p.double(), t.double(), reduction="none")
    assert max(ulps(score(p, t, reduction="none"), ref)) <= 0.5 + 0.1
    half = score(p.half(), t.half(), reduction="none").double()  # 10 bits: 8× finer
    assert ((half - ref).abs() / ref).max() <= 2.0**-11 * 1.2


@pytest.mark.parametrize("fn", [soft_iou, soft_dice, SoftIoULoss(from_logits=True), SoftDiceLoss()])
def test_complex_prediction_or_target_is_refused(fn):
    t = torch.zeros(2, 1, 4, 4)
    t[..., :2, :2] = 1
    z = torch.randn(2, 1, 4, 4, dtype=torch.cfloat)
    # before stop 40: complex logits scored 0.38+0.05j, a complex target died in aminmax
    with pytest.raises(TypeError, match=r"prediction must be real .* got torch.complex64"):
        fn(z, t)
    with pytest.raises(TypeError, match=r"target must be real .* \(x.real, x.abs\(\)\)"):
        fn(t, t.cfloat())
