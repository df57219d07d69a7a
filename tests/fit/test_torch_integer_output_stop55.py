"""A torch model returning integer or boolean tensors is refused by dtype (stop 55).

With ``backend="auto"`` the model is tried with torch tensors that require grad; an
integer tensor carries no gradient by its dtype, and before stop 55 the refusal read
"With torch tensors: returned Tensor with no gradient", naming neither the dtype nor the
fix (a NumPy model's integers were named at stop 54). With ``vectorized=True`` the
dtype was reported as the batched call's failure, with the advice "pass
vectorized='auto' or False", which led to the same refusal.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tying.fit import GlobalFit  # noqa: E402

X = np.linspace(0, 1, 10)


def _fit(model, **kw):
    return GlobalFit(model, [(X, 2 * X + 1), (X, 2 * X)], shared=["a"], local=["b"],
                     init={"a": 1.0, "b": 0.0}, **kw)  # fmt: skip


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("vectorized", ["auto", True, False])
def test_an_integer_tensor_is_refused_by_dtype_with_the_fix(backend, vectorized):
    fit = _fit(lambda x, a, b: torch.round(a * x + b).long(), backend=backend,
               vectorized=vectorized)  # fmt: skip
    with pytest.raises(ValueError, match=r"model_fn returned a torch tensor of int64 values "
                       r"for .*flat between integers.*before the round or \.long\(\)/\.int\(\)"
                       ) as err:  # fmt: skip
        fit.run()
    assert "no gradient" not in str(err.value) and "vectorized='auto'" not in str(err.value)
    assert not hasattr(fit, "result_")


def test_a_boolean_tensor_is_refused_with_torch_where():
    with pytest.raises(
        ValueError,
        match=r"torch tensor of bool values for dataset 'dataset 0' .*torch\.where\(cond",
    ):
        _fit(lambda x, a, b: torch.sigmoid(a * x + b) > 0.5).run()


def test_a_detached_float_tensor_names_what_cuts_the_gradient():
    with pytest.raises(ValueError, match=r"returned a float64 tensor with no gradient "
                       r"\(requires_grad is False\).*without \.detach\(\)"):  # fmt: skip
        _fit(lambda x, a, b: (a * torch.as_tensor(x) + b).detach()).run()
