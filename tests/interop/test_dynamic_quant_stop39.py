"""``quantize_dynamic(..., exclude=...)`` with nested or repeated paths: excluded, not lost (stop 39).

Before: ``exclude=["0.0", "0"]`` (a module, then its parent) set the child aside,
then the parent, and put them back in the same order: the child went back into
the placeholder ``nn.Identity``, and the parent came back holding an
``nn.Identity`` where its Linear was. The excluded Linear was gone (outputs 0.76
away from the float model), with no error; with ``inplace=True`` the user's own
module lost it too.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig
from torch.ao.quantization import quantize_dynamic as torch_quantize_dynamic

import tying
from tying.interop.quantization import quantize_dynamic

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _nested(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8))),
        nn.Linear(8, 8),
        nn.Sequential(nn.Linear(8, 8), nn.Tanh()),
    )


def _by_name(model: nn.Module, names) -> nn.Module:
    """Anchor: plain torch, quantizing the named Linear modules only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_quantize_dynamic(
            copy.deepcopy(model), {n: default_dynamic_qconfig for n in names}
        )


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("exclude", [["0.0", "0"], ["0.2.0", "0.2", "0"], ["0", "0.0", "0"]])
def test_a_path_excluded_with_its_parent_stays_its_float_module(exclude, inplace):
    m = _nested()
    linear = m[0][0]
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    q = quantize_dynamic(m, {nn.Linear}, exclude=exclude, inplace=inplace)
    assert type(q[0][0]) is nn.Linear and type(q[0][2][0]) is nn.Linear  # before: nn.Identity
    assert (q[0][0] is linear) == inplace and torch.equal(q[0][0].weight, linear.weight)
    assert m[0][0] is linear and type(m[0][2][0]) is nn.Linear  # the user's module too
    want = _by_name(_nested(), ["1", "2.0"])
    assert torch.equal(q(x), want(x))  # before: 0.76 away


def test_an_exclude_item_that_is_not_a_path_is_a_type_error_before_any_change():
    m = _nested()
    before = [type(mod) for mod in m.modules()]
    with pytest.raises(TypeError, match=r"exclude must hold module paths \(str\), got Linear"):
        quantize_dynamic(m, {nn.Linear}, exclude=[m[1]], inplace=True)
    assert [type(mod) for mod in m.modules()] == before


def test_a_tied_stack_inside_an_excluded_block_stays_tied_and_float():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)), nn.ReLU(), nn.Linear(8, 4)
    )
    tying.Plan([tying.share("0.2", like="0.0")]).apply(m)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    q = quantize_dynamic(m, {nn.Linear}, exclude=["0.2", "0.0", "0"])
    assert tying.verify(q) == 2 and q[0][2].weight is q[0][0].weight
    untied = copy.deepcopy(m)
    tying.untie(untied)
    assert torch.equal(q(x), _by_name(untied, ["2"])(x))


_LINEARS = ["0.0", "0.2.0", "1", "2.0"]
_PATHS = ["0", "0.0", "0.2", "0.2.0", "1", "2", "2.0"]


@settings(derandomize=True, deadline=None, max_examples=25)
@given(exclude=st.lists(st.sampled_from(_PATHS), max_size=6))
def test_any_exclude_list_quantizes_exactly_the_linears_outside_it(exclude):
    # the kind of defect: an exclude list whose order or overlap changes what is quantized
    m = _nested()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    q = quantize_dynamic(m, {nn.Linear}, exclude=exclude)

    def covered(p: str) -> bool:
        return any(p == e or p.startswith(e + ".") for e in exclude)

    keep = [p for p in _LINEARS if not covered(p)]
    assert [p for p in _LINEARS if type(q.get_submodule(p)) is nn.Linear] == sorted(
        set(_LINEARS) - set(keep)
    )
    assert torch.equal(q(x), _by_name(m, keep)(x))
