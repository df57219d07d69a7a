"""Stop 61: per-example gradients of a ``torch.compile``'d model with a relation tie.

``per_example_grads`` (and ``DPSGD(mode="vmap")``) on ``torch.compile(model)`` of a model
with a ``Transposed`` tie crashed with torch's ``InternalTorchDynamoError`` (dynamo traced
the tie's source check, ``gc.get_referrers``, under vmap), naming neither the model nor a
fix; torch's own ``vmap(grad(functional_call(compiled, ...)))`` runs. The forward under
vmap is now the compiled module's eager original (vmap gains nothing from the graph).
"""

from __future__ import annotations

import pytest
import torch

from tests.train.models import TiedAE, loop_grads, mse
from tying.train import DPSGD, per_example_grads


def test_a_compiled_transposed_tie_gives_the_loops_per_example_gradients():
    model = TiedAE()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = loop_grads(model, mse, x, x)
    compiled = torch.compile(model, backend="eager")
    got = per_example_grads(compiled, mse, x, x)  # was: InternalTorchDynamoError
    assert sorted(got) == sorted(f"_orig_mod.{n}" for n in want)  # the compiled names
    for name, g in want.items():
        torch.testing.assert_close(got[f"_orig_mod.{name}"], g)


def test_dpsgd_steps_a_compiled_tied_model_and_the_tie_holds():
    model = TiedAE()
    compiled = torch.compile(model, backend="eager")
    dp = DPSGD(compiled, torch.optim.SGD(compiled.parameters(), lr=0.1), noise_multiplier=1.0,
               max_grad_norm=1.0, sample_rate=0.5, generator=torch.Generator().manual_seed(1))  # fmt: skip
    x = torch.randn(3, 6, dtype=torch.float64)
    before = model.enc.weight.detach().clone()
    dp.step(mse, x, x)
    assert not torch.equal(model.enc.weight, before)
    torch.testing.assert_close(model.dec.weight, model.enc.weight.t())


def test_opacus_hooks_refuse_a_compiled_relation_tie_and_the_advice_runs():
    import warnings

    import pytest

    pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
    from tying.train import grad_sample_module

    model = TiedAE()
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(ValueError, match=r"slot _orig_mod.dec.weight is computed through a "
                       r"relation.*grad_sample_module\(model._orig_mod, \.\.\.\)"):  # fmt: skip
        grad_sample_module(compiled, loss_reduction="sum")  # was: RecursionError at forward
    assert not any(h for m in model.modules() for h in (m._forward_hooks, m._backward_hooks))
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gsm = grad_sample_module(compiled._orig_mod, loss_reduction="sum")  # the advice
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            mse(gsm(x), x).sum().backward()
        got = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    finally:
        gsm._close()
    want = loop_grads(model, mse, x, x)
    for name, g in want.items():
        torch.testing.assert_close(got[name], g)


def _compiled_in_place():
    model = TiedAE()
    model.compile(backend="eager")  # nn.Module.compile: no wrapper, no _orig_mod
    return model


def _compiled_child():
    return torch.nn.Sequential(torch.compile(TiedAE(), backend="eager"))


@pytest.mark.parametrize("make", [_compiled_in_place, _compiled_child], ids=["in-place", "child"])
def test_a_transposed_tie_compiled_in_place_or_as_a_child_gives_the_loops_gradients(make):
    # review 61: NotImplementedError (TensorWrapper storage) / InternalTorchDynamoError
    model = make()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = loop_grads(model, mse, x, x)
    got = per_example_grads(model, mse, x, x)
    assert sorted(got) == sorted(want)
    for name, g in want.items():
        torch.testing.assert_close(got[name], g)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
               max_grad_norm=1.0, sample_rate=0.5, generator=torch.Generator().manual_seed(1))  # fmt: skip
    dp.step(mse, x, x)
    tied = model if hasattr(model, "enc") else model[0]._orig_mod
    torch.testing.assert_close(tied.dec.weight, tied.enc.weight.t())


def _opacus_grads_or_refusal(model, compiled_as):
    """Review 61: a compiled part (in place, or a compiled child) under Opacus' hooks."""
    import warnings

    import pytest

    pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
    from tying.train import grad_sample_module

    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gsm = grad_sample_module(compiled_as, loss_reduction="sum")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            mse(gsm(x), x).sum().backward()
        got = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    finally:
        gsm._close()
    for name, g in loop_grads(model, mse, x, x).items():
        torch.testing.assert_close(got[name], g)


def test_opacus_hooks_refuse_a_compiled_child_and_the_advice_runs():
    import pytest

    pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
    from tying.train import grad_sample_module

    model = TiedAE()
    outer = torch.nn.Sequential(torch.compile(model, backend="eager"))
    with pytest.raises(ValueError, match=r"0 is torch.compile's wrapper.*slot 0._orig_mod.dec."
                       r"weight.*setattr\(model, '0', model.get_submodule\('0'\)._orig_mod\)"):  # fmt: skip
        grad_sample_module(outer, loss_reduction="sum")  # was: RecursionError at forward
    assert not any(h for m in model.modules() for h in (m._forward_hooks, m._backward_hooks))
    setattr(outer, "0", outer.get_submodule("0")._orig_mod)  # the advice
    _opacus_grads_or_refusal(model, outer)


def test_opacus_hooks_refuse_a_model_compiled_in_place_and_the_advice_runs():
    import pytest

    pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
    from tying.train import grad_sample_module

    model = TiedAE()
    model.compile(backend="eager")
    with pytest.raises(ValueError, match=r"the model is compiled in place.*slot dec.weight.*"
                       r"model._compiled_call_impl = None"):  # fmt: skip
        grad_sample_module(model, loss_reduction="sum")  # was: RecursionError at forward
    model._compiled_call_impl = None  # the advice
    _opacus_grads_or_refusal(model, model)
