"""Error texts that lacked the rule or the fix, and a bound ghost clipping took unchecked (stop 38).

``GhostClipping.clip(..., max_grad_norm=inf)`` clipped nothing and ``True`` was taken for 1,
with no error, while ``private_grad`` refused both; its message ("must be > 0") said neither
the rule nor what C is. A detector's non-finite value named no fix, and the padding-row
refusal of ``grad_sample_module`` read "gets gradients autograd gives it none of".
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.train.models import ce, mlp
from tying.train import CUSUM, GhostClipping, PageHinkley, grad_sample_module, private_grad


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (5,), generator=g
    )


@pytest.mark.parametrize(
    "bad, err, match",
    [
        (
            math.inf,
            ValueError,
            r"max_grad_norm must be a finite number > 0 \(the per-example clipping bound C\), got inf",
        ),
        (math.nan, ValueError, r"max_grad_norm must be a finite number > 0 .*got nan"),
        (0.0, ValueError, r"max_grad_norm must be a finite number > 0 .*got 0\.0"),
        (True, TypeError, r"max_grad_norm must be a real number, got bool True"),
        ([1.0, 2.0], TypeError, r"per-layer bounds .* are not supported"),
    ],
)
def test_ghost_clip_refuses_a_bound_private_grad_refuses(bad, err, match):
    x, y = _batch()
    with pytest.raises(err, match=match):
        GhostClipping(mlp()).clip(ce, x, y, bad)
    with pytest.raises(err, match=match):  # the same rule and words as private_grad
        private_grad(mlp(), ce, x, y, max_grad_norm=bad, noise_multiplier=0.0, mode="ghost")


@pytest.mark.parametrize("make", [PageHinkley, CUSUM])
def test_a_detectors_non_finite_value_is_refused_naming_the_fix_and_not_added(make):
    det = make()
    for v in [1.0, 1.1, 0.9]:
        det.update(v)
    before = dict(vars(det))
    with pytest.raises(
        ValueError,
        match=rf"{make.__name__}\.update: got a non-finite value nan; it would make the statistic "
        r"NaN \(no alarm ever again\), so it was not added: pass finite losses",
    ):
        det.update(float("nan"))
    assert vars(det) == before


def test_the_padding_idx_refusal_reads_and_names_the_fix():
    net = torch.nn.Sequential(torch.nn.Embedding(7, 4, padding_idx=0), torch.nn.Linear(4, 7))
    with pytest.raises(
        ValueError,
        match=r"ignores padding_idx \(it gives the padding row per-sample gradients, where "
        r"autograd gives it none\); use tying\.train\.DPSGD or per_example_grads .*or set "
        r"padding_idx=None",
    ):
        grad_sample_module(net, loss_reduction="sum")


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    C=st.one_of(st.floats(1e-3, 1e3), st.sampled_from([math.inf, -math.inf, math.nan, 0.0, -1.0])),
    seed=st.integers(0, 1000),
)
def test_property_ghost_clip_rows_equal_a_float64_loop_clipped_at_any_finite_bound(C, seed):
    """A bound that is not finite and > 0 is refused; any other clips each example's whole
    gradient to C, as a per-example loop does."""
    torch.manual_seed(seed)
    model = mlp(seed)
    x, y = _batch()
    if not (math.isfinite(C) and C > 0):
        with pytest.raises(ValueError, match=r"max_grad_norm must be a finite number > 0"):
            GhostClipping(model).clip(ce, x, y, C)
        return
    res = GhostClipping(model).clip(ce, x, y, C)
    rows = []
    for b in range(len(y)):
        model.zero_grad()
        ce(model(x[b : b + 1]), y[b : b + 1]).sum().backward()
        g = {n: p.grad.clone() for n, p in model.named_parameters()}
        norm = torch.cat([v.reshape(-1) for v in g.values()]).norm()
        factor = min(1.0, C / (float(norm) + 1e-6))  # Opacus' rule, as clip_factors
        rows.append({n: v * factor for n, v in g.items()})
    for n in rows[0]:
        torch.testing.assert_close(res.grads[n], sum(r[n] for r in rows), rtol=1e-9, atol=1e-12)


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.b = torch.nn.Linear(4, 2)

    def forward(self, u, v):
        return self.a(u) + self.b(v)


def test_ghost_names_the_layer_whose_input_is_not_batch_first():
    u, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    with pytest.raises(
        ValueError,
        match=r"ghost clipping: b \(Linear\) output has shape \(1, 2\) but the batch has 5 "
        r"examples; every input must be batch-first .* with the same B as y",
    ):
        GhostClipping(_TwoInputs()).norms(ce, (u, torch.randn(1, 4)), y)
