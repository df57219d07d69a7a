"""Stop 51: two forwards before their backwards, with a tie across FSDP units, train right.

A tie's reader in another unit than its owner reads the owner's gathered storage in its
backward. ``td.fully_shard`` keeps the owner gathered after its forward, and FSDP2 reshards
it in the owner's own backward. With two forwards before their backwards (a summed loss of
two forwards, a Siamese or contrastive pair, or ``la.backward(); lb.backward()`` in either
order) the owner's backward of one forward resharded it before the reader's backward of
the other, which failed inside FSDP2: ``setStorage: sizes [6, 6] ... out of bounds for
storage of size 0``. The reader's backward now gathers the owner again first. Every order
is checked against plain torch with the ties written out by hand.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tying.distributed as td
from tests.test_distributed_stateful_stop49 import (
    PHYSICAL,
    _cpu_mesh,
    physical,
    reference_forward,
    tied,
)
from tests.test_distributed_stop37 import init, port

pytestmark = [
    pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default"),
    pytest.mark.filterwarnings("ignore:FSDP2-wrapped module"),
]
X = torch.arange(12).reshape(2, 6)
UNITS = [("layers.*",), ("layers.0", "head")]  # layers.1 reads layers.0 from another unit


def _summed(model, a, b):
    (model(a).pow(2).mean() + model(b).pow(2).mean()).backward()


def _in_order(model, a, b):
    la, lb = model(a).pow(2).mean(), model(b).pow(2).mean()
    la.backward()
    lb.backward()


def _reversed(model, a, b):
    la, lb = model(a).pow(2).mean(), model(b).pow(2).mean()
    lb.backward()
    la.backward()


def _with_an_evaluation_between(model, a, b):
    la = model(a).pow(2).mean()
    with torch.no_grad():
        model(b)
    lb = model(b).pow(2).mean()
    lb.backward()
    la.backward()


ORDERS = [_summed, _in_order, _reversed, _with_an_evaluation_between]


def _reference(steps, lr: float, ranks: int = 1) -> dict[str, torch.Tensor]:
    """Plain torch, one process: each step the summed loss of its forwards, over ``ranks``
    (FSDP2 averages the ranks' gradients)."""
    ref = physical(tied(0))
    for inputs in steps:
        leaves = {k: v.clone().requires_grad_(True) for k, v in ref.items()}
        loss = sum(reference_forward(leaves, x).pow(2).mean() for x in inputs) / ranks
        loss.backward()
        ref = {k: (v - lr * v.grad).detach() for k, v in leaves.items()}
    return ref


@pytest.mark.parametrize("order", ORDERS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("units", UNITS, ids=str)
def test_two_forwards_then_their_backwards_train_as_one_process(group, units, order):
    model = td.fully_shard(tied(0), units=units, mesh=_cpu_mesh())
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    a, b = X[:1], X[1:].flip(-1)
    for _ in range(2):
        opt.zero_grad()
        # the old code: RuntimeError: setStorage: sizes [6, 6], strides [1, 6], ... out of
        # bounds for storage of size 0 (the tie owner layers.0 resharded under layers.1)
        order(model, a, b)
        opt.step()
    ref = _reference([(a, b), (a, b)], 0.3)
    got = physical(model)
    for name in PHYSICAL:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6)
    assert all(hasattr(p, "full_tensor") for p in model.parameters())  # resharded after


def test_gradient_accumulation_without_sync_over_two_pending_forwards(group):
    model = td.fully_shard(tied(0), units=["layers.*"], mesh=_cpu_mesh())
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    a, b = X[:1], X[1:]
    model.set_requires_gradient_sync(False)  # FSDP2's no_sync: accumulate unsharded
    _reversed(model, a, a.flip(-1))
    model.set_requires_gradient_sync(True)
    _reversed(model, b, b.flip(-1))
    opt.step()
    ref = _reference([(a, a.flip(-1), b, b.flip(-1))], 0.3)
    got = physical(model)
    for name in PHYSICAL:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6)


def _worker(rank: int, port_: int, out: str) -> None:
    init(rank, port_)
    from torch.distributed.device_mesh import init_device_mesh

    got = {}
    for units in UNITS:
        for order in ORDERS:
            model = td.fully_shard(tied(0), units=units, mesh=init_device_mesh("cpu", (2,)))
            opt = torch.optim.SGD(model.parameters(), lr=0.3)
            x = X[rank : rank + 1]
            for _ in range(2):
                opt.zero_grad()
                order(model, x, x.flip(-1))
                opt.step()
            got[f"{units}{order.__name__}"] = {k: v.tolist() for k, v in physical(model).items()}
    with open(os.path.join(out, f"r{rank}.json"), "w") as fh:
        json.dump(got, fh)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter finalization, where gloo's threads can abort


@pytest.mark.slow  # two spawned processes; the one-process tests above are its CI size
def test_two_ranks_train_two_pending_forwards_as_one_process(tmp_path):
    mp.start_processes(_worker, args=(port(), str(tmp_path)), nprocs=2, start_method="forkserver")
    # the mean over the ranks of each rank's summed pair, in one process
    pairs = [(X[r : r + 1], X[r : r + 1].flip(-1)) for r in (0, 1)]
    ref = _reference([pairs[0] + pairs[1]] * 2, 0.3, ranks=2)
    for rank in (0, 1):
        with open(tmp_path / f"r{rank}.json") as fh:
            seen = json.load(fh)
        assert len(seen) == len(UNITS) * len(ORDERS)
        for key, got in seen.items():
            for name in PHYSICAL:
                torch.testing.assert_close(
                    torch.tensor(got[name]), ref[name], rtol=1e-5, atol=1e-6, msg=key
                )
