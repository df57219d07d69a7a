"""What a fit with a (nearly) degenerate pair or a singular inverse says (review 60).

* ``a·x + b·(x + 1e-6·x²) + c``: no null direction, errors exact to 1e-5, yet the warning
  said their "standard errors are meaningless"; now "strongly correlated" with the
  correlation and the digits kept.
* ``amp·exp(-(x - cen)/wid) + off`` (amp, cen local) under ``solver="lm"``: rounding sent it
  to the singular route, NaN for every error, ``wid`` and ``off`` included, which ``trf``
  gives; now only the null direction's ``amp``/``cen`` are NaN and named.
* a degree-9 shared polynomial (cond(J) = 1.3e10): "Jacobian is singular ... arbitrary, not
  fitted", every error NaN; lmfit's ``leastsq`` gives them within 0.4 %. Now from the SVD.
"""

import warnings

import numpy as np
import pytest

from tying.fit import FitWarning, GlobalFit

from .test_estimable_band_review60 import _data, _model


def _pair_fit(solver):
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 30)
    y = 2 * x + 1 + rng.normal(0, 0.01, 30)

    def model(x, a, b, c):
        return a * x + b * (x + 1e-6 * x**2) + c

    fit = GlobalFit(model, [(x, y)], shared=["a", "b", "c"], init={"a": 1, "b": 0.5, "c": 0})
    fit.solver = solver
    return fit


@pytest.mark.parametrize("solver", ["lm", "trf"])
def test_a_nearly_degenerate_pair_is_named_strongly_correlated_not_meaningless(solver):
    with pytest.warns(FitWarning, match=r"'a' and 'b' are strongly correlated \(corr = -\(1 - "):
        res = _pair_fit(solver).run()
    assert "meaningless" not in res.message and "fully correlated" not in res.message
    digits = int(res.message.split("reliable to about ")[1].split()[0])
    assert 6 <= digits <= 12
    c = res.covariance
    corr = c[0, 1] / np.sqrt(c[0, 0] * c[1, 1])
    shown = float(res.message.split("corr = -(1 - ")[1].split(")")[0])
    assert shown == pytest.approx(1 + corr, rel=0.05)


# the exactly degenerate amp/cen problem of the band review, shared
_exp_data, _exp = _data, _model


def _exp_run(solver):
    init = {"amp": 2, "cen": 0.0, "wid": 0.5, "off": 0}
    fit = GlobalFit(_exp, _exp_data(), shared=["wid"], local=["amp", "cen", "off"], init=init)
    fit.solver = solver
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        res = fit.run()
    return res, [str(w.message) for w in record]


def test_an_exactly_degenerate_pair_gives_the_estimable_errors_on_either_route():
    lm, lm_warned = _exp_run("lm")
    trf, trf_warned = _exp_run("trf")
    # held cen (any value of the redundant one): amp, wid, off; scaled to the same nfree
    held = GlobalFit(
        _exp,
        _exp_data(),
        shared=["wid"],
        local=["amp", "off"],
        fixed={"cen": 0.0},
        init={"amp": 2, "wid": 0.5, "off": 0},
        scale_covar=False,
    ).run()
    # chi2 / (n - rank J): the nfree of the fit holding cen, one null direction per data
    # set (stop 61; chi2 / nfree, 1.9 % off the held fit, before)
    scale = np.sqrt(lm.chi2 / (lm.nfree + len(_exp_data())))
    for res in (lm, trf):
        assert res.stderr["wid"] == pytest.approx(held.stderr["wid"] * scale, rel=1e-6)
        np.testing.assert_allclose(res.stderr["off"], held.stderr["off"] * scale, rtol=1e-6)
    # the null direction's parameters: NaN (lm) or named meaningless (trf), never wid/off
    if np.isnan(lm.stderr["amp"]).any():
        assert np.isnan(lm.stderr["cen"]).all() and not lm.errorbars
        assert any("standard errors of 'amp[dataset 0]', 'cen[dataset 0]'" in w for w in lm_warned)
        said = lm.message.split("could not be estimated")[0]
        assert "'wid'" not in said and "off[" not in said
    for res, warned in ((lm, lm_warned), (trf, trf_warned)):
        assert "'wid'" not in " ".join(warned) and "off[" not in " ".join(warned)
        if "fully correlated" in res.message:
            assert "their standard errors are meaningless" in res.message


def test_an_ill_conditioned_polynomial_is_fitted_with_errors_not_refused_as_singular():
    rng = np.random.default_rng(3)
    deg, names = 9, [f"c{i}" for i in range(1, 10)]
    data, rows = [], []
    for k, n in enumerate([20, 35, 27]):
        x = np.sort(rng.uniform(1, 2, n))
        s = 0.01 * (1 + 3 * rng.random(n))
        data.append((x, np.sin(x) + 0.3 * k + rng.normal(0, 1, n) * s, s))
        design = np.zeros((n, deg + 3))
        design[:, :deg] = np.column_stack([x ** (i + 1) for i in range(deg)])
        design[:, deg + k] = 1
        rows.append(design / s[:, None])
    design = np.vstack(rows)
    d = np.linalg.norm(design, axis=0)
    r_inv = np.linalg.inv(np.linalg.qr(design / d, mode="r"))
    exact = np.sqrt(np.diag(r_inv @ r_inv.T)) / d  # a linear model: J does not move

    def model(x, off, c1, c2, c3, c4, c5, c6, c7, c8, c9):
        return off + sum(
            c * x ** (i + 1) for i, c in enumerate((c1, c2, c3, c4, c5, c6, c7, c8, c9))
        )

    with pytest.warns(FitWarning, match="read from the SVD of the Jacobian"):
        res = GlobalFit(
            model,
            data,
            shared=names,
            local=["off"],
            init=dict.fromkeys([*names, "off"], 0.0),
            scale_covar=False,
        ).run()
    assert "singular" not in res.message and "arbitrary" not in res.message
    assert "would lose all of its 16 digits" in res.message  # was "19 of its 16 digits"
    ours = [res.stderr[c] for c in names] + [res.stderrs(k)["off"] for k in range(3)]
    np.testing.assert_allclose(ours, exact, rtol=1e-5)
