"""Stop 53: a tied model wrapped in torch's own ``DistributedDataParallel`` (not ``td.ddp``).

With its ties left alone, plain DDP trains a Plan-tied model as the anchor does (each
physical tensor is one parameter, reduced once: 3e-8 from an untied model tied by hand,
2 ranks, 3 SGD steps). A tie removed after wrapping (``tying.untie``, ``Plan.apply`` of
``tying.free``) was accepted, since plain DDP leaves no mark on the model, and the new copy
trained apart on every rank with no error (``mid2.weight`` 0.9586 from the anchor on rank
0, 0.9620 on rank 1). One-process gloo groups: the refusal needs no second rank.
"""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import tying
import tying.distributed as td

from .test_distributed_wrapping import AE

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")


def _tied() -> AE:
    torch.manual_seed(0)
    m = AE()
    tying.Plan(
        [
            tying.share("dec.weight", like="enc.weight", relation=tying.Transposed()),
            tying.share("mid2.weight", like="mid.weight", relation=tying.Rotated(k=1)),
        ]
    ).apply(m)
    return m


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("wrap", ["model", "submodule"])
def test_a_tie_change_under_plain_ddp_is_refused_and_the_model_kept(group, wrap):
    m = _tied()
    held = m if wrap == "model" else m.mid2
    wrapper = nn.parallel.DistributedDataParallel(held)
    before, names = _state(m), [n for n, _ in m.named_parameters()]
    at = "" if wrap == "model" else r" \(at 'mid2'\)"
    for change, what in [
        (lambda: tying.untie(m), "tying.untie"),
        (lambda: tying.Plan([tying.free("mid2.weight")]).apply(m), "Plan.apply"),
    ]:
        with pytest.raises(
            tying.TieError,
            match=rf"{what}: the model{at} is held by a torch DistributedDataParallel wrapper, "
            r"which all-reduces only the tensors it was built with.*drop the wrapper "
            r"\(inner = wrapped\.module; del wrapped\).*the model was left as it was",
        ):
            change()
        assert [n for n, _ in m.named_parameters()] == names
        after = m.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        tying.verify(m)
    # re-applying the same plan changes nothing and stays allowed
    tying.Plan([tying.share("mid2.weight", like="mid.weight", relation=tying.Rotated(k=1))]).apply(
        m
    )
    # the wrapper dropped (garbage until collected), the tie may change again
    del wrapper
    tying.untie(m)
    assert "mid2.weight" in dict(m.named_parameters())


def test_plain_ddp_of_another_model_does_not_block_a_tie_change(group):
    other = nn.parallel.DistributedDataParallel(_tied())
    m = _tied()
    tying.untie(m)
    assert "dec.weight" in dict(m.named_parameters())
    assert td.wrapped_by(other.module) is None  # a plain wrapper is no td.ddp
    del other
    gc.collect()
