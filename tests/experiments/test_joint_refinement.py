from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from tying.experiments import joint_refinement as jr


def test_bragg_positions_and_fcc_reflections():
    # fcc: h, k, l all odd or all even -> 111, 200, 220, 311, 222, 400, ...
    assert jr.HKL_N[:6].tolist() == [3, 4, 8, 11, 12, 16]
    assert jr.MULTIPLICITY[:4].tolist() == [8, 6, 12, 24]
    cfg = jr.Config()
    x = torch.linspace(36.0, 40.0, 4001, dtype=torch.float64)
    truth = {**jr._truth(cfg, cfg.xray), "zero": 0.0}
    with torch.no_grad():
        y = jr.pattern(x, **truth)
    d111 = cfg.a / math.sqrt(3)
    expected = 2 * math.degrees(math.asin(cfg.xray.wavelength / (2 * d111)))  # λ = 2 d sin θ
    assert float(x[torch.argmax(y)]) == pytest.approx(expected, abs=2e-3)


def test_vectorised_pattern_matches_per_pattern_calls():
    cfg = jr.Config()
    x = torch.linspace(30.0, 120.0, 500, dtype=torch.float64)
    one = [jr.pattern(x, **jr._truth(cfg, inst)) for inst in (cfg.xray, cfg.neutron)]
    both = jr.pattern(
        x.expand(2, -1),
        **{
            k: torch.tensor(
                [[jr._truth(cfg, cfg.xray)[k]], [jr._truth(cfg, cfg.neutron)[k]]],
                dtype=torch.float64,
            )
            for k in jr._truth(cfg, cfg.xray)
        },
    )
    torch.testing.assert_close(both, torch.stack(one))


def test_joint_refinement_check_holds_at_quick_size():
    result = jr.joint_refinement("quick", 0)
    m = result.measured
    assert result.passed, m
    assert m["RMS error a joint (mÅ)"] < min(
        m["RMS error a X-ray only (mÅ)"], m["RMS error a neutron only (mÅ)"]
    )
    assert m["joint σ(a) smallest in every seed"] and m["all fits converged"]
    assert m["instrument parameters own in every seed"]
    # the reported errors are honest: the spread of a over seeds matches the stderr
    joint = result.tables[0].rows[0]
    assert joint["refinement"] == "joint" and 0.6 < joint["RMS of (a − true)/σ"] < 1.5
    assert set(result.figures) == {"patterns", "lattice_constant"}
    assert all(isinstance(f, Figure) for f in result.figures.values())
    # the covariance is reported: stderr of a in the covariance table equals the fit's
    cov_rows = {r["parameter"]: r for r in result.tables[2].rows}
    assert np.isclose(cov_rows["a"]["corr a"], 1.0) and "corr zero[neutron]" in cov_rows["a"]


def test_unknown_size_is_rejected():
    with pytest.raises(ValueError, match=r"size must be one of"):
        jr.joint_refinement("huge", 0)


@pytest.mark.slow
def test_joint_refinement_check_holds_at_report_size():
    assert jr.joint_refinement("report", 0).passed


def test_refinement_runs_vectorised_over_both_patterns():
    cfg = jr.Config()
    data = jr.simulate(cfg, np.random.default_rng(0))
    res = jr.refine(cfg, data)
    assert res.vectorized, res.why_not_vectorized
    assert res.backend == "torch" and res.success
