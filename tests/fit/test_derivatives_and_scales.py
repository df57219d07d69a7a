"""Failures no solver can recover from, found by the stop 32 review, each refused by
name (every test fails on the old code): a Jacobian with NaN or inf (the solvers took
NaN steps until their budget, or trf raised SciPy's bare error), χ² that overflows at the
start or whose data underflow (a fit at 1e-170 came back success=True at its start
values), and a budget stop reported as "a minimum all the same"."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tying.fit import GlobalFit, ModelError
from tying.fit.datasets import stack
from tying.fit.model import ModelEvaluator
from tying.fit.roles import ParameterMap

X = np.linspace(0, 4, 30)


def _line_sqrt(x, a, b):
    return a * x + np.sqrt(b)


@pytest.mark.parametrize("solver", ["lm", "trf"])
@pytest.mark.parametrize("k", [1, 2])
def test_a_nan_derivative_at_the_start_is_refused_naming_the_parameter(solver, k):
    """sqrt(b) from b = 0: the central difference steps to b < 0. MINPACK and the Schur LM
    took NaN steps for 2,000 iterations, then named 'b' as a parameter that "does not
    change the model" and the start values "a minimum all the same"; trf raised SciPy's
    "array must not contain infs or NaNs"."""
    data = [(X, (2 + i) * X + 1) for i in range(k)]
    roles = {"shared": ["a", "b"]} if k == 1 else {"shared": ["b"], "local": ["a"]}
    fit = GlobalFit(_line_sqrt, data, init={"a": 1.0, "b": 0.0}, solver=solver, **roles)
    with pytest.raises(
        ValueError,
        match=r"the derivative of model_fn with respect to 'b' is nan on dataset 'dataset 0' "
        r"\(index 0\) \(first at point 0\), at the starting values .*bound 'b'",
    ):
        fit.run()
    fit.bounds = {"b": (0.0, None)}  # the fix the message names: the steps stay inside
    res = fit.run()
    assert res.success, res.message
    assert res.values["b"] == pytest.approx(1.0, abs=1e-6)


def test_an_inf_derivative_from_autograd_is_refused_too():
    fit = GlobalFit(lambda x, a, b: a * x + torch.sqrt(b), [(X, 2 * X + 1)],
                    shared=["a", "b"], init={"a": 1.0, "b": 0.0})  # fmt: skip
    with pytest.raises(ValueError, match=r"with respect to 'b' is inf .* at the starting"):
        fit.run()


def test_a_non_finite_derivative_met_mid_fit_is_a_model_error():
    data = stack([(X, 2 * X + 1)])
    pmap = ParameterMap(["a", "b"], data.metadata, shared=["a", "b"], init={"a": 1.0, "b": 1.0})
    ev = ModelEvaluator(_line_sqrt, data, pmap, backend="numpy", vectorized=False)
    assert np.isfinite(ev.jacobian(pmap.x0)).all()
    with pytest.raises(ModelError, match=r"with respect to 'b' is nan .* at a=2, b=0: "):
        ev.jacobian(np.array([2.0, 0.0]))


@pytest.mark.parametrize("solver", ["lm", "trf"])
@pytest.mark.parametrize("k", [1, 2])
def test_chi2_that_overflows_at_the_start_is_refused(solver, k):
    """exp(400·x) at the start: residuals of 5e173. The LM reported the start values (or
    NaN steps until its budget), trf raised SciPy's bare error; lmfit says "Fit
    succeeded" with chi2 inf."""
    x = np.linspace(0, 1, 20)
    y = 3 * np.exp(0.7 * x)
    data = [(x, y * (1 + i)) for i in range(k)]
    roles = {"shared": ["a", "k"]} if k == 1 else {"shared": ["k"], "local": ["a"]}
    fit = GlobalFit(lambda x, a, k: a * np.exp(k * x), data, init={"a": 1.0, "k": 400.0},
                    solver=solver, **roles)  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"chi2 at the starting values overflows float64 \(the largest weighted residual "
        r"is 5\.2\de\+173, on dataset 'dataset \d' \(index \d\)\).*move init closer",
    ):
        fit.run()


@pytest.mark.parametrize("solver", ["lm", "trf"])
@pytest.mark.parametrize(
    "scale,match", [(1e160, r"3\.3e\+160.*\(overflow\)"), (1e-170, r"3\.3e-170.*\(underflow\)")]
)
def test_data_whose_chi2_float64_cannot_hold_are_refused(solver, scale, match):
    """Data at 1e-170 without sigma: every solver stopped at the start values with
    success=True and standard errors of 0; at 1e160 the LM did too, with chi2 inf."""
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 20)
    y = scale * (2 * x + 1 + rng.normal(0, 0.01, x.size))
    fit = GlobalFit(lambda x, a, b: a * x + b, [(x, y), (x, 1.1 * y)], shared=["a"],
                    local=["b"], init={"a": 0.0, "b": 0.0}, solver=solver)  # fmt: skip
    with pytest.raises(ValueError, match=r"the weighted data y/sigma reach " + match):
        fit.run()


@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_data_at_extreme_but_representable_scales_still_fit(scale):
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 20)
    y = 2 * x + 1 + rng.normal(0, 0.01, x.size)
    ref = GlobalFit(lambda x, a, b: a * x + b, [(x, y), (x, 1.1 * y)], shared=["a"],
                    local=["b"], init={"a": 0.0, "b": 0.0}).run()  # fmt: skip
    res = GlobalFit(lambda x, a, b: a * x + b, [(x, scale * y), (x, scale * 1.1 * y)],
                    shared=["a"], local=["b"], init={"a": 0.0, "b": 0.0}).run()  # fmt: skip
    assert res.success, res.message
    assert res.values["a"] / scale == pytest.approx(ref.values["a"], rel=1e-8)
    assert res.stderr["a"] / scale == pytest.approx(ref.stderr["a"], rel=1e-8)
    zero = GlobalFit(
        lambda x, a: a * x, [(x, np.zeros_like(x))], shared=["a"], init={"a": 1.0}
    ).run()  # fmt: skip  (data all 0: not an underflow)
    assert zero.values["a"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("solver", ["lm", "trf"])
@pytest.mark.parametrize("k", [1, 2])
def test_a_budget_stop_that_met_a_wall_is_not_called_a_minimum(solver, k):
    data = [(X, 2 * X + 0.1 + 0.5 * i) for i in range(k)]
    roles = {"shared": ["a", "b"]} if k == 1 else {"shared": ["b"], "local": ["a"]}
    fit = GlobalFit(_line_sqrt, data, init={"a": 0.0, "b": 4.0}, max_iter=6, solver=solver,
                    **roles)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit.run()
    assert not res.success
    assert "which it treated as a wall" in res.message
    assert "minimum all the same" not in res.message


def test_a_float32_model_is_flagged_its_fit_carries_float32_digits():
    """stop 34: NIST Hahn1 with its model computed in float32 came back success=True with
    values 60 % off the certified ones and standard errors 80 % off, no word: the model,
    its differences and χ² carry 7 digits, not 16."""
    import pathlib

    import tying.fit.nist as nist

    hahn1 = nist.load(pathlib.Path(__file__).parent / "data" / "nist-strd" / "Hahn1.dat")
    model = hahn1.model("numpy")

    def in_float32(x, **params):
        return model(x.astype(np.float32), **{k: np.float32(v) for k, v in params.items()})

    fit = GlobalFit(in_float32, [(hahn1.x, hahn1.y)], shared=hahn1.param_names, init=hahn1.init(2))
    with pytest.warns(UserWarning) as record:
        res = fit.run()
    assert any("model_fn returns float32 values" in str(w.message) for w in record)
    assert "carry about 6 digits" in res.message and "compute in float64" in res.message
    values = [res.values[n] for n in hahn1.param_names]
    assert nist.lre(values, hahn1.certified).min() < 2  # the reason for the flag
    # the float64 model: no flag
    res = GlobalFit(model, [(hahn1.x, hahn1.y)], shared=hahn1.param_names, init=hahn1.init(2)).run()
    assert res.success and "float" not in res.message


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_torch_model_in_low_precision_is_flagged(dtype):
    # bfloat16 raised "model_fn raised TypeError: Got unsupported ScalarType BFloat16 ...
    # (each data set alone works)", a ModelError that blamed the batched call
    x = np.linspace(0, 5, 40)
    data = [(x, a * np.exp(-0.7 * x), 0.01) for a in (1.0, 2.0, 3.0)]

    def decay(x, a, k):
        return (a * torch.exp(-k * x)).to(dtype)

    fit = GlobalFit(decay, data, shared=["k"], local=["a"], init={"a": 1.0, "k": 1.0})
    name = str(dtype).removeprefix("torch.")
    with pytest.warns(UserWarning) as record:
        res = fit.run()
    assert any(f"model_fn returns {name} values" in str(w.message) for w in record)
    assert f"model_fn returns {name} values" in res.message
    assert abs(res.values["k"] - 0.7) < 0.01


@pytest.mark.parametrize("tiny", [1e-160, 1e-300])
def test_a_tiny_sigma_that_overflows_chi2_is_named_not_the_start(tiny):
    """stop 35: sigma = 1e-300 at a point where y = 0 overflowed chi2 at the start and
    the error said "the start is too far from the data; move init closer" (it was not);
    where y != 0 the error named no point and no sigma."""
    x = np.linspace(0, 5, 30)
    y = 2 * np.exp(-0.7 * x) + 0.1
    y[3] = 0.0
    sigma = np.ones(30)
    sigma[3] = tiny
    decay = lambda x, a, k, c: a * np.exp(-k * x) + c  # noqa: E731
    fit = GlobalFit(decay, [(x, y, sigma)], shared=["a", "k", "c"],
                    init={"a": 1.0, "k": 1.0, "c": 0.0})  # fmt: skip
    with pytest.raises(ValueError, match=r"chi2 at the starting values overflows float64 "
                                         r"because sigma is 1e-\d+ at point 3 of dataset "
                                         r"'dataset 0' \(index 0\) \(model - y there is only "
                                         r"0\.596.*standard deviation of y"):  # fmt: skip
        fit.run()
    y[3] = 1.0
    with pytest.raises(ValueError, match=r"the weighted data y/sigma reach 1e\+\d+ \(dataset "
                                         r"'dataset 0', index 0, point 3: y = 1, sigma = "
                                         r"1e-\d+\)"):  # fmt: skip
        fit.run()
