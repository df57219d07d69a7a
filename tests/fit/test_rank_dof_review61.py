"""Beside a null direction of J, every use of the degrees of freedom reads ``n - rank J``.

Stop 61 scaled the estimable standard errors beside a null direction by ``χ²/(n - rank J)``,
as the fit holding one redundant parameter does; two uses kept ``nfree = n - p`` (review 61):

- with ``nfree = 0`` (4 points, 4 parameters, one null direction: ``n - rank = 1``) the
  estimable errors came back unscaled, as if σ were 1: ``wid`` 0.919 where the held fit
  (and lmfit holding ``cen``) gives 0.0597, success=True, no word;
- the profile F-test and the band's t quantile read ``nfree``: ``conf_interval`` of ``wid``
  2.0 % wider than the held fit's and lmfit's (0.032176 for 0.031552 at 1σ), the 3σ band
  0.39 % wider, beside a stderr that was the held fit's.
"""

import warnings

import numpy as np
import pytest

from tying.fit import GlobalFit


def _model(x, amp, cen, wid, off):
    return amp * np.exp(-(x - cen) / wid) + off


def _fits(x, y, solver="lm"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = GlobalFit(
            _model,
            [(x, y)],
            shared=["amp", "cen", "wid", "off"],
            init={"amp": 1, "cen": 0.3, "wid": 1, "off": 0},
            solver=solver,
        ).run()
        held = GlobalFit(
            _model,
            [(x, y)],
            shared=["amp", "wid", "off"],
            fixed={"cen": float(res.values["cen"])},
            init={"amp": float(res.values["amp"]), "wid": 1, "off": 0},
            solver=solver,
        ).run()
    return res, held


@pytest.mark.parametrize("solver", ["lm", "trf"])
def test_no_free_point_but_one_beside_the_null_direction_scales_as_the_held_fit(solver):
    x = np.array([0.0, 1.0, 2.0, 3.0])
    y = 2 * np.exp(-(x - 0.5) / 0.8) + 0.3 + np.array([0.03, -0.02, 0.04, -0.05])
    res, held = _fits(x, y, solver)
    assert res.nfree == 0 and held.nfree == 1  # lmfit's n - nvarys, unchanged
    for name in ("wid", "off"):  # were 0.919 and 1.18 (unscaled), 15x the held fit's
        assert res.stderr[name] == pytest.approx(held.stderr[name], rel=1e-6)


def test_profile_and_band_beside_a_null_direction_are_the_held_fit_s():
    x = np.linspace(0, 3, 30)
    checked = 0
    for seed in range(4):  # which route rounding takes varies; the estimable one keeps covar
        rng = np.random.default_rng(seed)
        y = 2 * np.exp(-(x - 0.5) / 0.8) + 0.3 + rng.normal(0, 0.05, 30)
        res, held = _fits(x, y)
        if not res.errorbars:
            continue
        checked += 1
        assert "scaled by chi2 / (ndata - rank) = chi2 / 27" in res.message
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = res.conf_interval(["wid"], sigmas=(1, 3))["wid"]
            theirs = held.conf_interval(["wid"], sigmas=(1, 3))["wid"]
        # were 2.0 % (1σ) and 2.3 % (3σ) wider
        np.testing.assert_allclose(ours.lower, theirs.lower, rtol=1e-6)
        np.testing.assert_allclose(ours.upper, theirs.upper, rtol=1e-6)
        xn = np.linspace(0, 3, 5)
        np.testing.assert_allclose(  # was 0.39 % wider (t with nfree = 26, not 27)
            res.eval_uncertainty(0, xn, sigma=3), held.eval_uncertainty(0, xn, sigma=3), rtol=1e-6
        )
    if not checked:  # rounding (memory layout) picks the route per process: pre-existing
        pytest.skip("every fit took the singular route: no covariance, no profile")


def test_profile_beside_a_null_direction_is_lmfit_s_holding_one():
    lmfit = pytest.importorskip("lmfit")
    x = np.linspace(0, 3, 30)
    rng = np.random.default_rng(0)
    y = 2 * np.exp(-(x - 0.5) / 0.8) + 0.3 + rng.normal(0, 0.05, 30)
    res, _ = _fits(x, y)
    if not res.errorbars:
        pytest.skip("rounding took the singular route: no covariance, no profile")
    m = lmfit.Model(_model)
    p = m.make_params(amp=float(res.values["amp"]), cen=float(res.values["cen"]), wid=1, off=0)
    p["cen"].vary = False
    out = m.fit(y, p, x=x)
    ci = lmfit.conf_interval(out, out, p_names=["wid"], sigmas=[1])["wid"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = res.conf_interval(["wid"], sigmas=(1,))["wid"]
    np.testing.assert_allclose([ours.lower[0], ours.upper[0]], [ci[0][1], ci[-1][1]], rtol=2e-5)


def test_omit_advice_keeps_one_sigma_for_every_point():
    """Review 61: the nan_policy='omit' advice for ``(x, y, 0.1)`` said pass
    ``(x[keep], y[keep])``, dropping sigma: followed, chi2 100x and, under
    ``scale_covar=False``, the errors 10x what the data set with its sigma gives."""

    def line(x, a, b):
        return a * x + b

    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 10)
    y = 2 * x + 1 + rng.normal(0, 0.1, 10)
    y[3] = np.nan
    sigma = 0.1
    with pytest.raises(ValueError, match="y has 1 NaN") as err:
        GlobalFit(line, [(x, y, sigma)], shared=["a", "b"], init={"a": 1, "b": 0}).run()
    code = str(err.value).split("nan_policy='omit'): ")[1]
    mask, passed = code.split(", then pass ")
    keep = eval(mask.removeprefix("keep = "))  # the advice, followed as written
    data = eval(passed, {"np": np, "x": x, "y": y, "sigma": sigma, "keep": keep})
    followed = GlobalFit(
        line, [data], shared=["a", "b"], init={"a": 1, "b": 0}, scale_covar=False
    ).run()
    ok = np.isfinite(y)
    right = GlobalFit(
        line, [(x[ok], y[ok], sigma)], shared=["a", "b"], init={"a": 1, "b": 0}, scale_covar=False
    ).run()
    assert followed.chi2 == pytest.approx(right.chi2, rel=1e-12)
    assert followed.stderr["a"] == pytest.approx(right.stderr["a"], rel=1e-12)
