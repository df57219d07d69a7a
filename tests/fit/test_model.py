from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.fit.helpers import INIT, gauss, gauss_torch, peaks
from tying.fit import GlobalFit
from tying.fit.datasets import stack
from tying.fit.model import ModelEvaluator
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
