"""The collectives the loops use, on the backend's device: NCCL reduces CUDA tensors only,
while the loops keep their counts and metrics (loss sums, the NaN guard's flags, the
preemption flag) on the CPU."""

import math

import pytest
import torch
import torch.distributed as dist

from plus import distributed, training
from plus.distributed import Dist, all_reduce_sum, collective_device


def one_process_group(backend: str, device: str):
    """A real process group of this process alone; a Dist that says 2 processes, so the
    helpers take their collective path (a sum over one process is the value itself)."""
    store = dist.HashStore()
    dist.init_process_group(backend, store=store, rank=0, world_size=1,
                            **({"device_id": torch.device(device)} if backend == "nccl" else {}))
    return Dist(rank=0, local_rank=0, world_size=2)


@pytest.fixture
def gloo():
    ctx = one_process_group("gloo", "cpu")
    yield ctx
    dist.destroy_process_group()


def test_collective_device_follows_the_backend(gloo, monkeypatch):
    assert collective_device(gloo) == torch.device("cpu")
    monkeypatch.setattr(distributed.dist, "get_backend", lambda *a: "nccl")
    assert collective_device(Dist(rank=3, local_rank=1, world_size=4)) == torch.device("cuda", 1)


def test_all_reduce_sum_returns_a_new_tensor_where_the_input_was(gloo):
    x = torch.tensor([1.5, 2.0], dtype=torch.float64)
    y = all_reduce_sum(gloo, x)
    assert y.device == x.device and y.dtype == x.dtype and torch.equal(y, x)
    y += 1
    assert torch.equal(x, torch.tensor([1.5, 2.0], dtype=torch.float64))  # the input is untouched


@pytest.mark.skipif(not (torch.cuda.is_available() and dist.is_nccl_available()), reason="needs CUDA and NCCL")
def test_cpu_counts_reduce_under_nccl():
    """What the loops reduce, given as CPU tensors, under NCCL (which refuses CPU tensors)."""
    ctx = one_process_group("nccl", "cuda:0")
    try:
        assert all_reduce_sum(ctx, torch.tensor(7)).item() == 7                     # SFT's token count
        assert all_reduce_sum(ctx, torch.tensor([0.5], dtype=torch.float64)).device.type == "cpu"
        training.check_finite(ctx, "sft", 1, None, loss=1.0, grad_norm=2.0)
        with pytest.raises(FloatingPointError, match="step 1: loss is nan"):
            training.check_finite(ctx, "sft", 1, None, loss=math.nan, grad_norm=2.0)
        with training.StopOnSignal() as stop:
            assert not stop.requested(ctx)
            stop.flag = True
            assert stop.requested(ctx)
    finally:
        dist.destroy_process_group()
