"""A torch model whose autograd derivative is wrong is refused, not trusted (stop 53).

A custom ``torch.autograd.Function`` with a backward off by 2x (or a ``.detach()`` on a
parameter's path) disagreed with the complex step; the complex step was dropped and
autograd kept, so the fit reported ``success=True`` with the standard error of ``k`` 2x
the right one (0.00873 against lmfit's and the NumPy model's 0.00436), no warning.
Central differences now arbitrate between the two.
"""

import numpy as np
import pytest

from tying.fit import GlobalFit

torch = pytest.importorskip("torch")


class _HalfGradExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        out = torch.exp(z)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * out * 0.5  # the bug: d exp(z)/dz is exp(z)


class _HalfGradExpBelow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        out = torch.exp(z)
        ctx.save_for_backward(out, z)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, z = ctx.saved_tensors
        return grad * out * torch.where(z < -2, 0.5, 1.0)  # wrong only below z = -2


def _wrong_where_the_fit_ends(x, a, k):
    return a * _HalfGradExpBelow.apply(-k * x)


def _wrong_backward(x, a, k):
    return a * _HalfGradExp.apply(-k * x)


def _detached(x, a, k):
    return a * torch.exp(-k.detach() * x)


def _right(x, a, k):
    return a * torch.exp(-k * x)


def _numpy(x, a, k):
    return a * np.exp(-k * x)


def _data():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 4, 40)
    return [(x, 2 * np.exp(-0.7 * x) + rng.normal(0, 0.02, 40), 0.02)]


KW = {"shared": ["a", "k"], "init": {"a": 1.0, "k": 1.0}}


@pytest.mark.parametrize("model", [_wrong_backward, _detached])
def test_a_wrong_autograd_derivative_is_refused(model):
    fit = GlobalFit(model, _data(), **KW)
    with pytest.raises(ValueError, match=r"model_fn's autograd derivative with respect to 'k' "
                       r"is wrong: on dataset 'dataset 0' \(index 0\) at point \d+ it is "
                       r"-?[\d.e-]+, where the complex step and central differences agree "
                       r"on -[\d.e-]+ .*torch\.autograd\.gradcheck"):  # fmt: skip
        fit.run()
    assert not hasattr(fit, "result_")


def test_a_backward_wrong_only_where_the_fit_ends_is_refused_there():
    # right at the start (k = 0.3: -k·x >= -1.2), wrong at the solution (k = 0.7): the
    # check at the solution dropped the complex step for autograd and refitted with it,
    # success=False saying the model "is not analytic there: abs, conj or real?"
    fit = GlobalFit(_wrong_where_the_fit_ends, _data(), shared=["a", "k"],
                    init={"a": 1.0, "k": 0.3})  # fmt: skip
    with pytest.raises(ValueError, match=r"autograd derivative with respect to 'k' is wrong: "
                       r"on dataset 'dataset 0' \(index 0\) at point (2[2-9]|3\d) "):  # fmt: skip
        fit.run()


def test_a_right_autograd_derivative_fits_as_the_numpy_model():
    want = GlobalFit(_numpy, _data(), **KW).run()
    got = GlobalFit(_right, _data(), **KW).run()
    assert got.backend == "torch" and want.backend == "numpy"
    np.testing.assert_allclose(got.stderr["k"], want.stderr["k"], rtol=1e-6)


def test_abs_keeps_autograd_where_the_complex_step_is_the_wrong_one():
    # abs is not analytic: the complex step disagrees with autograd and with central
    # differences, so autograd stands (the witnesses do not agree with each other)
    rng = np.random.default_rng(1)
    x = np.linspace(-2, 2, 41)
    y = 1.5 * np.abs(x - 0.3) + rng.normal(0, 0.01, 41)
    fit = GlobalFit(lambda x, a, c: a * torch.abs(x - c), [(x, y, 0.01)], shared=["a", "c"],
                    init={"a": 1.0, "c": 0.05})  # fmt: skip
    res = fit.run()
    assert res.values["c"] == pytest.approx(0.3, abs=0.01)
    assert res.values["a"] == pytest.approx(1.5, abs=0.01)


def _many(k):
    rng = np.random.default_rng(2)
    x = np.linspace(0, 4, 40)
    return [(x, a * np.exp(-0.7 * x) + rng.normal(0, 0.02, 40), 0.02) for a in rng.uniform(1, 3, k)]


@pytest.mark.parametrize("model", [_wrong_backward, _detached])
@pytest.mark.parametrize(
    ("data", "vectorized"),
    [(_data(), False), (_many(110), "auto")],  # no complex step: one call per data set; too big
    ids=["vectorized=False", "K=110"],
)
def test_autograd_without_the_complex_step_is_checked_by_differences(model, data, vectorized):
    fit = GlobalFit(model, data, shared=["k"], local=["a"], init={"a": 1.0, "k": 1.0},
                    vectorized=vectorized)  # fmt: skip
    with pytest.raises(ValueError, match=r"autograd derivative with respect to 'k' is wrong: on "
                       r"dataset 'dataset 0' \(index 0\) at point \d+ it is -?[\d.e-]+, where "
                       r"central differences with two step sizes agree on -[\d.e-]+"):  # fmt: skip
        fit.run()


def test_a_relu_kink_on_a_data_point_is_not_taken_for_a_wrong_backward():
    # at the start c = 0 sits on the point x = 0: autograd says 0 there, differences 0.5;
    # one point per data set is a kink, not a wrong backward
    rng = np.random.default_rng(3)
    x = np.linspace(-2, 2, 41)
    data = [(x, 1.5 * np.maximum(x - 0.3, 0) + rng.normal(0, 0.01, 41), 0.01)] * 110
    res = GlobalFit(lambda x, a, c: a * torch.relu(x - c), data, shared=["a", "c"],
                    init={"a": 1.0, "c": 0.0}).run()  # fmt: skip
    assert res.success and res.values["c"] == pytest.approx(0.3, abs=0.01)


def test_noisy_differences_do_not_refute_autograd():
    # a model with noise autograd does not see (an adaptive ODE solver's tolerance, here
    # 1e-9 of a detached sin): differences with two steps disagree with each other, 1e-4
    def noisy(x, a, k):
        return a * torch.exp(-k * x) + 1e-9 * torch.sin(1e12 * k.detach())

    res = GlobalFit(noisy, _many(110), shared=["k"], local=["a"],
                    init={"a": 1.0, "k": 1.0}).run()  # fmt: skip
    assert res.success and res.values["k"] == pytest.approx(0.7, abs=0.01)
