"""Step time and per-process memory of training under DDP, this project's FSDP
(plus/fsdp.py) and torch's FSDP2 (`torch.distributed.fsdp.fully_shard`).

    python -m benchmarks.bench_fsdp                                     # both models, 2 gloo processes on the CPU
    python -m benchmarks.bench_fsdp --models demo --steps 10
    python -m benchmarks.bench_fsdp --device cuda --nproc 1 --strategies none fsdp   # the wrapper's cost at world size 1

Each (model, strategy) pair runs in fresh processes: random weights, a fixed random batch,
the pretraining loss of plus/sft.py, --accumulation micro-batches per step (all but the
last inside no_sync), gradient clipping to norm 1, AdamW. Strategies: "none" (the bare model,
one process), "ddp", "fsdp" (plus/fsdp.py; bf16 compute with --bf16 on CUDA), "fsdp2".
Reported for rank 0 (the ranks wait for each other at every collective, so their step
times agree):

  step_s    median wall time of a step, after --warmup steps
  state_MB  parameters + gradients + optimizer state held by the process after a step
            (counted tensor bytes; FSDP2: the local shards of its DTensors)
  mem_MB    CPU: resident memory of the process after the steps (/proc/self/statm:
            everything, torch's libraries, the whole model each process builds before
            sharding it, and freed pages the allocator kept, included); CUDA:
            torch.cuda.max_memory_allocated during the timed steps

Inside no_sync() FSDP keeps every unit's unreduced gradient, full size, until the last
micro-batch (as DDP does all the time), so its memory advantage shows best with
--accumulation 1.

Models: "demo" is train.py's MODEL_DEFAULTS (GPT-2 style, 4 layers, 128 wide, 2048-token
vocabulary, block 256: 1.09M parameters with the position table); "50m" is 12 layers, 576
wide, 9 heads, the same vocabulary (49.2M parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist

from plus import sft, training
from plus.gpt import GPT, GPTConfig

MODELS = {  # name -> (config, default micro-batch size, default sequence length)
    "demo": (dict(n_layer=4, n_head=4, n_embd=128), 8, 256),
    "50m": (dict(n_layer=12, n_head=9, n_embd=576), 2, 128),
}


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the distinct storages of the parameters, their gradients and the optimizer state."""
    from torch.distributed.tensor import DTensor

    storages = {}

    def add(t):
        if isinstance(t, DTensor):
            t = t.to_local()
        if torch.is_tensor(t) and t.numel():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()

    for p in model.parameters():
        add(p)
        add(p.grad)
    for state in optimizer.state.values():
        for t in state.values():
            add(t)
    return sum(storages.values())


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(rank: int, world: int, port: int, args, model_name: str, strategy: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    try:
        config, micro, seq = MODELS[model_name]
        micro, seq = args.micro_batch_size or micro, args.seq_len or seq
        torch.manual_seed(0)
        model = GPT(GPTConfig.gpt2_style(vocab_size=2048, block_size=256, **config)).to(device)
        n_params = model.num_params(non_embedding=False)
        bf16 = cuda and args.bf16
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
        wrapped, clip, no_sync = model, lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0), nullcontext
        if strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(model)
            no_sync = wrapped.no_sync
        elif strategy == "fsdp":
            from plus.fsdp import FullyShardedDataParallel

            wrapped = FullyShardedDataParallel(model, param_dtype=torch.bfloat16 if bf16 else None)
            clip, no_sync = (lambda: wrapped.clip_grad_norm_(1.0)), wrapped.no_sync
        elif strategy == "fsdp2":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mesh = init_device_mesh(device.type, (world,))
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
            kwargs = {"mesh": mesh, **({"mp_policy": policy} if policy else {})}
            for block in model.blocks:
                fully_shard(block, **kwargs)
            fully_shard(model, **kwargs)

            class NoSync:
                def __enter__(self):
                    model.set_requires_gradient_sync(False)

                def __exit__(self, *exc):
                    model.set_requires_gradient_sync(True)

            no_sync = NoSync
        optimizer = training.make_optimizer(model, 1e-4, 0.1)
        g = torch.Generator().manual_seed(rank)
        ids = torch.randint(0, 2048, (micro, seq + 1), generator=g)
        batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}

        times = []
        for step in range(args.warmup + args.steps):
            if step == args.warmup and cuda:
                torch.cuda.reset_peak_memory_stats()
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            for i in range(args.accumulation):
                with no_sync() if i < args.accumulation - 1 else nullcontext():
                    with autocast:  # the forward and the loss; backward outside
                        loss_sum, n = sft.sequence_loss_sum(wrapped, batch, device)
                    (loss_sum / n).backward()
            clip()
            optimizer.step()
            if cuda:
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        result = {"model": model_name, "strategy": strategy, "world": world, "params_M": n_params / 1e6,
                  "tokens_per_step": micro * seq * args.accumulation * world,
                  "step_s": statistics.median(times), "state_MB": state_bytes(model, optimizer) / 2 ** 20,
                  "mem_MB": (torch.cuda.max_memory_allocated() if cuda else resident_bytes()) / 2 ** 20}
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    p.add_argument("--strategies", nargs="+", choices=("none", "ddp", "fsdp", "fsdp2"),
                   default=["ddp", "fsdp", "fsdp2"])
    p.add_argument("--nproc", type=int, default=2, help="processes (gloo on the CPU, one GPU each on CUDA)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--bf16", action="store_true", help="CUDA: autocast bf16; FSDP and FSDP2 gather in bf16")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--accumulation", type=int, default=2, help="micro-batches per step")
    p.add_argument("--micro_batch_size", type=int, default=None, help="per process (default: the model's)")
    p.add_argument("--seq_len", type=int, default=None, help="tokens per sequence (default: the model's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = p.parse_args(argv)
    if "none" in args.strategies and args.nproc != 1:
        p.error("--strategies none (the bare model) runs in one process: add --nproc 1")

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.device}, "
          f"{args.nproc} processes x {args.threads} threads, {args.steps} timed steps after {args.warmup}")
    print("| model | parameters | strategy | tokens/step | step (s) | state per process (MB) "
          "| memory per process (MB) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            for strategy in args.strategies:
                out = os.path.join(tmp, f"{model_name}-{strategy}.json")
                torch.multiprocessing.spawn(worker, args=(args.nproc, free_port(), args, model_name, strategy, out),
                                            nprocs=args.nproc, join=True)
                with open(out) as f:
                    r = json.load(f)
                print(f"| {r['model']} | {r['params_M']:.2f}M | {r['strategy']} | {r['tokens_per_step']} | "
                      f"{r['step_s']:.3f} | {r['state_MB']:.1f} | {r['mem_MB']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
