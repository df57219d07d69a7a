"""Data given as torch tensors: read as their values, whatever dtype and autograd state (stop 38).

``np.asarray`` of a tensor raised torch's own errors, naming no data set: "Got unsupported
ScalarType BFloat16" for bfloat16 data, "Can't call numpy() on Tensor that requires grad"
for a model's output, "can't convert meta device type tensor" for a meta tensor. The
anchor is the same fit on the NumPy arrays the tensors hold. A ragged x (lists of rows
of different lengths) raised NumPy's "inhomogeneous shape", naming no data set.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.fit


def decay(x, a, k):
    return a * np.exp(-k * x)


KW = dict(shared=["a", "k"], init={"a": 1.0, "k": 0.5})
RNG = np.random.default_rng(0)
X = np.linspace(0, 3, 30)
Y = 2.0 * np.exp(-X) + RNG.normal(0, 0.02, 30)


def _values(data, **kw):
    res = tying.fit.GlobalFit(decay, data, **{**KW, **kw}).run()
    return res.values["a"], res.values["k"], res.chi2


def test_bfloat16_y_fits_as_its_values_in_float64():
    yb = torch.tensor(Y).bfloat16()
    got = _values([(X, yb, 0.02)])
    want = _values([(X, yb.double().numpy(), 0.02)])
    assert got == want
    assert abs(got[1] - 1.0) < 0.05  # the data, not zeros or garbage


def test_a_tensor_that_requires_grad_is_read_as_its_values():
    y = torch.tensor(Y, requires_grad=True) * 1.0  # a model's output, part of a graph
    assert _values([(torch.tensor(X), y, torch.full((30,), 0.02, dtype=torch.float64))]) == _values(
        [(X, Y, 0.02)]
    )


def test_a_meta_tensor_is_refused_naming_the_data_set():
    with pytest.raises(ValueError, match=r"dataset 'dataset 0'.*y is a torch tensor on the 'meta'"):
        _values([(X, torch.empty(30, device="meta"), 0.02)])


def test_complex_and_bool_tensors_are_refused_as_their_arrays_are():
    with pytest.raises(ValueError, match="y is complex"):
        _values([(X, torch.tensor(Y + 0j), 0.02)])
    with pytest.raises(ValueError, match="y is boolean"):
        _values([(X, torch.tensor(Y > 1), 0.02)])


def test_predict_reads_a_bfloat16_tensor_x():
    res = tying.fit.GlobalFit(decay, [(X, Y, 0.02)], **KW).run()
    xb = torch.tensor([0.5, 1.25]).bfloat16()
    np.testing.assert_array_equal(res.predict(0, xb), res.predict(0, xb.double().numpy()))


DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32]


@settings(derandomize=True, deadline=None, max_examples=15)
@given(
    x_dtype=st.sampled_from(DTYPES),
    y_dtype=st.sampled_from(DTYPES[:4]),
    s_dtype=st.sampled_from(DTYPES[:4]),
    grad=st.booleans(),
)
def test_tensors_fit_as_the_numpy_arrays_they_hold(x_dtype, y_dtype, s_dtype, grad):
    """Any dtype, autograd or not: the fit of the arrays ``t.double().numpy()`` holds."""
    xt = torch.tensor(X * 10).to(x_dtype)  # int32 x: 0, 1, ..., 30
    yt = torch.tensor(2.0 * np.exp(-xt.double().numpy() / 10) + RNG.normal(0, 0.02, 30))
    yt = yt.to(y_dtype)
    st_ = torch.full((30,), 0.02, dtype=s_dtype)
    if grad:
        yt = yt.requires_grad_(True) * 1
    got = _values([(xt, yt, st_)], init={"a": 1.0, "k": 0.05})
    arrays = tuple(t.detach().double().numpy() for t in (xt, yt, st_))
    want = _values([arrays], init={"a": 1.0, "k": 0.05})
    assert got == want


def test_a_ragged_x_is_refused_naming_the_data_set():
    data = [(X, Y, 0.02), ([[0.0, 1.0], [1.0]], [1.0, 2.0], 0.1)]
    with pytest.raises(
        ValueError, match=r"dataset 'dataset 1' \(index 1\): x is not a rectangular"
    ):
        _values(data)
