from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fit.helpers import INIT, gauss, gauss_torch, peaks
from tying.fit import FitWarning, GlobalFit
from tying.fit.datasets import stack
from tying.fit.model import ModelError, ModelEvaluator
from tying.fit.roles import ParameterMap


def evaluator(model, datasets, **kw):
    data = stack(datasets)
    pm = ParameterMap(
        ["center", "width", "amplitude"],
        data.metadata,
        shared=["center", "width"],
        local=["amplitude"],
        init=INIT,
    )
    return ModelEvaluator(model, data, pm, **kw), pm


def test_backend_and_vectorisation_are_detected():
    datasets, _ = peaks(k=4, n=30)
    ev, _ = evaluator(gauss, datasets)
    assert (ev.backend, ev.vectorized) == ("numpy", True)
    ev, _ = evaluator(gauss_torch, datasets)
    assert (ev.backend, ev.vectorized) == ("torch", True)


def test_torch_and_finite_difference_jacobians_agree():
    datasets, _ = peaks(k=3, n=25, lengths=[25, 20, 17])
    ev_np, pm = evaluator(gauss, datasets)
    ev_t, _ = evaluator(gauss_torch, datasets)
    theta = pm.x0 + np.linspace(0.1, 0.5, pm.n_physical)
    j_np, j_t = ev_np.jacobian(theta), ev_t.jacobian(theta)
    mask = ev_np.data.mask
    assert j_np.shape == (3, 25, 3)
    np.testing.assert_allclose(j_np[mask], j_t[mask], rtol=1e-7, atol=1e-9)
    # exact derivative of amplitude: the unit-amplitude peak
    vals = pm.logical(theta)
    x = ev_t.data.xs[2]
    expected = gauss(x, vals["center"][2], vals["width"][2], 1.0)
    np.testing.assert_allclose(j_t[2, :17, 2], expected, rtol=1e-12)


def test_loop_and_vectorized_paths_agree():
    datasets, _ = peaks(k=3, n=20, lengths=[20, 15, 9])
    for model in (gauss, gauss_torch):
        fast, pm = evaluator(model, datasets)
        slow, _ = evaluator(model, datasets, vectorized=False)
        assert fast.vectorized and not slow.vectorized
        theta = pm.x0 + 0.2
        mask = fast.data.mask
        np.testing.assert_allclose(fast.predict(theta)[mask], slow.predict(theta)[mask], rtol=1e-12)
        np.testing.assert_allclose(
            fast.jacobian(theta)[mask], slow.jacobian(theta)[mask], rtol=1e-6, atol=1e-9
        )


def test_model_that_mixes_points_falls_back_to_the_loop():
    # subtracting the mean over x is fine per data set but wrong on padded (K, n) input
    def centred(x, center, width, amplitude):
        y = gauss(x, center, width, amplitude)
        return y - y.mean()

    datasets, _ = peaks(k=3, n=20, lengths=[20, 15, 9])
    ev, _ = evaluator(centred, datasets)
    assert not ev.vectorized
    assert "differ from a call on that data set alone" in ev.why_not_vectorized
    with pytest.raises(ValueError, match=r"vectorized=True, but model_fn cannot be evaluated"):
        evaluator(centred, datasets, vectorized=True)
    res = GlobalFit(
        centred, datasets, shared=["center", "width"], local=["amplitude"], init=INIT
    ).run()
    assert not res.vectorized and "differ from a call" in res.why_not_vectorized


def test_wrong_shape_names_the_data_set():
    def bad(x, center, width, amplitude):
        return gauss(x, center, width, amplitude)[:5]

    datasets, _ = peaks(k=2, n=10)
    with pytest.raises(
        ValueError,
        match=r"model_fn returned shape \(5,\) for dataset 'dataset 0' \(index 0\), expected \(10,\)",
    ):
        evaluator(bad, datasets)


def test_nan_model_at_start_and_failing_model_are_reported():
    datasets, _ = peaks(k=2, n=10)

    def nan_model(x, center, width, amplitude):
        return np.log(x - 10 * center - 100.0 + 0 * width + amplitude)

    with pytest.raises(ValueError, match=r"model_fn returned NaN/inf for dataset 'dataset 0'"):
        evaluator(nan_model, datasets)

    def broken(x, center, width, amplitude):
        raise KeyError("oops")

    with pytest.raises(
        ValueError, match=r"model_fn fails on dataset 'dataset 0'.*NumPy arrays: KeyError"
    ):
        evaluator(broken, datasets)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        evaluator(gauss, datasets, backend="jax")


def test_two_dimensional_x_uses_the_loop():
    rng = np.random.default_rng(0)

    def plane(x, a, b):
        return a * x[:, 0] + b * x[:, 1]

    xs = [rng.normal(size=(8, 2)) for _ in range(3)]
    data = stack([(x, 2 * x[:, 0] - x[:, 1]) for x in xs])
    pm = ParameterMap(["a", "b"], data.metadata, shared=["a"], local=["b"], init={"a": 0, "b": 0})
    for model in (plane, lambda x, a, b: a * x[:, 0] + b * torch.as_tensor(x)[:, 1]):
        ev = ModelEvaluator(model, data, pm)
        assert not ev.vectorized and ev.why_not_vectorized == "some x is not 1-D"
        jac = ev.jacobian(pm.x0)
        np.testing.assert_allclose(jac[1, :, 0], xs[1][:, 0], rtol=1e-8)


# -- finite differences: a relative step (issue 14 A5) ------------------------


def _decay_np(x, a, b):
    return a * np.exp(-b * x)


def _decay_torch(x, a, b):
    return a * torch.exp(-b * x)


def _column_error(j: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Largest error of each Jacobian column relative to that column's largest entry."""
    return np.abs(j - ref).max(axis=0) / np.abs(ref).max(axis=0)


def _decay_evaluator(model, b, x):
    data = stack([(x, np.zeros_like(x))])
    pm = ParameterMap(["a", "b"], data.metadata, shared=["a", "b"], init={"a": 1.5, "b": b})
    return ModelEvaluator(model, data, pm), pm


@pytest.mark.parametrize("b", [2e-6, 2e6, 3.7, -4e-9])
def test_finite_difference_jacobian_is_accurate_at_any_parameter_magnitude(b):
    # x scaled so that b·x is O(1): the model is equally curved in b at every magnitude
    x = np.linspace(0.0, 2.0, 30) / abs(b)
    ev_np, pm = _decay_evaluator(_decay_np, b, x)
    ev_t, _ = _decay_evaluator(_decay_torch, b, x)
    assert (ev_np.backend, ev_t.backend) == ("numpy", "torch")
    j_np, j_t = ev_np.jacobian(pm.x0)[0], ev_t.jacobian(pm.x0)[0]
    assert _column_error(j_np, j_t).max() < 1e-7


def test_finite_difference_step_for_a_parameter_at_zero_uses_its_start_scale():
    from tying.fit.model import fd_step

    assert fd_step(np.array([0.0]), 1e-6)[0] == pytest.approx(6.055e-12, rel=1e-3)
    assert fd_step(np.array([0.0]))[0] == pytest.approx(6.055e-6, rel=1e-3)
    assert fd_step(np.array([-2e-6]))[0] == pytest.approx(6.055e-6 * 2e-6, rel=1e-3)


@settings(max_examples=40, deadline=None)
@given(exponent=st.floats(-9, 9), sign=st.sampled_from([-1.0, 1.0]))
def test_finite_difference_jacobian_matches_autograd_property(exponent, sign):
    b = sign * 10.0**exponent
    x = np.linspace(0.0, 1.5, 12) / abs(b)
    ev_np, pm = _decay_evaluator(_decay_np, b, x)
    ev_t, _ = _decay_evaluator(_decay_torch, b, x)
    j_np, j_t = ev_np.jacobian(pm.x0)[0], ev_t.jacobian(pm.x0)[0]
    assert _column_error(j_np, j_t).max() < 1e-6


@pytest.mark.parametrize("b", [2e-6, 2e6])
def test_numpy_fit_of_a_small_or_large_rate_reaches_the_autograd_answer(b):
    x = np.linspace(0.0, 3.0, 40) / b
    y = 1.1 * np.exp(-b * x) + 0.01 * np.cos(7 * x * b)  # deterministic "noise"
    fits = {}
    for name, model in (("numpy", _decay_np), ("torch", _decay_torch)):
        res = GlobalFit(model, [(x, y)], shared=["a", "b"], init={"a": 1.0, "b": 0.7 * b}).run()
        assert res.success, res.message
        fits[name] = res.values["b"]
    assert fits["numpy"] == pytest.approx(fits["torch"], rel=1e-8)
    assert fits["numpy"] == pytest.approx(b, rel=0.02)


# -- vectorised evaluation must never miss a padded data set (issue 14 A4) ----


def _row_mean_model(x, amplitude):
    # normalises x by its own row mean: a batched call sees the padding of short rows
    return amplitude * x / np.mean(x, axis=-1, keepdims=True)


def test_vectorized_auto_checks_every_distinct_length():
    x = np.linspace(1.0, 10.0, 50)
    lengths = [50] * 20
    lengths[3] = 30  # index 3 is not among the 8 evenly spaced samples
    datasets = [(x[:n], 1.10 * x[:n] / x[:n].mean()) for n in lengths]
    fit = GlobalFit(_row_mean_model, datasets, local=["amplitude"], init={"amplitude": 1.0})
    res = fit.run()
    assert not res.vectorized
    assert "dataset 'dataset 3' (index 3)" in res.why_not_vectorized
    np.testing.assert_allclose(res.values["amplitude"], 1.10, rtol=1e-8)
    assert res.chi2 < 1e-16


def _row_mean_power_model(x, amplitude, power):
    # identical batched and alone while power = 0 (the start); not at the solution
    return amplitude * x / np.mean(x, axis=-1, keepdims=True) ** power


def _row_mean_power_data():
    lengths = [50] * 12
    lengths[5] = 20
    scales = np.linspace(0.5, 3.0, 12)  # different row means make power identifiable
    out = []
    for n, s in zip(lengths, scales):
        x = s * np.linspace(1.0, 10.0, 50)[:n]
        out.append((x, 1.3 * x / x.mean()))
    return out


def _row_mean_power_fit(datasets, **kwargs):
    return GlobalFit(
        _row_mean_power_model,
        datasets,
        shared=["amplitude", "power"],
        init={"amplitude": 1.0, "power": 0.0},
        **kwargs,
    )


def test_vectorized_fit_that_disagrees_with_the_loop_at_the_solution_is_refitted():
    datasets = _row_mean_power_data()
    res = _row_mean_power_fit(datasets).run()
    assert not res.vectorized
    assert "dataset 'dataset 5' (index 5) chi2" in res.why_not_vectorized
    assert "refitted with a loop" in res.why_not_vectorized
    assert res.values["power"] == pytest.approx(1.0, rel=1e-8)
    assert res.values["amplitude"] == pytest.approx(1.3, rel=1e-8)
    # the per-data-set chi2 of the result is the looped model's
    assert max(res.chi2_of(i) for i in range(len(datasets))) < 1e-16


def test_vectorized_true_refuses_a_batched_model_that_disagrees_at_the_solution():
    fit = _row_mean_power_fit(_row_mean_power_data(), vectorized=True)
    with pytest.raises(ValueError, match=r"disagrees with per-data-set calls: .*'dataset 5'"):
        fit.run()


# -- a model that raises mid-fit is named (issue 14 B) -------------------------


def test_model_raising_mid_fit_names_the_dataset_and_the_parameters():
    from tying.fit import ModelError

    def model(x, a, b):
        if np.any(a > 2.0):
            raise ValueError("a out of the tabulated range")
        return a * x + b

    x = np.linspace(0, 1, 10)
    datasets = [
        {"x": x, "y": 1.0 * x, "name": "run-6"},
        {"x": x, "y": 3.0 * x + 1, "name": "run-7"},
    ]
    fit = GlobalFit(model, datasets, local=["a", "b"], init={"a": 1.0, "b": 0.0})
    with pytest.raises(
        ModelError,
        match=r"model_fn raised ValueError: a out of the tabulated range during the fit, on "
        r"dataset 'run-7' \(index 1\), at a=[0-9.e+-]+, b=[0-9.e+-]+; .*bounds=",
    ):
        fit.run()


# -- the stacked finite-difference call (issue 17 part 3) ---------------------


def test_stacked_finite_differences_equal_one_call_per_step():
    datasets, _ = peaks(k=4, n=30, lengths=[30, 25, 30, 12])
    ev, pm = evaluator(gauss, datasets, backend="numpy")
    ev._complex_ok = False  # central differences only
    theta = pm.x0 + np.linspace(0.1, 0.5, pm.n_physical)
    first = ev.jacobian(theta)  # checked against the per-step version once
    assert ev._stacked_ok is True
    ev._stacked_ok = False  # force the per-step version
    np.testing.assert_allclose(ev.jacobian(theta), first, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("misbehaves", ["raises", "differs"])
def test_model_that_cannot_take_stacked_copies_falls_back_to_one_call_per_step(misbehaves):
    datasets, _ = peaks(k=3, n=20)

    def three_rows_only(x, center, width, amplitude):
        # e.g. a model that reads a per-data-set table by row: fine for K rows, not for more
        if x.ndim == 2 and x.shape[0] > 3:
            if misbehaves == "raises":
                raise IndexError("table has 3 rows")
            return gauss(x, center, width, amplitude) * 1.01
        return gauss(x, center, width, amplitude)

    ev, pm = evaluator(three_rows_only, datasets, backend="numpy")
    assert ev.vectorized
    jac = ev.jacobian(pm.x0)
    assert ev._stacked_ok is False
    ev_loop, _ = evaluator(gauss, datasets, backend="numpy", vectorized=False)
    np.testing.assert_allclose(jac, ev_loop.jacobian(pm.x0), rtol=1e-9, atol=1e-12)


# -- torch Jacobian by the complex step, checked against autograd -------------


def test_complex_step_jacobian_of_a_torch_model_equals_autograd():
    datasets, _ = peaks(k=3, n=25)
    ev, pm = evaluator(gauss_torch, datasets)
    theta = pm.x0 + np.linspace(0.1, 0.5, pm.n_physical)
    first = ev.jacobian(theta)  # autograd, and the complex step checked against it
    assert ev._complex_ok is True
    again = ev.jacobian(theta)  # the complex step alone
    np.testing.assert_allclose(again, first, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "body",
    [
        # abs() of a complex number loses the derivative: the check catches it
        lambda x, center, width, amplitude: (
            torch.abs(amplitude - 2.0) * torch.exp(-0.5 * ((x - center) / width) ** 2)
        ),
        # a comparison of complex parameters raises: autograd is kept
        lambda x, center, width, amplitude: (
            torch.where(amplitude > 0, amplitude, -amplitude)
            * torch.exp(-0.5 * ((x - center) / width) ** 2)
        ),
        # a cast to real drops the imaginary part (torch warns; the warning is not the user's)
        lambda x, center, width, amplitude: (
            torch.as_tensor(amplitude, dtype=torch.float64)
            * torch.exp(-0.5 * ((x - center) / width) ** 2)
        ),
    ],
    ids=["abs", "comparison", "cast-to-real"],
)
def test_non_analytic_torch_model_keeps_the_autograd_jacobian(body):
    datasets, _ = peaks(k=3, n=25)

    def model(x, center, width, amplitude):
        return body(x, center, width, amplitude)

    ev, pm = evaluator(model, datasets)
    assert ev.backend == "torch"
    theta = pm.x0 + np.linspace(0.1, 0.5, pm.n_physical)
    first = ev.jacobian(theta)
    assert ev._complex_ok is False
    ev_loop, _ = evaluator(model, datasets, vectorized=False)
    np.testing.assert_allclose(first, ev_loop.jacobian(theta), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ev.jacobian(theta), first, rtol=1e-12, atol=1e-14)


def test_numpy_model_gets_the_exact_jacobian_by_the_complex_step():
    datasets, _ = peaks(k=3, n=25, lengths=[25, 20, 25])
    ev_np, pm = evaluator(gauss, datasets)
    ev_t, _ = evaluator(gauss_torch, datasets)
    assert (ev_np.backend, ev_t.backend) == ("numpy", "torch")
    theta = pm.x0 + np.linspace(0.1, 0.5, pm.n_physical)
    central = ev_np.jacobian(theta)  # the reference; the complex step is checked against it
    assert ev_np._complex_ok is True
    exact = ev_np.jacobian(theta)
    mask = ev_np.data.mask
    reference = ev_t.jacobian(theta)
    assert _column_error(exact[mask], reference[mask]).max() < 1e-13
    assert _column_error(central[mask], reference[mask]).max() < 1e-7


@pytest.mark.parametrize(
    "body",
    [
        lambda x, c, w, a: np.abs(a - 2.0) * np.exp(-0.5 * ((x - c) / w) ** 2),
        lambda x, c, w, a: np.asarray(a, dtype=float) * np.exp(-0.5 * ((x - c) / w) ** 2),
    ],
    ids=["abs", "cast-to-float"],
)
def test_non_analytic_numpy_model_keeps_central_differences(body):
    datasets, _ = peaks(k=3, n=25)

    def model(x, center, width, amplitude):
        return body(x, center, width, amplitude)

    ev, pm = evaluator(model, datasets)
    theta = pm.x0 + np.linspace(0.1, 0.5, pm.n_physical)
    first = ev.jacobian(theta)
    assert ev._complex_ok is False
    np.testing.assert_allclose(ev.jacobian(theta), first, rtol=1e-12, atol=1e-14)


@st.composite
def _lengths(draw):
    """Mostly full-length data sets and a few short ones anywhere (the hard case)."""
    k = draw(st.integers(2, 30))
    n = draw(st.integers(6, 40))
    lengths = [n] * k
    for i in draw(st.lists(st.integers(0, k - 1), min_size=0, max_size=3)):
        lengths[i] = draw(st.integers(3, n))
    return lengths


@settings(max_examples=25, deadline=None)
@given(lengths=_lengths(), power=st.sampled_from([0.0, 1.0]))
def test_vectorized_auto_result_always_matches_the_looped_fit_property(lengths, power):
    # a model that reads its own row (mean of x): padding changes it in any shorter row
    def model(x, amplitude):
        return amplitude * x / np.mean(x, axis=-1, keepdims=True) ** power

    x = np.linspace(1.0, 10.0, max(lengths))
    datasets = [(x[:n], 1.1 * x[:n] / x[:n].mean() ** power) for n in lengths]
    kw = dict(local=["amplitude"], init={"amplitude": 1.0})
    auto = GlobalFit(model, datasets, **kw).run()
    loop = GlobalFit(model, datasets, vectorized=False, **kw).run()
    np.testing.assert_allclose(auto.values["amplitude"], loop.values["amplitude"], rtol=1e-8)
    for i in range(len(lengths)):
        assert auto.chi2_of(i) == pytest.approx(loop.chi2_of(i), rel=1e-6, abs=1e-20)


# -- the complex step, checked again at the solution ---------------------------


def _branchy_numpy(x, a, b):
    # analytic where the fit starts (a = 1); past a = 2 the complex step sees half the
    # derivative (abs drops the imaginary part), while the real model is a·x + b throughout
    return np.where(np.real(a) > 2.0, 0.5 * np.abs(a) + 0.5 * a, a) * x + b


def _branchy_torch(x, a, b):
    return torch.where(a.real > 2.0, 0.5 * a.abs().to(a.dtype) + 0.5 * a, a) * x + b


def _plain(x, a, b):
    return a * x + b


def _line_data():
    rng = np.random.default_rng(3)
    x = np.linspace(1.0, 5.0, 40)
    return [(x, 3.0 * x + 0.5 * k + rng.normal(0, 0.1, x.size)) for k in range(3)]


@pytest.mark.parametrize("model", [_branchy_numpy, _branchy_torch], ids=["numpy", "torch"])
def test_complex_step_wrong_only_at_the_solution_is_caught_and_refitted(model):
    datasets = _line_data()
    kw = {"shared": ["a"], "local": ["b"], "init": {"a": 1.0, "b": 0.0}}
    res = GlobalFit(model, datasets, **kw).run()
    ref = GlobalFit(_plain, datasets, **kw).run()  # the same function of the data, analytic
    assert "complex-step derivative for 'a'" in res.why_not_complex_step
    assert "refitted without the complex step" in res.why_not_complex_step
    assert res.success
    assert res.values["a"] == pytest.approx(ref.values["a"], rel=1e-8)
    # before the check, the standard error came from half the true derivative: 2x too large
    assert res.stderr["a"] == pytest.approx(ref.stderr["a"], rel=1e-5)
    assert ref.why_not_complex_step == ""


def test_complex_step_mismatch_names_the_column_that_differs_not_an_all_zero_one():
    # c's columns are zero both ways (0/0): the message named c, with "inf", not a
    def model(x, c, a, b):
        return _branchy_numpy(x, a, b) + 0.0 * c

    kw = {"shared": ["c", "a"], "local": ["b"], "init": {"c": 1.0, "a": 1.0, "b": 0.0}}
    with pytest.warns(FitWarning, match="'c' do"):  # c has no effect: warned since stop 25
        res = GlobalFit(model, _line_data(), **kw).run()
    assert "complex-step derivative for 'a' differs" in res.why_not_complex_step
    assert "inf" not in res.why_not_complex_step


def test_complex_step_that_agrees_at_the_solution_is_kept():
    datasets, _ = peaks(k=3, n=25)
    res = GlobalFit(
        gauss_torch, datasets, shared=["center", "width"], local=["amplitude"], init=INIT
    ).run()
    assert res.success and res.why_not_complex_step == ""


@pytest.mark.parametrize("backend", ["auto", "numpy", "torch"])
def test_a_model_with_complex_values_at_real_parameters_is_refused(backend):
    # np.emath.sqrt past its real domain: the cast dropped the imaginary part with only a
    # ComplexWarning and the fit reported success on the real parts (stop 18)
    x = np.linspace(0.0, 4.0, 30)
    y = np.sqrt(np.abs(x - 2.0))

    def model(x, a, b):
        if isinstance(x, torch.Tensor):
            return b * torch.sqrt((x - a).to(torch.complex128))
        return b * np.emath.sqrt(x - a)

    fit = GlobalFit(model, [(x, y)], shared=["a", "b"], init={"a": 1.0, "b": 1.0}, backend=backend)
    with pytest.raises(
        ValueError, match=r"complex values with a non-zero imaginary part for dataset 'dataset 0'"
    ):
        fit.run()


def test_a_model_with_zero_imaginary_parts_is_fitted_as_real():
    x = np.linspace(0.0, 1.0, 20)
    fit = GlobalFit(
        lambda x, a, b: (a * x + b) + 0j,
        [(x, 3 * x + 1)],
        shared=["a", "b"],
        init={"a": 1.0, "b": 0.0},
    )
    res = fit.run()
    assert res.success
    np.testing.assert_allclose([res.values["a"], res.values["b"]], [3.0, 1.0], rtol=1e-8)


def _shift_numpy(x, a, b):
    x -= 0.5  # in place: the caller's array, and every later call's x
    return a * x + b


def _clip_numpy(x, a, b):
    x[x < 0] = 0.0
    return a * x + b


def _shift_torch(x, a, b):
    x.sub_(0.5)
    return a * x + b


@pytest.mark.parametrize("backend", ["auto", "numpy"])
@pytest.mark.parametrize("model", [_shift_numpy, _clip_numpy])
def test_a_numpy_model_that_writes_into_x_is_refused_and_the_callers_x_kept(model, backend):
    # stop 35: model_fn got the caller's own array: x -= 0.5 shifted it (and every later
    # call's x) with no error; the fit was of other data and the user's x was lost
    x = np.linspace(-1, 5, 40)
    given = x.copy()
    data = [(x, 2 * x + 1), (x[:30], 2 * x[:30] + 3)]
    fit = GlobalFit(model, data, shared=["a"], local=["b"], init={"a": 1.0, "b": 0.0},
                    backend=backend)  # fmt: skip
    error = ValueError if backend == "auto" else ModelError
    with pytest.raises(error, match=r"dataset 'dataset 0' \(index 0\): model_fn writes into "
                                    r"its x argument \(ValueError: .*read-only\).* x = x - c, "
                                    r"or x = x.copy\(\) first"):  # fmt: skip
        fit.run()
    np.testing.assert_array_equal(x, given)


@pytest.mark.parametrize("k", [1, 3])
def test_a_torch_model_that_shifts_x_in_place_is_refused(k):
    # torch cannot share a read-only array, so the torch copies are checked after the fit
    x = np.linspace(0, 5, 40)
    given = x.copy()
    data = [(x, 2 * x + 1 + i) for i in range(k)]
    fit = GlobalFit(_shift_torch, data, shared=["a"], local=["b"], init={"a": 1.0, "b": 0.0},
                    backend="torch")  # fmt: skip
    with pytest.raises(ValueError, match=r"model_fn changed its x argument in place \(dataset "
                                         r"'dataset \d' \(index \d\), point \d+: x is .*, a "
                                         r"call left .*x = x.clone\(\) in torch"):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the shifted fit's own flags
            fit.run()
    np.testing.assert_array_equal(x, given)
