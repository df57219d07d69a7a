"""Stop 52: a parameter moved to another device after ``td.ddp`` is refused at the next forward.

``model.cuda()`` / ``model.cpu()`` / ``model.to(device)`` after wrapping keeps each
``nn.Parameter`` object and swaps its data (torch's ``_apply`` sets ``param.data`` where the
two tensor types are compatible, as CPU and CUDA are). DDP's reducer keeps the buckets it
built, on the device the parameters had. The wrapped model's check at each training
forward (stop 51) named a device change only when the shape or dtype changed with it: its
quick test compared shapes and dtypes, so a device change alone passed unseen. It compares
devices too now. This machine has no second device, so the move is simulated by a
Parameter whose ``device`` reads as the new one (as ``.data`` swapped to CUDA would).
"""

from __future__ import annotations

import pytest
import torch

import tying
import tying.distributed as td
from tests.test_distributed_stateful_stop49 import physical, reference_forward, tied

X = torch.arange(12).reshape(2, 6)
MOVED = (
    r"tying\.distributed\.ddp: the model's parameters changed after it was wrapped \(replaced "
    r"or removed: none; new: none; changed in place: emb\.weight \(12, 6\) float32 -> \(12, 6\) "
    r"float32 on cuda:0\).*with the shapes, dtypes and devices they had.*device change "
    r"\(model\.to\(\.\.\.\)\) before td\.ddp\(model\)"
)


class Moved(torch.nn.Parameter):
    """A Parameter whose ``device`` reads as ``shown`` once set: ``.cuda()`` in place."""

    shown: torch.device | None = None

    @property
    def device(self):
        return self.shown or super().device


def moved_model() -> torch.nn.Module:
    model = tied(0)
    model.emb.weight = Moved(model.emb.weight.detach().clone())  # the tie's physical tensor
    tying.verify(model)
    return model


def test_a_parameter_moved_to_another_device_after_ddp_is_refused(group):
    model = moved_model()
    wrapped = td.ddp(model)
    model.emb.weight.shown = torch.device("cuda", 0)
    with pytest.raises(tying.TieError, match=MOVED):
        wrapped(X)


def test_the_same_device_trains_on_as_plain_torch(group):
    """The check refuses a move only: a Parameter that stays where it was trains as before."""
    model = moved_model()
    wrapped = td.ddp(model)
    model.emb.weight.shown = torch.device("cpu")  # read again, the same device
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.3)
    wrapped(X).pow(2).mean().backward()
    opt.step()
    leaves = {k: v.clone().requires_grad_(True) for k, v in physical(tied(0)).items()}
    reference_forward(leaves, X).pow(2).mean().backward()
    for name, leaf in leaves.items():
        expected = leaf.detach() - 0.3 * leaf.grad
        torch.testing.assert_close(physical(model)[name], expected, rtol=1e-5, atol=1e-6)
