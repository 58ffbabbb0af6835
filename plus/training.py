"""What every training loop here does alike: schedule, optimizer, data order, precision,
metrics, resume, the NaN guard.

The three loops (`sft.py` for pretraining and SFT, `reward_trainer.py`, `ppo.py`) each
read top to bottom in the order their paper describes; the pieces they share live here,
so each loop shows only what is particular to its stage.

* Schedule: linear warmup, then cosine decay to a floor (`lr_at`).
* Optimizer: AdamW with weight decay on matrices only (`make_optimizer`).
* Data order: a permutation per epoch that is a function of (seed, epoch) alone
  (`epoch_order`), so a run resumed at step k sees exactly the batches the uninterrupted
  run saw from step k on.
* Mixed precision (`autocast`): `--dtype bf16` runs the forward pass and the loss under
  `torch.autocast(device, bfloat16)` on CPU and CUDA alike; `backward()` runs outside it,
  as PyTorch's AMP recipe says. The master weights, the optimizer state and the gradients
  stay float32; log-probabilities, KL, rewards and values come out in float32.
* Metrics: one JSON object per line in `metrics.jsonl`; a resumed run first cuts the file
  back to its step (`truncate_metrics`).
* Resume: `load_resume_state` checks that a checkpoint belongs to the stage resuming it.
* The NaN guard (`check_finite`): a loss, score or gradient norm that is NaN or inf stops
  the run on every process, naming the step, the quantity and the last checkpoint saved,
  before the optimizer writes the bad values into the weights.
* The steps (`plan_steps`, `TrainingSteps`): the sizes derived from the data and the
  flags, then each step's learning rate, the periodic saves and preemption: SIGTERM, a
  cluster's notice that the job will be killed, lets the current step finish, saves a
  resumable checkpoint and ends the run with `Preempted`; `--resume` then continues as if
  nothing had happened.
"""

from __future__ import annotations

import json
import math
import signal
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from plus import checkpoint
from plus.distributed import Dist, all_reduce_sum, print0
from plus.fsdp import FullyShardedDataParallel

DTYPES = ("fp32", "bf16")


def lr_at(step: int, max_steps: int, lr: float, warmup: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup for `warmup` steps, then cosine decay to min_lr_ratio * lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW, betas (0.9, 0.95). Decay only the matrices (linear weights, embeddings);
    biases and norm gains keep their scale. Parameters are deduplicated, so a tied head is
    stepped once. FSDP's flat shards are 1-D; each says whether it holds matrices
    (plus/fsdp.py). On CUDA the fused implementation: one kernel for all parameters."""
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    matrix = [getattr(p, "holds_matrices", p.dim() >= 2) for p in params]
    groups = [
        {"params": [p for p, m in zip(params, matrix) if m], "weight_decay": weight_decay},
        {"params": [p for p, m in zip(params, matrix) if not m], "weight_decay": 0.0},
    ]
    fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=eps, **({"fused": True} if fused else {}))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP or FSDP wrapper (for its heads and config)."""
    return model.module if isinstance(model, (DistributedDataParallel, FullyShardedDataParallel)) else model


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of `n` examples in `epoch`: a permutation that depends on (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


def check_batch_sizes(train_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Gradient-accumulation steps per optimizer step: the global batch is micro batch x
    accumulation x processes, so the first must be a multiple of the other two."""
    per_step = micro_batch_size * world_size
    if train_batch_size % per_step:
        raise ValueError(f"--train_batch_size {train_batch_size} must be a multiple of "
                         f"--micro_train_batch_size x processes = {per_step}")
    return train_batch_size // per_step


def fit_batch_to_data(n: int, train_batch_size: int, micro_batch_size: int, world_size: int,
                      unit: str) -> tuple[int, int, str | None]:
    """(global batch, micro-batch, a note or None): a global batch larger than the data
    shrinks to the largest multiple of the processes that fits, and the micro-batch to a
    divisor of its share, so a small file trains on the first try; the note says so."""
    if n >= train_batch_size:
        return train_batch_size, micro_batch_size, None
    batch = n // world_size * world_size
    if batch == 0:
        raise ValueError(f"{n} {unit} cannot give each of the {world_size} processes one")
    share = batch // world_size
    micro = max(m for m in range(1, min(micro_batch_size, share) + 1) if share % m == 0)
    return batch, micro, (f"{n} {unit} are fewer than one global batch ({train_batch_size}): training with "
                          f"--train_batch_size {batch} --micro_train_batch_size {micro}")


# ----------------------------------------------------------------------------------------
# Mixed precision

def resolve_dtype(dtype: str | None, device: torch.device | str) -> str:
    """The training dtype: as given, or by default bf16 on CUDA and fp32 elsewhere (a CPU
    runs bf16 matmuls no faster than fp32 and rounds them, so fp32 is the CPU default)."""
    if dtype is None:
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def autocast(device: torch.device | str, dtype: str):
    """The context the forward pass and the loss run in: bf16 autocast on `device`'s type
    for "bf16", nothing for "fp32". Never wrap backward() in it: the backward of each op
    runs in the dtype its forward ran in, and a custom Function replays its own choice."""
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def full_precision(device: torch.device | str):
    """A region where autocast is off: the numbers RLHF compares across models and steps
    (log-probabilities, KL, rewards, values) are computed here in float32."""
    return torch.autocast(torch.device(device).type, enabled=False)


# Dense bf16 tensor-core peaks (FLOP/s) of the GPUs MFU is reported for, from the
# vendors' data sheets (without sparsity).
BF16_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops(device: torch.device | str, dtype: str) -> float | None:
    """The device's peak FLOP/s for `dtype` training, where known (CUDA, bf16), else None."""
    device = torch.device(device)
    if device.type != "cuda" or dtype != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in name), None)


# ----------------------------------------------------------------------------------------
# Metrics, resume, the NaN guard

def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the metrics lines up to `step` (all of them are dropped for a fresh run)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def load_resume_state(out_dir: Path, stage: str) -> tuple[dict, dict, dict]:
    """(trainer_state, optimizer state, RNG state) of the checkpoint in `out_dir`, which
    must have been written by `stage`."""
    state, opt_state, rng = checkpoint.load_trainer_state(out_dir)
    if state.get("stage") != stage:
        raise ValueError(f"{out_dir}: --resume found a {state.get('stage')!r} checkpoint, not {stage!r}")
    return state, opt_state, rng


def check_finite(ctx: Dist, stage: str, step: int, last_saved: Path | str | None, **quantities: float) -> None:
    """Stop on a NaN or inf among `quantities`, naming the step and the quantity. Every
    process learns of a bad value anywhere, so all of them stop (none waits in a
    collective)."""
    bad = torch.tensor([0.0 if math.isfinite(v) else 1.0 for v in quantities.values()])
    bad = all_reduce_sum(ctx, bad)
    for (name, value), flag in zip(quantities.items(), bad.tolist()):
        if flag:
            what = "not finite on another process" if math.isfinite(value) else str(value)
            kept = f"the last saved checkpoint ({last_saved}) is intact" if last_saved else "nothing was saved"
            raise FloatingPointError(f"[{stage}] step {step}: {name} is {what}; {kept}")


# ----------------------------------------------------------------------------------------
# Preemption

class Preempted(Exception):
    """The run stopped on SIGTERM after saving a resumable checkpoint (not an error)."""


class StopOnSignal:
    """A context in which SIGTERM only raises a flag; `requested(ctx)` reads it after each
    step, agreed by all processes (any process signalled stops them all at the same step).
    Outside the main thread (where Python cannot install handlers) it never stops."""

    def __init__(self):
        self.flag = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def requested(self, ctx: Dist) -> bool:
        return bool(all_reduce_sum(ctx, torch.tensor([float(self.flag)])).item() > 0)


# ----------------------------------------------------------------------------------------
# The steps of a loop

class StepPlan(NamedTuple):
    accumulation: int     # micro-batches per process per optimizer step
    steps_per_epoch: int  # optimizer steps in one pass over the data
    max_steps: int
    warmup: int           # steps of linear warmup


def plan_steps(stage: str, n: int, unit: str, args, ctx: Dist) -> StepPlan:
    """The sizes a loop over `n` examples (`unit` names them) derives from its flags. A
    global batch larger than the data shrinks to fit (`fit_batch_to_data`, one line says
    so), and `args.train_batch_size` / `args.micro_train_batch_size` then hold what runs.
    Global batch = micro-batch x accumulation x processes; by default `--max_epochs`
    passes over the data."""
    args.train_batch_size, args.micro_train_batch_size, note = fit_batch_to_data(
        n, args.train_batch_size, args.micro_train_batch_size, ctx.world_size, unit)
    if note:
        print0(ctx, f"[{stage}] {note}")
    accumulation = check_batch_sizes(args.train_batch_size, args.micro_train_batch_size, ctx.world_size)
    steps_per_epoch = n // args.train_batch_size
    max_steps = args.max_steps or steps_per_epoch * args.max_epochs
    return StepPlan(accumulation, steps_per_epoch, max_steps, max(1, int(args.warmup_ratio * max_steps)))


def ran(args, ctx: Dist, plan: StepPlan) -> dict:
    """What a loop planned by plan_steps runs, for its config.json: the batch sizes after
    fitting them to the data, the steps, the precision, the processes."""
    return {"train_batch_size": args.train_batch_size, "micro_train_batch_size": args.micro_train_batch_size,
            "max_steps": plan.max_steps, "learning_rate": args.learning_rate, "dtype": args.dtype,
            "world_size": ctx.world_size, "strategy": args.strategy}


class TrainingSteps:
    """The steps `start` .. max_steps - 1 of a pretraining, SFT or reward-model loop, as a
    context that yields (step, learning rate):

        with TrainingSteps("sft", optimizer, start, plan, args, ctx, save, out_dir) as steps:
            for step, lr in steps:
                ...                  # one optimizer step
                steps.show(loss=...) # the progress bar's figures
            save(plan.max_steps)

    Before each step the learning rate (linear warmup, then cosine decay) is set on the
    optimizer; after it, every `--save_steps` steps, `save(step)` writes a resumable
    checkpoint. SIGTERM, a cluster's notice before it kills a job, lets the step finish,
    saves and raises `Preempted`, naming the flags that continue the run. A SIGTERM during
    the last step or the final save inside the block is reported when the block ends, so
    that `--stage all` starts no further stage."""

    def __init__(self, stage: str, optimizer: torch.optim.Optimizer, start: int, plan: StepPlan, args, ctx: Dist,
                 save: Callable[[int], None], out_dir: Path):
        self.stage, self.optimizer, self.start, self.plan = stage, optimizer, start, plan
        self.args, self.ctx, self.save, self.out_dir = args, ctx, save, out_dir
        self.stop = StopOnSignal()
        self.bar = tqdm(range(start, plan.max_steps), initial=start, total=plan.max_steps, desc=stage,
                        disable=not ctx.is_main or args.no_progress, dynamic_ncols=True)

    def __enter__(self) -> "TrainingSteps":
        self.stop.__enter__()
        return self

    def __iter__(self) -> Iterator[tuple[int, float]]:
        max_steps, save_steps = self.plan.max_steps, self.args.save_steps
        for step in self.bar:
            lr = lr_at(step, max_steps, self.args.learning_rate, self.plan.warmup)
            set_lr(self.optimizer, lr)
            yield step, lr
            done = step + 1
            if save_steps and done % save_steps == 0 and done < max_steps:
                self.save(done)
            if done < max_steps and self.stop.requested(self.ctx):
                self.save(done)
                self.bar.close()
                raise Preempted(f"[{self.stage}] stopped by SIGTERM after step {done} of {max_steps}; saved to "
                                f"{self.out_dir}: continue with the same flags and --stage {self.stage} --resume")
        self.bar.close()

    def show(self, **figures) -> None:
        """Figures for the progress bar (rank 0)."""
        if self.ctx.is_main:
            self.bar.set_postfix(**figures)

    def __exit__(self, exc_type, *exc) -> None:
        self.stop.__exit__(exc_type, *exc)
        if exc_type is None and self.stop.requested(self.ctx):
            raise Preempted(f"[{self.stage}] SIGTERM during the last step: the stage finished and saved to "
                            f"{self.out_dir}; no later stage was started")
