"""Model signatures GlobalFit cannot call, refused when the fit is prepared (stop 38).

A model with positional-only parameters (``def f(x, a, b, /)``) failed inside the
start's check with TypeErrors from both backends; a role naming ``x`` was refused as a
name "which model_fn does not take". Both now say the rule and the fix.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.fit

X = np.linspace(0.0, 1.0, 20)
DATA = [(X, 2.0 * X + 1.0, 0.1)]


def test_positional_only_parameters_are_refused_naming_them_and_the_wrapper():
    def line(x, a, b, /):
        return a * x + b

    fit = tying.fit.GlobalFit(line, DATA, shared=["a", "b"], init={"a": 1.0, "b": 0.0})
    with pytest.raises(TypeError, match=r"model_fn takes a, b by position only .* lambda x, a, b"):
        fit.run()


def test_the_suggested_wrapper_fits_as_a_plain_model():
    def line(x, a, b, /):
        return a * x + b

    def plain(x, a, b):
        return a * x + b

    wrapped = tying.fit.GlobalFit(
        lambda x, a, b: line(x, a, b), DATA, shared=["a", "b"], init={"a": 1.0, "b": 0.0}
    ).run()
    direct = tying.fit.GlobalFit(plain, DATA, shared=["a", "b"], init={"a": 1.0, "b": 0.0}).run()
    assert wrapped.values == direct.values


@pytest.mark.parametrize("role", ["shared", "local", "fixed", "per_group"])
def test_a_role_naming_x_says_it_is_the_independent_variable(role):
    def line(t, a, b):
        return a * t + b

    kwargs = {"shared": ["a", "b"], role: {"t": 1.0} if role == "fixed" else ["t"]}
    if role == "per_group":
        kwargs[role] = {"t": "instrument"}
    if role == "shared":
        kwargs["shared"] = ["a", "b", "t"]
    fit = tying.fit.GlobalFit(line, DATA, init={"a": 1.0, "b": 0.0}, **kwargs)
    with pytest.raises(ValueError, match=rf"{role} names 't', model_fn's first argument"):
        fit.run()


@settings(derandomize=True, deadline=None, max_examples=30)
@given(kinds=st.lists(st.sampled_from(["pos", "kw", "kwonly"]), min_size=1, max_size=4))
def test_property_a_signature_is_refused_exactly_when_a_parameter_is_positional_only(kinds):
    """Any mix of positional-only, ordinary and keyword-only parameters: refused at
    preparation exactly when one is positional-only, and otherwise fitted to lstsq's
    values (a linear model)."""
    names = [f"p{i}" for i in range(len(kinds))]
    pos = [n for n, k in zip(names, kinds, strict=True) if k == "pos"]
    kw = [n for n, k in zip(names, kinds, strict=True) if k == "kw"]
    kwonly = [n for n, k in zip(names, kinds, strict=True) if k == "kwonly"]
    head = ", ".join(["x", *pos]) + (", /" if pos else "")
    sig = ", ".join([head, *kw, *(["*", *kwonly] if kwonly else [])])
    body = " + ".join(f"{n} * x**{i}" for i, n in enumerate(names))
    scope: dict = {}
    exec(f"def model({sig}):\n    return {body}\n", scope)  # noqa: S102 (a generated signature)
    rng = np.random.default_rng(len(kinds))
    truth = rng.normal(size=len(names))
    y = sum(t * X**i for i, t in enumerate(truth))
    fit = tying.fit.GlobalFit(
        scope["model"], [(X, y, 0.1)], shared=names, init=dict.fromkeys(names, 0.0)
    )
    if pos:
        with pytest.raises(TypeError, match="by position only"):
            fit.run()
        return
    result = fit.run()
    design = np.stack([X**i for i in range(len(names))], axis=1)
    want = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose([result.values[n] for n in names], want, rtol=1e-6, atol=1e-8)
