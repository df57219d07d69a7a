"""Stop 56: layers under torch.func transforms.

``NeuralODE``/``odeint`` with the default ``method="dopri5"`` (torchdiffeq) failed under
``vmap`` with torch's "inplace arithmetic ... is not possible" and under ``grad``/``jacrev``
with "it must override the setup_context staticmethod": torch's words, deep inside
torchdiffeq, naming neither the layer nor the fix. It is refused by name now, and the
``rk4`` route it names works under both transforms (checked against the batched call and
autograd's gradient).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jacrev, vmap

from tying.nn import NeuralODE, VectorField, odeint

pytest.importorskip("torchdiffeq")

_REFUSED = r"odeint: method='dopri5' \(torchdiffeq\) does not run under torch\.func.*method='rk4'"


def _ode(method: str) -> NeuralODE:
    torch.manual_seed(0)
    return NeuralODE(VectorField(3, 6), method=method, steps=4).double()


def test_dopri5_under_vmap_is_refused_by_name():
    ode, x = _ode("dopri5"), torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=_REFUSED):
        vmap(ode)(x)


def test_dopri5_under_jacrev_is_refused_by_name():
    ode, x = _ode("dopri5"), torch.randn(4, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in ode.named_parameters()}
    with pytest.raises(ValueError, match=_REFUSED):
        jacrev(lambda p: functional_call(ode, p, (x,)).sum())(params)
    with pytest.raises(ValueError, match=_REFUSED):  # the function too, not only the layer
        vmap(lambda x0: odeint(lambda s: -s, x0, 0.5))(x)


def test_rk4_runs_under_vmap_and_jacrev_as_eager():
    ode, x = _ode("rk4"), torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(vmap(ode)(x), ode(x), atol=1e-12)
    params = {k: v.detach() for k, v in ode.named_parameters()}
    jac = jacrev(lambda p: functional_call(ode, p, (x,)).sum())(params)
    ode(x).sum().backward()
    for name, p in ode.named_parameters():
        assert torch.allclose(jac[name], p.grad, atol=1e-12), name


def test_dopri5_outside_transforms_still_matches_rk4():
    ode, x = _ode("dopri5"), torch.randn(4, 3, dtype=torch.float64)
    fine = NeuralODE(ode.field, method="rk4", steps=400)
    assert torch.allclose(ode(x), fine(x), atol=1e-8)


# Inductor's first import in a process warns of torch.jit.script_method's deprecation
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_dopri5_compiles_with_the_default_backend_as_a_graph_break():
    # torchdiffeq counts its steps with Tensor.unique (a value-dependent size): Inductor
    # failed with "LoweringException: DynamicOutputShapeException: aten._unique2"
    torch.manual_seed(0)
    ode = NeuralODE(VectorField(3, 4))
    x = torch.randn(2, 3, requires_grad=True)
    want = ode(x)
    want_grads = torch.autograd.grad(want.sum(), [x, *ode.parameters()])
    got = torch.compile(ode)(x)
    got_grads = torch.autograd.grad(got.sum(), [x, *ode.parameters()])
    assert torch.allclose(got, want, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.allclose(g, w, atol=1e-6)
