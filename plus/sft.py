"""Next-token training: pretraining and supervised fine-tuning (SFT), one loop.

Stiennon et al. 2020 §3.1 start every model from a pretrained decoder and fine-tune it to
predict the reference TL;DRs; that "supervised baseline" initializes the reward model and
the RL policy. Both stages minimize the same objective,

    L(theta) = - (1 / |S|) * sum_{t in S} log p_theta(x_t | x_<t),

averaged over the set S of target tokens of the whole global batch: every token of the
corpus when pretraining; only the summary tokens (and the EOS that ends them) in SFT, so
the model learns to write summaries, not to reproduce posts.

Read top to bottom: derived sizes, data order, model and optimizer, (resume), the loop
(accumulate micro-batches -> clip -> step -> log -> evaluate -> save), the final save.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch

from kernels import fused_linear_token_logprobs, token_logprobs
from plus import checkpoint
from plus.data import IGNORE_INDEX
from plus.distributed import (Dist, all_reduce_sum, barrier, clip_grad_norm, full_params, gather_for_save,
                               load_optimizer_state, print0, rank_slice, wrap_model)
from plus.training import (append_metrics, autocast, check_finite, epoch_order, load_resume_state, make_optimizer,
                           peak_flops, plan_steps, ran, TrainingSteps, truncate_metrics, unwrap)


# The fused head + log-softmax (kernels/fused_linear.py) never holds the [tokens, vocab]
# logits, at the price of recomputing them in backward. Below this many logit entries
# (512 MB in float32) they fit in memory anyway and the plain head is faster
# (BENCHMARKS.md, "Fused head or plain logits").
FUSED_HEAD_MIN_LOGITS = 2 ** 27


def target_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) from the hidden states that predict the labels: hidden [..., C], the
    output head's weight [V, C], labels [...] -> float32 [...], 0 where ignored. Logits are
    computed only where a label is; through the fused op when there would be many."""
    live = labels != IGNORE_INDEX                                        # [...]
    if int(live.sum()) * weight.shape[0] >= FUSED_HEAD_MIN_LOGITS:
        return fused_linear_token_logprobs(hidden, weight, labels)
    logits = torch.nn.functional.linear(hidden[live], weight.to(hidden.dtype))  # [K, V]
    logprobs = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    logprobs[live] = token_logprobs(logits, labels[live])
    return logprobs


def sequence_loss_sum(model, batch: dict, device) -> tuple[torch.Tensor, int]:
    """(sum over target tokens of -log p, number of target tokens) for one micro-batch:
    right-padded rows (`data.collate_sft`), or rows packing a prompt and several responses
    (`data.collate_sft_packed`), where the hidden states that predict are gathered first.
    In SFT most positions are prompt or padding: their logits are never computed."""
    input_ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    if "segment_ids" in batch:
        hidden = model(input_ids, segment_ids=batch["segment_ids"].to(device))    # [R, T, C]
        weight = unwrap(model).lm_head.weight  # read after the forward: FSDP gathers it there
        at = batch["labels_at"].to(device)                                       # [M, 2]
        logprobs = target_logprobs(hidden[at[:, 0], at[:, 1]], weight, labels)  # [M]
        return -logprobs.sum(), labels.numel()
    mask = batch.get("attention_mask")
    hidden = model(input_ids, attention_mask=None if mask is None else mask.to(device))  # [B, T, C]
    weight = unwrap(model).lm_head.weight
    logprobs = target_logprobs(hidden, weight, labels)  # [B, T], 0 where ignored
    return -logprobs.sum(), int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate_loss(model, batches, device, ctx: Dist) -> float:
    """Token-level mean loss over this rank's eval batches, summed across ranks."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64)
    for batch in batches:
        loss_sum, n = sequence_loss_sum(model, batch, device)
        total += torch.tensor([float(loss_sum), n], dtype=torch.float64)
    total = all_reduce_sum(ctx, total)
    model.train()
    return float(total[0] / total[1].clamp(min=1))


def train(
    *,
    stage: str,
    model: torch.nn.Module,
    tokenizer,
    dataset_size: int,
    get_batch,                 # list of example indices -> batch dict (input_ids, labels[, attention_mask])
    eval_batches: list[dict],  # this rank's share of the held-out batches
    out_dir: Path,
    config: dict,              # stored in config.json (model config and provenance)
    args,
    ctx: Dist,
    unit: str = "examples",    # what dataset_size counts, for the log
) -> dict:
    """The loop shared by `--stage pretrain` and `--stage sft`. Returns final metrics."""
    device = torch.device(args.device)

    # ---- derived sizes: global batch = micro batch x accumulation x processes ------------
    plan = plan_steps(stage, dataset_size, unit, args, ctx)
    steps_per_epoch, max_steps = plan.steps_per_epoch, plan.max_steps
    config = {**config, **ran(args, ctx, plan)}  # config.json: what runs

    # ---- the data order: a fixed permutation per epoch, a function of (seed, epoch), so
    # a resumed run sees exactly the batches the uninterrupted one would have.
    def global_batch(step: int) -> list[int]:
        epoch, offset = divmod(step, steps_per_epoch)
        return epoch_order(dataset_size, args.seed, epoch)[offset * args.train_batch_size:
                                                           (offset + 1) * args.train_batch_size]

    # ---- model, optimizer, (resume) ---------------------------------------------------
    model.to(device).train()
    metrics_path = out_dir / checkpoint.METRICS
    start_step, opt_state = 0, None
    if args.resume:
        state, opt_state, rng = load_resume_state(out_dir, stage)
        checkpoint.load_into(model, checkpoint.load_state_dict(out_dir, device))
        checkpoint.set_rng_state(rng)
        start_step = state["step"]
        print0(ctx, f"[{stage}] resuming {out_dir} from step {start_step} of {max_steps}")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(metrics_path, start_step)  # forget what was logged after the checkpoint
    n_params = model.num_params()
    peak = peak_flops(device, args.dtype)  # None off CUDA: no MFU reported
    bf16 = args.dtype == "bf16"
    # DDP or FSDP (--strategy). FSDP swaps the parameters for this process's shards, so
    # the optimizer is built after wrapping.
    ddp_model = wrap_model(model, ctx, args.strategy, param_dtype=torch.bfloat16 if bf16 else None)
    optimizer = make_optimizer(model, args.learning_rate, args.weight_decay)
    if opt_state is not None:
        load_optimizer_state(ddp_model, optimizer, opt_state)

    saved = {"last": out_dir if args.resume else None}  # the newest checkpoint, named by the NaN guard

    def save(step: int):
        weights, opt = gather_for_save(ddp_model, optimizer)  # FSDP: every process takes part
        if ctx.is_main:
            checkpoint.save_checkpoint(
                out_dir, model, config, tokenizer=tokenizer, optimizer=opt, state_dict=weights,
                trainer_state={"stage": stage, "step": step, "max_steps": max_steps, "seed": args.seed},
                metrics_file=metrics_path)
        saved["last"] = out_dir
        barrier(ctx)

    print0(ctx, f"[{stage}] {dataset_size} {unit}, {max_steps} steps of {args.train_batch_size} "
                f"({args.micro_train_batch_size} x {plan.accumulation} accumulation x {ctx.world_size} processes"
                f"{'' if ctx.world_size == 1 else ', ' + args.strategy}), {n_params / 1e6:.2f}M parameters")
    last = {}
    with TrainingSteps(stage, optimizer, start_step, plan, args, ctx, save, out_dir) as steps:
        for step, lr in steps:  # sets lr; saves every --save_steps; SIGTERM: saves, raises Preempted
            t0 = time.perf_counter()

            # Each rank takes its slice of the global batch and splits it into micro-batches.
            mine = global_batch(step)[rank_slice(ctx, args.train_batch_size)]
            micro_batches = [get_batch(mine[i:i + args.micro_train_batch_size])
                             for i in range(0, len(mine), args.micro_train_batch_size)]
            # Normalize by the token count of the *global* batch so the gradient is the same
            # whatever the split into ranks and micro-batches (DDP averages over ranks, hence
            # the world-size factor).
            n_tokens = int(all_reduce_sum(ctx, torch.tensor(
                sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro_batches))))
            loss_total = 0.0
            for i, batch in enumerate(micro_batches):
                # Gradients are all-reduced only on the last micro-step; before that there is
                # nothing to gain from syncing partial sums.
                sync = i == len(micro_batches) - 1
                with nullcontext() if sync or not ctx.enabled else ddp_model.no_sync():
                    with autocast(device, args.dtype):  # the forward and the loss; backward outside
                        loss_sum, _ = sequence_loss_sum(ddp_model, batch, device)
                    (loss_sum * ctx.world_size / n_tokens).backward()
                loss_total += float(loss_sum.detach())
            grad_norm = clip_grad_norm(ddp_model, args.max_grad_norm)
            loss = float(all_reduce_sum(ctx, torch.tensor(loss_total, dtype=torch.float64))) / n_tokens
            check_finite(ctx, stage, step + 1, saved["last"], loss=loss, grad_norm=grad_norm)  # before the step
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            tokens = sum(int(b["input_ids"].numel()) for b in micro_batches) * ctx.world_size
            last = {"step": step + 1, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                    "tokens_per_s": tokens / dt, "target_tokens": n_tokens}
            if peak:  # model FLOPs utilization: training FLOP/s over the GPU's bf16 peak
                last["mfu"] = model.estimate_mfu(tokens / dt / ctx.world_size, micro_batches[0]["input_ids"].shape[1],
                                                 peak)
            if args.eval_steps and ((step + 1) % args.eval_steps == 0 or step + 1 == max_steps) and eval_batches:
                with full_params(ddp_model):  # FSDP: ranks may hold different numbers of eval batches
                    last["eval_loss"] = evaluate_loss(ddp_model, eval_batches, device, ctx)
            if ctx.is_main:
                append_metrics(metrics_path, last)
            steps.show(loss=f"{loss:.3f}", tok_s=f"{last['tokens_per_s']:.0f}",
                       **({"mfu": f"{last['mfu']:.1%}"} if "mfu" in last else {}),
                       **({"eval": f"{last['eval_loss']:.3f}"} if "eval_loss" in last else {}))
        save(max_steps)
    return last

