"""torchrun plumbing: process groups, rank-aware printing, sharding, and the strategies
(DDP or FSDP) that spread a model over the processes.

`torchrun --nproc_per_node=N train.py ...` starts N copies of the script with RANK,
LOCAL_RANK and WORLD_SIZE in the environment. `python train.py` is the same program with
a world of one, and every helper here degrades to a no-op then, so the stage loops never
branch on "am I distributed?" beyond what they must.

Backends: NCCL for CUDA tensors, gloo for CPU.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
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


def collective_device(ctx: Dist) -> torch.device:
    """Where a tensor must be for a collective: NCCL reduces CUDA tensors only (this
    process's GPU), gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cpu")


def all_reduce_sum(ctx: Dist, x: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks: a new tensor on x's device (identity in a world of one).
    The loops keep their counts and metrics on the CPU; under NCCL they travel through
    the GPU for the reduction."""
    if not ctx.enabled:
        return x
    reduced = x.to(collective_device(ctx), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(x.device)


def all_reduce_grads(ctx: Dist, model: torch.nn.Module) -> None:
    """Sum every parameter's gradient over ranks, in place, in one flat reduction (nothing
    in a world of one). For a loop that scales each rank's loss by the *global* batch
    itself, so that the sum is the gradient one process would compute; DDP would average
    instead. A parameter without a gradient keeps none (the same on every rank)."""
    if not ctx.enabled:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    summed = all_reduce_sum(ctx, torch.cat([g.reshape(-1) for g in grads]))
    for g, part in zip(grads, summed.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def gather_lists(ctx: Dist, items: list) -> list:
    """Every rank's list (of picklable items), concatenated in rank order: with contiguous
    shares (`rank_slice`) the global list as one process holds it."""
    if not ctx.enabled:
        return list(items)
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def rank_slice(ctx: Dist, n: int) -> slice:
    """This rank's contiguous share of n items (n must divide evenly)."""
    if n % ctx.world_size:
        raise ValueError(f"{n} items do not split evenly over {ctx.world_size} processes")
    per = n // ctx.world_size
    return slice(ctx.rank * per, (ctx.rank + 1) * per)


# ---- strategies: how a model is spread over the processes --------------------------------
# "ddp": every process holds the whole model; gradients are all-reduced (averaged).
# "fsdp": every process holds 1/N of the parameters, gradients and optimizer state
# (plus/fsdp.py). The helpers below let one training loop serve both.

STRATEGIES = ("ddp", "fsdp")


def wrap_model(model: torch.nn.Module, ctx: Dist, strategy: str = "ddp", param_dtype: torch.dtype | None = None):
    """The module the loop calls: DDP (or the model itself in a world of one), or FSDP.

    FSDP replaces the model's parameters by this process's shards in place, so build the
    optimizer *after* wrapping, from model.parameters(). It runs in a world of one too
    (its collectives become copies). `param_dtype`: FSDP's compute dtype (bf16 mixed
    precision); the shards stay float32."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    if strategy == "fsdp":
        from plus.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, param_dtype=param_dtype)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    return model


def _is_fsdp(wrapped) -> bool:
    from plus.fsdp import FullyShardedDataParallel

    return isinstance(wrapped, FullyShardedDataParallel)


def clip_grad_norm(wrapped: torch.nn.Module, max_norm: float) -> float:
    """Clip the gradient of all parameters to `max_norm` (FSDP: the norm over every
    process's shards); returns the norm before clipping."""
    if _is_fsdp(wrapped):
        return float(wrapped.clip_grad_norm_(max_norm))
    return float(torch.nn.utils.clip_grad_norm_(wrapped.parameters(), max_norm))


def full_params(wrapped: torch.nn.Module):
    """A context for inference loops whose length may differ between processes (sampling,
    evaluating uneven shares): FSDP gathers the whole model once, so the forwards inside
    make no collectives. Nothing to do for a replicated model."""
    return wrapped.summon_full_params() if _is_fsdp(wrapped) else nullcontext()


def gather_for_save(wrapped: torch.nn.Module, optimizer=None) -> tuple[dict | None, object]:
    """(weights, optimizer state) as a checkpoint stores them. FSDP: the full weights and
    every process's optimizer shard, gathered onto rank 0 (every process must call this).
    A replicated model: (None, optimizer), and save_checkpoint reads both itself."""
    if not _is_fsdp(wrapped):
        return None, optimizer
    weights = wrapped.full_state_dict()
    return weights, (wrapped.optimizer_state_dict(optimizer) if optimizer is not None else None)


def load_optimizer_state(wrapped: torch.nn.Module, optimizer, state: dict) -> None:
    """Resume an optimizer saved through `gather_for_save`; a state saved under the other
    strategy is an error that says so."""
    if _is_fsdp(wrapped):
        wrapped.load_optimizer_state_dict(optimizer, state)
        return
    from plus.fsdp import FORMAT

    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise ValueError(f"the optimizer state was saved with --strategy fsdp over {state['world_size']} "
                         "processes; resume with --strategy fsdp")
    optimizer.load_state_dict(state)
