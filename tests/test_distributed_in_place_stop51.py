"""Stop 51: a parameter changed in place after ``td.ddp`` (dtype, shape) is refused.

DDP's reducer keeps the buckets it built, with each parameter's shape and dtype.
``model.double()`` (or ``.to(torch.bfloat16)``) after wrapping keeps every Parameter object
and swaps its data: on two gloo ranks the ranks then trained apart, 0.25 apart after two
steps, with no error (plain ``DistributedDataParallel`` does the same). A Hugging Face
``resize_token_embeddings`` after wrapping swaps the embedding's data for a larger one:
the backward failed with a bare autograd error, ``Function TBackward0 returned an invalid
gradient at index 0 - got [24, 8] but expected shape compatible with [20, 8]``. The
wrapped model's check at each training forward compared the parameters by identity only;
it now compares their shapes, dtypes and devices too, and refuses before the forward runs.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tying
import tying.distributed as td
from tests.test_distributed_stateful_stop49 import _cpu_mesh, physical, reference_forward, tied
from tests.test_distributed_stop37 import init, port

pytestmark = [
    pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default"),
    pytest.mark.filterwarnings("ignore:FSDP2-wrapped module"),  # a Linear unit returns a view
]
X = torch.arange(12).reshape(2, 6)
CHANGED = (
    r"tying\.distributed\.ddp: the model's parameters changed after it was wrapped \(replaced "
    r"or removed: none; new: none; changed in place: {}.*resize \(resize_token_embeddings\) "
    r"and dtype or device change \(model\.to\(\.\.\.\)\) before td\.ddp\(model\)"
)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m.double(), r"emb\.weight \(12, 6\) float32 -> \(12, 6\) float64"),
        (lambda m: m.to(torch.bfloat16), r"emb\.weight \(12, 6\) float32 -> \(12, 6\) bfloat16"),
        (  # what transformers' resize_token_embeddings does to a tied embedding
            lambda m: setattr(m.emb.weight, "data", torch.zeros(14, 6)),
            r"emb\.weight \(12, 6\) float32 -> \(14, 6\) float32\)",
        ),
    ],
    ids=["double", "bfloat16", "resized"],
)
def test_a_parameter_changed_in_place_after_ddp_is_refused(group, change, named):
    model = tied(0)
    wrapped = td.ddp(model)
    change(model)
    with pytest.raises(tying.TieError, match=CHANGED.format(named)):
        wrapped(X)


def test_the_same_shape_and_dtype_in_new_storage_trains_on(group):
    model = tied(0)
    wrapped = td.ddp(model)
    with torch.no_grad():  # new storage, same layout: DDP copies into its buckets as before
        model.emb.weight.data = model.emb.weight.data.clone()
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.3)
    wrapped(X).pow(2).mean().backward()
    opt.step()
    ref = physical(tied(0))
    leaves = {k: v.clone().requires_grad_(True) for k, v in ref.items()}
    reference_forward(leaves, X).pow(2).mean().backward()
    for name, leaf in leaves.items():
        expected = leaf.detach() - 0.3 * leaf.grad
        torch.testing.assert_close(physical(model)[name], expected, rtol=1e-5, atol=1e-6)


def test_fully_shard_trains_a_dtype_change_after_sharding(group):
    """FSDP2 re-shards on a dtype change itself (two ranks agreed with float64 plain torch
    to 1e-7): nothing to refuse there."""
    model = td.fully_shard(tied(0), units=["layers.*"], mesh=_cpu_mesh())
    model.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    model(X).pow(2).mean().backward()
    opt.step()
    ref = {k: v.double() for k, v in physical(tied(0)).items()}
    leaves = {k: v.clone().requires_grad_(True) for k, v in ref.items()}
    reference_forward(leaves, X).pow(2).mean().backward()
    got = physical(model)
    for name, leaf in leaves.items():
        torch.testing.assert_close(got[name], leaf.detach() - 0.3 * leaf.grad)


def _worker(rank: int, port_: int, out: str) -> None:
    init(rank, port_)
    model = tied(0)
    wrapped = td.ddp(model)
    model.double()
    try:
        wrapped(X[rank : rank + 1]).pow(2).mean().backward()
        seen = "trained"
    except tying.TieError as err:
        seen = str(err)
    with open(os.path.join(out, f"r{rank}.json"), "w") as fh:
        json.dump(seen, fh)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter finalization, where gloo's threads can abort


@pytest.mark.slow  # two spawned processes; the one-process tests above are its CI size
def test_two_ranks_refuse_a_dtype_change_after_ddp(tmp_path):
    mp.start_processes(_worker, args=(port(), str(tmp_path)), nprocs=2, start_method="forkserver")
    for rank in (0, 1):  # the old code trained on: the ranks 0.25 apart after two steps
        with open(tmp_path / f"r{rank}.json") as fh:
            seen = json.load(fh)
        assert "changed in place: emb.weight (12, 6) float32 -> (12, 6) float64" in seen
