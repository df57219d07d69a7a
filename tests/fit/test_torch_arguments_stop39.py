"""init, fixed, bounds and theta given as torch tensors: read as their values (stop 39).

Stop 38 made the *data* read a tensor as its values; the start values, fixed values and
bounds still went through ``np.asarray``, which raised torch's own errors naming no
argument: "Can't call numpy() on Tensor that requires grad" for a start taken from a
trained ``torch.nn.Parameter``, "Got unsupported ScalarType BFloat16" for a bfloat16 one,
"can't convert meta device type tensor" for a meta one. ``GlobalFit.jacobian(theta)``
did the same for a tensor theta, and took a complex theta's real part with only NumPy's
ComplexWarning. The anchor is the same fit with the NumPy values the tensors hold.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.fit


def decay(x, a, k, c):
    return a * np.exp(-k * x) + c


RNG = np.random.default_rng(39)
X = np.linspace(0, 3, 25)
DATA = [
    (X, a * np.exp(-X) + 0.1 + RNG.normal(0, 0.02, 25), 0.02, {"run": g})
    for a, g in [(1.5, "A"), (2.0, "B"), (2.5, "A")]
]


def _fit(**kw):
    kw = {"shared": ["k"], "local": ["a"], "per_group": {"c": "run"}, **kw}
    return tying.fit.GlobalFit(decay, DATA, **kw).run()


def test_a_start_from_a_trained_torch_parameter_fits_as_its_value():
    start = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))  # requires_grad
    got = _fit(init={"a": 1.0, "k": start, "c": 0.0})
    want = _fit(init={"a": 1.0, "k": 0.5, "c": 0.0})
    np.testing.assert_array_equal(got.x, want.x)
    assert abs(got.values["k"] - 1.0) < 0.05  # the data's rate, not the start


def test_bfloat16_fixed_and_bounds_read_as_their_values():
    fixed = torch.tensor([0.1, 0.1, 0.1], dtype=torch.bfloat16, requires_grad=True)
    got = tying.fit.GlobalFit(
        decay,
        DATA,
        shared=["k"],
        local=["a"],
        fixed={"c": fixed},
        init={"a": 1.0, "k": 0.5},
        bounds={"k": (torch.tensor(0.25, dtype=torch.bfloat16), None)},
    ).run()
    held = float(torch.tensor(0.1, dtype=torch.bfloat16))  # 0.10009765625, exact in float64
    want = tying.fit.GlobalFit(
        decay,
        DATA,
        shared=["k"],
        local=["a"],
        fixed={"c": held},
        init={"a": 1.0, "k": 0.5},
        bounds={"k": (0.25, None)},
    ).run()
    np.testing.assert_array_equal(got.x, want.x)
    # given one value per data set, it comes back as one per data set (stop 40: a float
    # before, because the three happened to be equal)
    np.testing.assert_array_equal(got.values["c"], [held] * 3)


def test_per_group_start_values_as_a_list_of_tensors():
    starts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.0, 0.2)]
    got = _fit(init={"a": 1.0, "k": 0.5, "c": starts})
    want = _fit(init={"a": 1.0, "k": 0.5, "c": [0.0, 0.2]})
    np.testing.assert_array_equal(got.x, want.x)


def test_a_meta_tensor_start_is_refused_by_name():
    with pytest.raises(ValueError, match=r"init\['k'\] is a torch tensor on the 'meta' device"):
        _fit(init={"a": 1.0, "k": torch.tensor(0.5, device="meta"), "c": 0.0})


def test_jacobian_reads_a_tensor_theta_and_refuses_a_complex_one():
    fit = tying.fit.GlobalFit(
        decay, DATA, shared=["k"], local=["a"], per_group={"c": "run"},
        init={"a": 1.0, "k": 0.5, "c": 0.0},
    )  # fmt: skip
    res = fit.run()
    got = fit.jacobian(torch.tensor(res.x, requires_grad=True)).toarray()
    np.testing.assert_array_equal(got, fit.jacobian(res.x).toarray())
    with pytest.raises(TypeError, match="theta must be real numbers, got complex128"):
        fit.jacobian(res.x + 0j)


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    dtype=st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]),
    grad=st.booleans(),
    where=st.sampled_from(["init", "fixed", "bound"]),
    value=st.floats(0.3, 0.9),
)
def test_property_any_tensor_argument_fits_as_the_numbers_it_holds(dtype, grad, where, value):
    tensor = torch.tensor(value, dtype=dtype, requires_grad=grad)
    number = float(tensor.detach().double())
    kw = {"shared": ["k"], "local": ["a"], "init": {"a": 1.0, "k": 1.0, "c": 0.0}}

    def build(v):
        if where == "init":
            return {**kw, "per_group": {"c": "run"}, "init": {"a": 1.0, "k": v, "c": 0.0}}
        if where == "fixed":
            return {**kw, "fixed": {"c": v}, "init": {"a": 1.0, "k": 1.0}}
        return {**kw, "per_group": {"c": "run"}, "bounds": {"k": (None, v)}, "init": {
            "a": 1.0, "k": 0.2, "c": 0.0}}  # fmt: skip

    got = tying.fit.GlobalFit(decay, DATA, **build(tensor))
    want = tying.fit.GlobalFit(decay, DATA, **build(number))
    np.testing.assert_array_equal(got.parameter_map.x0, want.parameter_map.x0)
    np.testing.assert_array_equal(got.parameter_map.upper, want.parameter_map.upper)
    np.testing.assert_array_equal(got.parameter_map.fixed_values, want.parameter_map.fixed_values)
    r_got, r_want = got.jacobian(), want.jacobian()
    np.testing.assert_array_equal(r_got.toarray(), r_want.toarray())
