"""Complex data, complex-typed models and lmfit ``Model`` objects as model_fn (stop 51)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from tying.fit import GlobalFit

lmfit = pytest.importorskip("lmfit", reason="lmfit is the anchor: pip install 'tying[bench]'")


def impedance(w, r, c):
    return r / (1 + 1j * w * r * c)


@pytest.fixture(scope="module")
def complex_data():
    rng = np.random.default_rng(0)
    w = np.logspace(0, 4, 30)
    z = impedance(w, 100.0, 1e-5) + rng.normal(0, 0.5, 30) + 1j * rng.normal(0, 0.5, 30)
    return w, z


def test_complex_data_are_refused_with_the_recipe_that_matches_lmfit(complex_data):
    # before: "convert it yourself (e.g. y.real ...)", which fits half the data; lmfit
    # fits a complex residual as its real and imaginary parts
    w, z = complex_data
    init = {"r": 50.0, "c": 2e-5}
    with pytest.raises(ValueError, match=r"y is complex .* give its real and imaginary parts "
                       r"as two data sets sharing the parameters, \(x, y.real\) and \(x, "
                       r"y.imag\) with fixed=\{'part': \[0, 1\]\}"):  # fmt: skip
        GlobalFit(impedance, [(w, z)], shared=["r", "c"], init=init).run()

    def parts(w, r, c, part):  # the recipe of the message
        z = impedance(w, r, c)
        return np.where(part == 0, z.real, z.imag)

    res = GlobalFit(parts, [(w, z.real), (w, z.imag)], shared=["r", "c"],
                    fixed={"part": [0, 1]}, init=init).run()  # fmt: skip
    out = lmfit.minimize(
        lambda p: impedance(w, p["r"].value, p["c"].value) - z,
        lmfit.create_params(**init),
        ftol=1e-15,
        xtol=1e-15,
    )
    assert res.success and res.chi2 == pytest.approx(out.chisqr, rel=1e-10)
    for n in ("r", "c"):
        assert abs(res.values[n] - out.params[n].value) < 1e-5 * out.params[n].stderr
        assert res.stderr[n] == pytest.approx(out.params[n].stderr, rel=1e-4)


def test_a_complex_model_is_told_how_to_fit_complex_data(complex_data):
    w, z = complex_data
    with pytest.raises(ValueError, match=r"non-zero imaginary part .* for complex data, fit "
                       r"z.real and z.imag as two data sets"):  # fmt: skip
        GlobalFit(impedance, [(w, z.real)], shared=["r", "c"], init={"r": 50.0, "c": 2e-5}).run()


def test_a_complex_typed_real_model_warns_nothing_about_dropped_imaginary_parts(complex_data):
    # a model of complex dtype whose imaginary part is 0 (not analytic: no complex step)
    # fitted right, but its stacked finite differences cast with NumPy's ComplexWarning,
    # "Casting complex values to real discards the imaginary part", shown twice
    w, z = complex_data

    def real_part(w, r, c):
        return impedance(w, r, c).real + 0j

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        res = GlobalFit(real_part, [(w, z.real)], shared=["r", "c"],
                        init={"r": 50.0, "c": 2e-5}).run()  # fmt: skip
    assert res.success and not record, [str(x.message) for x in record]
    ref = GlobalFit(lambda w, r, c: impedance(w, r, c).real, [(w, z.real)], shared=["r", "c"],
                    init={"r": 50.0, "c": 2e-5}).run()  # fmt: skip
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-8)


def test_an_lmfit_model_is_refused_with_a_model_fn_that_matches_lmfit():
    # before: "model_fn must be callable, got CompositeModel", and its .eval received x as
    # its params: "'numpy.ndarray' object has no attribute 'items'"
    rng = np.random.default_rng(1)
    x = np.linspace(-5, 5, 101)
    y = 2 * np.exp(-0.5 * ((x - 0.3) / 0.7) ** 2) / (0.7 * np.sqrt(2 * np.pi)) + 0.1 * x + 0.5
    y = y + rng.normal(0, 0.02, x.size)
    model = lmfit.models.GaussianModel() + lmfit.models.LinearModel()
    names = ["amplitude", "center", "sigma", "slope", "intercept"]
    init = dict(amplitude=1.0, center=0.0, sigma=1.0, slope=0.0, intercept=0.0)
    for given in (model, model.eval):
        with pytest.raises(TypeError, match=r"model_fn is an lmfit CompositeModel") as err:
            GlobalFit(given, [(x, y)], shared=names, init=init).run()
    advice = re.search(r"pass model_fn=(lambda .*)$", str(err.value)).group(1)
    res = GlobalFit(eval(advice, {"model": model}), [(x, y)], shared=names, init=init).run()
    out = model.fit(y, model.make_params(**init), x=x)
    assert res.success and res.chi2 <= out.chisqr * (1 + 1e-9)
    for n in names:
        assert abs(res.values[n] - out.params[n].value) < 1e-4 * out.params[n].stderr
        assert res.stderr[n] == pytest.approx(out.params[n].stderr, rel=1e-4)
