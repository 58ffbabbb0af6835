"""torchrun plumbing: process groups, rank-aware printing, sharding.

`torchrun --nproc_per_node=N train.py ...` starts N copies of the script with RANK,
LOCAL_RANK and WORLD_SIZE in the environment. `python train.py` is the same program with
a world of one, and every helper here degrades to a no-op then, so the stage loops never
branch on "am I distributed?" beyond what they must.

Backends: NCCL for CUDA tensors, gloo for CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: str) -> Dist:
    """Join the process group that torchrun described in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, local_rank, world_size)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def print0(ctx: Dist, *args, **kwargs) -> None:
    if ctx.is_main:
        print(*args, **kwargs, flush=True)


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(ctx: Dist, x: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returns a new tensor; identity in a world of one)."""
    if not ctx.enabled:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def rank_slice(ctx: Dist, n: int) -> slice:
    """This rank's contiguous share of n items (n must divide evenly)."""
    if n % ctx.world_size:
        raise ValueError(f"{n} items do not split evenly over {ctx.world_size} processes")
    per = n // ctx.world_size
    return slice(ctx.rank * per, (ctx.rank + 1) * per)
