"""Correctness anchors: lmfit's concatenation recipe, and NIST certified results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.fit.helpers import INIT, gauss, peaks
from tying.fit import Dataset, FitWarning, GlobalFit

# NIST StRD nonlinear regression, Misra1a (lower difficulty): y = b1 (1 - exp(-b2 x))
MISRA1A_X = np.array(
    [
        77.6,
        114.9,
        141.1,
        190.8,
        239.9,
        289.0,
        332.8,
        378.4,
        434.8,
        477.3,
        536.8,
        593.1,
        689.1,
        760.0,
    ]
)
MISRA1A_Y = np.array(
    [
        10.07,
        14.73,
        17.94,
        23.93,
        29.61,
        35.18,
        40.02,
        44.82,
        50.76,
        55.05,
        61.01,
        66.40,
        75.47,
        81.78,
    ]
)
CERTIFIED = {"b1": (2.3894212918e02, 2.7070075241e00), "b2": (5.5015643181e-04, 7.2668688436e-06)}
CERTIFIED_RSS = 1.2455138894e-01


def misra1a(x, b1, b2):
    return b1 * (1 - torch.exp(-b2 * x))


@pytest.mark.parametrize("start", [{"b1": 500.0, "b2": 1e-4}, {"b1": 250.0, "b2": 5e-4}])
def test_nist_misra1a_certified_values(start):
    res = GlobalFit(misra1a, [(MISRA1A_X, MISRA1A_Y)], shared=["b1", "b2"], init=start).run()
    assert res.success, res.message
    assert res.chi2 == pytest.approx(CERTIFIED_RSS, rel=1e-9)
    for name, (value, sd) in CERTIFIED.items():
        assert res.values[name] == pytest.approx(value, rel=1e-8)
        assert res.stderr[name] == pytest.approx(sd, rel=1e-7)  # NIST scales by s² like lmfit


def test_nist_misra1a_repeated_as_a_global_fit():
    # three copies with b2 shared and b1 local: every copy recovers the certified b1, and the
    # shared b2's error shrinks as three data sets constrain it (nfree = 42 - 4)
    k = 3
    res = GlobalFit(
        misra1a,
        [(MISRA1A_X, MISRA1A_Y)] * k,
        shared=["b2"],
        local=["b1"],
        init={"b1": 250.0, "b2": 5e-4},
    ).run()
    np.testing.assert_allclose(res.values["b1"], CERTIFIED["b1"][0], rtol=1e-8)
    assert res.values["b2"] == pytest.approx(CERTIFIED["b2"][0], rel=1e-8)
    assert res.chi2 == pytest.approx(k * CERTIFIED_RSS, rel=1e-9)
    assert res.stderr["b2"] < CERTIFIED["b2"][1]


def lmfit_concatenated(datasets, method):
    """lmfit's documented multi-data-set recipe: one parameter set, ties by expression."""
    lmfit = pytest.importorskip("lmfit", reason="lmfit is the anchor: pip install 'tying[bench]'")
    params = lmfit.Parameters()
    for i in range(len(datasets)):
        params.add(f"center_{i}", value=INIT["center"])
        params.add(f"width_{i}", value=INIT["width"])
        params.add(f"amplitude_{i}", value=INIT["amplitude"])
        if i:
            params[f"center_{i}"].expr = "center_0"
            params[f"width_{i}"].expr = "width_0"

    def objective(p):
        return np.concatenate(
            [
                (
                    gauss(
                        x, p[f"center_{i}"].value, p[f"width_{i}"].value, p[f"amplitude_{i}"].value
                    )
                    - y
                )
                / s
                for i, (x, y, s) in enumerate(datasets)
            ]
        )

    kws = (
        {"ftol": 1e-12, "xtol": 1e-12}
        if method == "leastsq"
        else {"ftol": 1e-12, "xtol": 1e-12, "gtol": 1e-12}
    )
    return lmfit.minimize(objective, params, method=method, **kws)


@pytest.mark.parametrize("method", ["least_squares", "leastsq"])
def test_same_chi2_values_and_errors_as_lmfit(method):
    datasets, _ = peaks(k=4, n=40, seed=11, noise=0.05, lengths=[40, 31, 40, 25])
    ours = GlobalFit(
        gauss, datasets, shared=["center", "width"], local=["amplitude"], init=INIT
    ).run()
    ref = lmfit_concatenated(datasets, method)
    assert ref.success
    assert ours.chi2 == pytest.approx(ref.chisqr, rel=1e-9)
    assert ours.redchi == pytest.approx(ref.redchi, rel=1e-9)
    assert (ours.ndata, ours.nvarys) == (ref.ndata, ref.nvarys)
    assert ours.aic == pytest.approx(ref.aic, rel=1e-9)
    p = ref.params
    for name in ("center", "width"):
        assert ours.values[name] == pytest.approx(p[f"{name}_0"].value, rel=1e-6)
        assert ours.stderr[name] == pytest.approx(p[f"{name}_0"].stderr, rel=1e-3)
    for i in range(4):
        assert ours.values["amplitude"][i] == pytest.approx(p[f"amplitude_{i}"].value, rel=1e-6)
        assert ours.stderr["amplitude"][i] == pytest.approx(p[f"amplitude_{i}"].stderr, rel=1e-3)
    # the shared block of our covariance is lmfit's, read from the full matrix
    names = ref.var_names
    i_c, i_w = names.index("center_0"), names.index("width_0")
    np.testing.assert_allclose(
        ours.covariance, ref.covar[np.ix_([i_c, i_w], [i_c, i_w])], rtol=2e-3, atol=1e-9
    )


def test_a_second_independent_variable_as_a_column_of_x_matches_lmfit_independent_vars():
    # lmfit's Model(f, independent_vars=["x", "t"]) ported as fixed={"t": t} (one value per
    # point) is refused with the way to write it: t as a column of x (stop 33 review)
    lmfit = pytest.importorskip("lmfit", reason="lmfit is the anchor: pip install 'tying[bench]'")
    rng = np.random.default_rng(3)
    x, t = np.linspace(0, 2, 50), rng.uniform(0, 1, 50)
    y = 2.0 * np.exp(-0.8 * x) + 0.5 * t + rng.normal(0, 0.02, 50)

    def f(x, t, a, k, b):
        return a * np.exp(-k * x) + b * t

    fit = GlobalFit(f, [(x, y)], shared=["a", "k", "b"], fixed={"t": t},
                    init={"a": 1.0, "k": 1.0, "b": 0.0})  # fmt: skip
    with pytest.raises(ValueError, match=r"fixed\['t'\] must be a number or 1 values .* got "
                                         r"shape \(50,\); .* x = np.column_stack\(\[x, t\]\)"):  # fmt: skip
        fit.run()

    def g(xt, a, k, b):
        return a * np.exp(-k * xt[:, 0]) + b * xt[:, 1]

    ours = GlobalFit(g, [(np.column_stack([x, t]), y)], shared=["a", "k", "b"],
                     init={"a": 1.0, "k": 1.0, "b": 0.0}).run()  # fmt: skip
    ref = lmfit.Model(f, independent_vars=["x", "t"]).fit(y, x=x, t=t, a=1.0, k=1.0, b=0.0)
    assert ours.success and ref.success
    assert ours.chi2 == pytest.approx(ref.chisqr, rel=1e-9)
    for name in ("a", "k", "b"):
        p = ref.params[name]
        assert abs(ours.values[name] - p.value) < 1e-3 * p.stderr
        assert ours.stderr[name] == pytest.approx(p.stderr, rel=1e-3)


def _poisson_peaks(seed, k=3):
    """k Poisson-count Gaussian peaks on a background, their sigma = sqrt(counts)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-5, 5, 200)
    out = []
    for i in range(k):
        y = rng.poisson(gauss(x, 0.3, 1.0, 500.0 * (1 + i)) + 2.0 + 18.0 * (i % 2)).astype(float)
        out.append((x, y, np.sqrt(np.maximum(y, 1.0))))
    return out


def _peak_bg(x, center, width, amplitude, bg):
    return gauss(x, center, width, amplitude) + bg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lmfit_weights_in_a_tuple_read_as_sigma_are_flagged(seed):
    # stop 35: a tuple's third item is sigma (scipy curve_fit's convention); lmfit's
    # weights are 1/sigma. (x, y, 1/sigma) fitted with success=True, no word, the
    # standard errors 1.3-3x too large: now a FitWarning and the message say how
    # the residuals scale with sigma and how to pass weights
    data = _poisson_peaks(seed)
    kw = dict(shared=["center", "width"], local=["amplitude", "bg"],
              init={"center": 0.0, "width": 1.5, "amplitude": 300.0, "bg": 5.0})  # fmt: skip
    right = GlobalFit(_peak_bg, data, **kw).run()  # no warning: warnings are errors here
    assert "grow as sigma" not in right.message
    weights = [(x, y, 1 / s) for x, y, s in data]
    with pytest.warns(FitWarning, match=r"the weighted residuals grow as sigma\^-[12]\.\d\d "
                                        r"within the data sets .* Dataset\(x, y, sigma=1 / w\) "
                                        r"or \{'x': x, 'y': y, 'sigma': 1 / w\}"):  # fmt: skip
        wrong = GlobalFit(_peak_bg, weights, **kw).run()
    assert "lmfit's weights = 1/sigma" in wrong.message
    fixed = GlobalFit(_peak_bg, [Dataset(x, y, sigma=1 / w) for x, y, w in weights], **kw).run()
    assert fixed.values["center"] == right.values["center"]


def test_sigma_misread_is_quiet_for_a_right_sigma_and_an_exact_fit():
    rng = np.random.default_rng(5)
    x = np.linspace(0, 5, 60)
    mu = 100 * np.exp(-0.8 * x) + 1
    sigma = 0.05 * mu  # relative errors: sigma spans 0.05 .. 5
    decay = lambda x, a, k, c: a * np.exp(-k * x) + c  # noqa: E731
    init = {"a": 50.0, "k": 1.0, "c": 0.0}
    for y in (mu + rng.normal(0, sigma), mu):  # noisy, and exact (rounding-level residuals)
        res = GlobalFit(decay, [(x, y, sigma)], shared=["a", "k", "c"], init=init).run()
        assert res.success and "grow as sigma" not in res.message


def _decay(x, a, k, c):
    return a * np.exp(-k * x) + c


def _decay_data(seed: int, n: int = 50, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 5, n)
    return x, _decay(x, 3.0, 0.7, 0.5) + rng.normal(0, noise, n)


@pytest.mark.parametrize(
    ("sigma", "scatter"),
    [(10.0, r"0\.0088\d x sigma"), (0.01, r"8\.8\d x sigma"), (100.0, r"0\.00088\d x sigma")],
    ids=["a weight of 10", "the variance", "the inverse variance"],
)
def test_a_scalar_sigma_contradicted_by_chi2_is_flagged_when_scale_covar_is_false(sigma, scatter):
    # stop 36: with scale_covar=False the standard errors trust sigma. A scalar in sigma's
    # place that is really a weight (1/sigma), a variance or its inverse moves no value
    # and no check of the residuals' shape, only chi2: (x, y, 10.0) for a noise of 0.1
    # read standard errors 100x too large, success=True, no word
    x, y = _decay_data(7)
    init = {"a": 1.0, "k": 1.0, "c": 0.0}
    right = GlobalFit(_decay, [(x, y, 0.1)], shared=["a", "k", "c"], init=init,
                      scale_covar=False).run()  # fmt: skip
    assert "takes sigma as the noise" not in right.message
    fit = GlobalFit(_decay, [(x, y, sigma)], shared=["a", "k", "c"], init=init, scale_covar=False)
    with pytest.warns(FitWarning, match=r"scale_covar=False takes sigma as the noise, but chi2 = "
                                        rf".* on 47 degrees of freedom .* scatter as {scatter}"):  # fmt: skip
        wrong = fit.run()
    assert wrong.success and "not lmfit's weights 1/sigma or a variance" in wrong.message
    # the errors it names: sigma / 0.1 times the right ones, the values the same
    ratio = wrong.stderr["k"] / right.stderr["k"]
    assert ratio == pytest.approx(sigma / 0.1, rel=1e-6)
    assert wrong.values["k"] == pytest.approx(right.values["k"], rel=1e-8)
    fit.scale_covar = True  # the fix it names: the errors of the right sigma
    assert fit.run().stderr["k"] == pytest.approx(right.stderr["k"] * np.sqrt(right.redchi))


def test_a_right_sigma_with_scale_covar_false_is_not_flagged():
    # the chi2 test's tail is 1e-6: 200 fits of 4 to 400 points with the right sigma
    init = {"a": 1.0, "k": 1.0, "c": 0.0}
    for seed in range(200):
        n = int(np.random.default_rng(seed).integers(4, 400))
        x, y = _decay_data(seed, n)
        res = GlobalFit(_decay, [(x, y, 0.1)], shared=["a", "k", "c"], init=init,
                        scale_covar=False).run()  # fmt: skip
        assert "takes sigma as the noise" not in res.message, (seed, res.redchi)
    # an exact fit: residuals at rounding level are not noise
    x = np.linspace(0, 5, 50)
    exact = GlobalFit(_decay, [(x, _decay(x, 3.0, 0.7, 0.5), 0.1)], shared=["a", "k", "c"],
                      init=init, scale_covar=False).run()  # fmt: skip
    assert "takes sigma as the noise" not in exact.message


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lmfit_weights_as_one_sigma_per_data_set_are_flagged(seed):
    # stop 36: one scalar weight per data set (lmfit's 1/sigma) in sigma's place passes the
    # within-data-set test (sigma does not vary there) but weights the data sets wrongly:
    # the shared rate moved by up to 6.6 standard errors, success=True, no word
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 5, 60)
    sig = [0.02, 0.05, 0.1, 0.2, 0.4]
    data = [(x, _decay(x, 2.0 + i, 0.7, 0.3) + rng.normal(0, s, 60), s) for i, s in enumerate(sig)]
    kw = dict(shared=["k"], local=["a", "c"], init={"a": 1.0, "k": 1.0, "c": 0.0})
    right = GlobalFit(_decay, data, **kw).run()  # no warning: warnings are errors here
    assert "grow as sigma" not in right.message
    weights = [(x, y, 1 / s) for x, y, s in data]
    with pytest.warns(FitWarning, match=r"the weighted residuals grow as sigma\^-[12]\.\d\d "
                                        r"between the data sets .* sigma=1 / w"):  # fmt: skip
        wrong = GlobalFit(_decay, weights, **kw).run()
    assert "lmfit's weights = 1/sigma" in wrong.message
    fixed = GlobalFit(_decay, [Dataset(x, y, sigma=1 / w) for x, y, w in weights], **kw).run()
    assert fixed.values["k"] == pytest.approx(right.values["k"], rel=1e-9)


def test_one_right_sigma_per_data_set_is_not_flagged():
    kw = dict(shared=["k"], local=["a", "c"], init={"a": 1.0, "k": 1.0, "c": 0.0})
    for seed in range(60):  # 3 to 11 data sets of 4 to 80 points, sigma 0.01 .. 0.5
        rng = np.random.default_rng(seed)
        k = int(rng.integers(3, 12))
        sig = np.exp(rng.uniform(np.log(0.01), np.log(0.5), k))
        data = []
        for i, n in enumerate(rng.integers(4, 80, k)):
            x = np.sort(rng.uniform(0, 5, n))
            data.append((x, _decay(x, 2.0 + i % 3, 0.7, 0.3) + rng.normal(0, sig[i], n), sig[i]))
        assert "grow as sigma" not in GlobalFit(_decay, data, **kw).run().message, seed
