"""A model that updates a parameter argument in place fits as one that does not (stop 39).

lmfit passes each parameter as a float, so ``c -= 1.0`` inside a model changes the
model's own copy only. The batched call passed ``(K, 1)`` views: of the map's fixed
values (a model converting units, ``T -= 273.15``, shifted the fixed value at every
call: the fit, its χ² and the reported fixed value came back wrong with success=True),
and of arrays the finite-difference calls share (each call read the last one's update:
a wrong Jacobian). The anchor is the same model written without the in-place update.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.fit

RNG = np.random.default_rng(39)
X = np.linspace(0, 5, 30)
DATA = [(X, (2.0 + i) * np.exp(-0.7 * X) + 0.3 + RNG.normal(0, 0.05, 30), 0.05) for i in range(3)]


def clean(x, a, b, c):
    return a * np.exp(-b * x) + c


def shifts_fixed(x, a, b, c):
    c -= 1.0  # fixed={"c": 1.3} read as 0.3
    return a * np.exp(-b * x) + c


def test_a_fixed_value_updated_in_place_stays_fixed():
    kw = dict(shared=["b"], local=["a"], init={"a": 1.0, "b": 1.0})
    got = tying.fit.GlobalFit(shifts_fixed, DATA, fixed={"c": 1.3}, **kw).run()
    want = tying.fit.GlobalFit(clean, DATA, fixed={"c": 0.3}, **kw).run()
    assert got.values["c"] == 1.3  # old: 0.3 after the first call, then drifting
    np.testing.assert_allclose(got.x, want.x, rtol=1e-9)
    assert got.chi2 == pytest.approx(want.chi2, rel=1e-12)  # old: 1781.8 vs 81.3


def test_a_torch_fixed_value_updated_in_place_stays_fixed():
    def torch_shifts(x, a, b, c):
        c.sub_(1.0)
        return a * torch.exp(-b * x) + c

    kw = dict(shared=["b"], local=["a"], init={"a": 1.0, "b": 1.0}, backend="torch")
    got = tying.fit.GlobalFit(torch_shifts, DATA, fixed={"c": 1.3}, **kw).run()
    want = tying.fit.GlobalFit(clean, DATA, fixed={"c": 0.3}, **{**kw, "backend": "numpy"}).run()
    assert got.values["c"] == 1.3
    np.testing.assert_allclose(got.x, want.x, rtol=1e-7)


def _in_place(name, op):
    """model_fn that updates ``name`` in place by ``op`` and undoes it in its formula."""

    def model(x, a, b, c):
        p = {"a": a, "b": b, "c": c}
        v = p[name]
        if op == "sub":
            v -= 1.0
            p[name] = v + 1.0
        elif op == "mul":
            v *= 2.0
            p[name] = v / 2.0
        else:
            v += 0.5
            p[name] = v - 0.5
        # np.maximum keeps the complex step out: the Jacobian is by finite differences
        return np.maximum(p["a"] * np.exp(-p["b"] * x), -1.0) + p["c"]

    return model


def _clean_max(x, a, b, c):
    return np.maximum(a * np.exp(-b * x), -1.0) + c


@settings(derandomize=True, deadline=None, max_examples=10)
@given(
    name=st.sampled_from(["a", "b", "c"]),
    op=st.sampled_from(["sub", "mul", "add"]),
    roles=st.sampled_from(["shared", "local", "fixed_c"]),
    vectorized=st.sampled_from(["auto", False]),
)
def test_property_an_in_place_update_changes_nothing(name, op, roles, vectorized):
    kw = {
        "shared": dict(shared=["a", "b", "c"]),
        "local": dict(shared=["b"], local=["a", "c"]),
        "fixed_c": dict(shared=["b"], local=["a"], fixed={"c": 0.3}),
    }[roles]
    init = {n: v for n, v in {"a": 1.0, "b": 1.0, "c": 0.0}.items() if n not in kw.get("fixed", {})}
    runs = []
    for model in (_in_place(name, op), _clean_max):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tying.fit.FitWarning)  # shared a: model misses
            runs.append(
                tying.fit.GlobalFit(model, DATA, init=init, vectorized=vectorized, **kw).run()
            )
    got, want = runs
    np.testing.assert_allclose(got.x, want.x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got._stderr_x, want._stderr_x, rtol=1e-7)
    assert got.values["c"] == pytest.approx(want.values["c"])
