"""Train an ALBERT-style tied model with FSDP2 on several processes, save, restore.

    torchrun --standalone --nproc-per-node 2 examples/train_distributed.py /tmp/ckpt.safetensors

CPU (gloo) here, also on a machine with GPUs (the device mesh is a CPU one); on GPUs use
backend "nccl", a "cuda" mesh, and move the model to the rank's device.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh

import tying
import tying.distributed as td


def build() -> nn.Module:
    torch.manual_seed(0)  # identical initial weights on every rank
    model = nn.Sequential(
        *[nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(6)], nn.Linear(16, 1)
    )
    tying.Plan([tying.share("*.0", like="0.0")]).apply(model)  # blocks 1..5 read block 0
    return model


def main(path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    # the mesh says CPU: FSDP2's default mesh is CUDA's wherever a GPU is seen, and gloo
    # then fails inside FSDP's set-up
    mesh = init_device_mesh("cpu", (world,))
    model = td.fully_shard(build(), units=["*"], mesh=mesh)  # one FSDP unit per block, ties kept
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=gen)
    y = x.sum(dim=1, keepdim=True).sin()
    for _ in range(50):
        opt.zero_grad()
        loss = (model(x[rank::world]) - y[rank::world]).pow(2).mean()
        loss.backward()
        opt.step()
    td.save(model, path)  # collective; rank 0 writes
    if rank == 0:
        fresh = build()
        tying.untie(fresh)  # any world size, tied or not: the file carries the ties
        tying.load(fresh, path)
        print(
            f"loss {loss.item():.4f}; restored {len(tying.ties(fresh))} ties; {tying.count(fresh).ratio:.2f}x sharing"
        )
    dist.barrier()  # no rank tears the group down while another still uses it
    dist.destroy_process_group()
    print(f"rank {rank} destroyed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ckpt.safetensors")
