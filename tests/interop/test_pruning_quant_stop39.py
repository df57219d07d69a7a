"""``tying.interop.pruning.prune`` on one module seated at several paths: pruned, not refused (stop 39).

Before: ``prune(Sequential(lin, ReLU(), lin), "2.weight", ...)`` was refused as a
"hand-made tie" (the one Parameter is found under ``0.weight`` and ``2.weight``),
and the fix it printed (``free`` one path, then ``share`` it back) would have split
the module's two seats into two tensors. One module holds one hook and one mask,
so every seat reads the mask: plain torch prunes it right, and so does ``prune``
now. A Parameter held by two *different* modules is still refused.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as torch_prune

import tying
from tying.interop.pruning import prune


def _seated(seats: int, seed: int = 0) -> nn.Sequential:
    """One Linear at ``seats`` positions, ReLU between them, a head after."""
    torch.manual_seed(seed)
    lin, head = nn.Linear(6, 6), nn.Linear(6, 3)
    layers: list[nn.Module] = []
    for _ in range(seats):
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers, head)


def test_a_module_seated_twice_is_pruned_once_and_every_seat_reads_the_mask():
    m, ref = _seated(2), _seated(2)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    assert prune(m, "2.weight", torch_prune.l1_unstructured, amount=0.5) == "2.weight"
    torch_prune.l1_unstructured(ref[0], "weight", amount=0.5)  # anchor: plain torch
    assert m[0] is m[2] and int((m[2].weight == 0).sum()) == 18
    assert torch.equal(m(x), ref(x))
    for model in (m, ref):  # one training step: the gradient sums both seats through the mask
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model(x).pow(2).sum().backward()
        opt.step()
    assert torch.equal(m[0].weight_orig, ref[0].weight_orig) and torch.equal(m(x), ref(x))
    assert m[0] is m[2] and int((m[2].weight == 0).sum()) == 18  # the mask holds


def test_a_parameter_in_two_different_modules_is_still_refused_with_nothing_changed():
    m = _seated(2)
    other = nn.Linear(6, 6)
    other.weight = m[0].weight  # a hand-made tie: one Parameter, two modules
    m.append(other)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        tying.TieError, match=r"one nn.Parameter with '5.weight' \(a hand-made tie\)"
    ):
        prune(m, "2.weight", torch_prune.l1_unstructured, amount=0.5)
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    seats=st.integers(2, 3),
    pick=st.integers(0, 2),
    method=st.sampled_from(["l1_unstructured", "ln_structured"]),
    amount=st.sampled_from([0.25, 0.5, 2]),
    seed=st.integers(0, 2**16),
)
def test_pruning_any_seat_of_a_shared_module_equals_plain_torch_pruning_it(
    seats, pick, method, amount, seed
):
    # the kind of defect: a module (or tensor) reached at several paths pruned otherwise
    # than plain torch prunes the one module
    m, ref = _seated(seats, seed), _seated(seats, seed)
    kwargs = {"amount": amount, **({"n": 2, "dim": 0} if method == "ln_structured" else {})}
    path = f"{2 * min(pick, seats - 1)}.weight"
    prune(m, path, getattr(torch_prune, method), **kwargs)
    getattr(torch_prune, method)(ref[0], "weight", **kwargs)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(m(x), ref(x))
    assert all(m[2 * k] is m[0] for k in range(seats))
