"""Stop 62: ``per_example_norms`` named bad input instead of failing inside.

A list of per-example gradients failed with ``AttributeError: 'list' object has no
attribute 'items'``, an integer tensor inside torch (``linalg.vector_norm: Expected a
floating point or complex tensor as input. Got Long``), a number with an AttributeError.
``poisson_batches(torch.tensor(10), ...)`` was refused naming no fix (``int(value.item())``).
"""

from __future__ import annotations

import pytest
import torch

from tying.train import per_example_norms


def test_a_list_is_told_the_dict_and_the_advice_runs():
    grads = [torch.tensor([[3.0], [0.0]]), torch.tensor([[4.0], [1.0]])]
    with pytest.raises(
        TypeError, match=r"must be a dict .* got list; .*dict\(enumerate\(grads\)\)"
    ):
        per_example_norms(grads)
    torch.testing.assert_close(per_example_norms(dict(enumerate(grads))), torch.tensor([5.0, 1.0]))


@pytest.mark.parametrize(
    ("entry", "kind"), [(torch.ones(2, 3, dtype=torch.int64), "torch.int64"), (3.0, "float")]
)
def test_an_entry_that_is_not_a_float_tensor_is_named(entry, kind):
    with pytest.raises(TypeError, match=rf"'b' is {kind}; .*floating-point tensor.*\.float\(\)"):
        per_example_norms({"a": torch.ones(2, 3), "b": entry})
    fixed = per_example_norms(
        {"a": torch.ones(2, 3), "b": torch.ones(2, 3, dtype=torch.int64).float()}
    )
    torch.testing.assert_close(fixed, torch.full((2,), 6.0).sqrt())


def test_complex_and_low_precision_entries_are_still_taken():
    norms = per_example_norms({"a": torch.ones(2, 3, dtype=torch.complex64)})
    torch.testing.assert_close(norms, torch.full((2,), 3.0).sqrt())
    wide = per_example_norms({"a": torch.full((2, 300), 100.0, dtype=torch.bfloat16)})
    assert torch.allclose(wide.float(), torch.full((2,), 100 * 300**0.5), rtol=1e-2)


@pytest.mark.parametrize("name", ["n", "steps"])
def test_poisson_batches_tell_a_one_element_tensor_its_fix(name):
    from tying.train import poisson_batches

    args = {"n": 10, "steps": 2, name: torch.tensor(10 if name == "n" else 2)}
    with pytest.raises(
        ValueError, match=rf"{name} must be an int >= 0, got tensor.*{name}=int\(value.item\(\)\)"
    ):
        next(poisson_batches(args["n"], 0.5, args["steps"]))
    args[name] = int(args[name].item())  # the advice
    assert len(list(poisson_batches(args["n"], 0.5, args["steps"]))) == 2
