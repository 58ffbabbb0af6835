"""Reward-model training: fit r(x, y) to comparisons with the Bradley-Terry loss.

Stiennon et al. 2020 (§3.4) start the reward model from the supervised policy with a new
scalar head (plus/reward_head.py) and train it for one epoch on labeled comparisons,

    L_BT = -(1 / N) * sum_{pairs} log sigmoid(r(x, y_chosen) - r(x, y_rejected) - m),

where N is the number of pairs of the global batch and m an optional per-pair margin
(`--margin_key`; 0 otherwise). Cheng et al. 2023 ("Everyone deserves a reward") add a
language-model loss on the preferred responses, so the backbone keeps modelling text
while it learns to rank it:

    L = L_BT + lm_loss_coeff * (1 / |S|) * sum_{t in S} -log p(y_t | x, y_<t),

S being the chosen-response tokens (and their EOS) of the whole global batch. Both terms
come from one decoder pass: the reward head reads the final hidden state of the last
real token, the LM head reads the hidden states that predict the response tokens.

After training, the rewards are shifted so that the reference summaries score 0 on
average (Stiennon et al.; Huang et al. 2024), and with `--normalize_reward` scaled so
that their spread is 1. PPO then receives rewards on a known scale whatever the training
run, and "better than the reference" reads as "positive". The references are those of
the training posts for the built-in world; a preference file usually has no reference
summaries, so there the chosen responses of the training set stand in for them (each
distinct (prompt, chosen) once).

A post usually has several comparisons (Stiennon's labelers compared many summaries of
the same posts; the built-in world's training set holds all pairs among 4 summaries of
each post), and a reward depends on (post, summary) alone. So a micro-batch is packed one
row per post: the post once, then each of its distinct summaries, each attending to the
post and to itself only (`plus.data.collate_shared_prompts`, `segment_ids` in
plus/gpt.py). The numbers are those of scoring every (post, summary) in a row of its
own; the post's ~125 tokens are computed once instead of twice per comparison
(BENCHMARKS.md: 6.4x the pairs per second on the world's comparisons). The data order
keeps a post's comparisons together for the same reason.

Read top to bottom: the loss of one micro-batch, scoring and the evaluation metrics,
then the loop (derived sizes, data order, resume, accumulate -> clip -> step -> log ->
evaluate -> save) and the normalization at the end. Every quantity is summed over the
pairs or tokens of a micro-batch and divided by the count of the *global* batch, so one
process and N processes compute the same gradients (plus/sft.py does the same).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch

from plus import checkpoint
from plus.bradley_terry import bradley_terry_loss, preference_accuracy
from plus.data import (PreferencePair, SFTExample, collate_shared_prompts, collate_sft, group_by_prompt, response_ids,
                       response_tokens, truncate_query)
from plus.distributed import (Dist, all_reduce_sum, barrier, clip_grad_norm, full_params, gather_for_save,
                               load_optimizer_state, print0, rank_slice, wrap_model)
from plus.reward_head import RewardModel
from plus.surprise import SurpriseRewardModel
from plus.training import (append_metrics, autocast, check_finite, epoch_order, load_resume_state, make_optimizer,
                           plan_steps, ran, TrainingSteps, truncate_metrics)

CALIBRATION_BINS = 5  # equal-width bins of the model's confidence, 0.5 .. 1.0


# ----------------------------------------------------------------------------------------
# The loss of one micro-batch

def batch_response_tokens(batch: dict, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A `collate_shared_prompts` batch's (response_at, response_ids, response_owner), on `device`."""
    return tuple(batch[k].to(device) for k in ("response_at", "response_ids", "response_owner"))


def pair_forward(model, batch: dict, device, with_lm: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(chosen rewards [B], rejected rewards [B], sum over the chosen response tokens of
    -log p, or None without `with_lm`) for a `collate_shared_prompts` batch of B pairs,
    from one forward pass over rows that hold each prompt once. `model` is a
    RewardModel, possibly inside DDP or FSDP."""
    out = model(batch["input_ids"].to(device), None, batch_response_tokens(batch, device),
                              segment_ids=batch["segment_ids"].to(device), read_at=batch["read_at"].to(device),
                              return_logprobs=with_lm)
    rewards, logprobs = out if with_lm else (out, None)                          # [N responses], [M tokens]
    chosen, rejected = rewards[batch["chosen"].to(device)], rewards[batch["rejected"].to(device)]  # [B], [B]
    nll_sum = None
    if with_lm:  # each token of a chosen response, as many times as its response was chosen
        weight = batch["times_chosen"].to(device)[batch["response_owner"].to(device)]  # [M]
        nll_sum = -(logprobs * weight).sum()
    return chosen, rejected, nll_sum


# ----------------------------------------------------------------------------------------
# Scoring and evaluation

@torch.no_grad()
def score(model: RewardModel, examples: list[SFTExample], pad_id: int, batch_size: int, device,
          ctx: Dist = Dist(), raw: bool = False, parts: bool = False) -> torch.Tensor:
    """Rewards [N] (float64, normalized unless `raw`) of (prompt, response) sequences;
    with `parts` (a SurpriseRewardModel, plus/surprise.py), the raw reward's two parts
    [N, 2]: the head's score and the surprise term's sum.

    Each process scores a contiguous share, longest-first in batches of similar length
    (padding to the longest row of a batch is wasted work), and the shares are summed
    into the full tensor on every process."""
    n = len(examples)
    per = -(-n // ctx.world_size)
    mine = sorted(range(min(n, ctx.rank * per), min(n, (ctx.rank + 1) * per)),
                  key=lambda i: -(len(examples[i].prompt) + len(examples[i].response)))
    out = torch.zeros((n, 2) if parts else (n,), dtype=torch.float64)
    was_training = model.training
    model.eval()
    for start in range(0, len(mine), batch_size):
        rows = mine[start:start + batch_size]
        batch = collate_sft([examples[i] for i in rows], pad_id)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        tokens = response_tokens(batch["labels"].to(device))
        if parts:
            head, terms, _ = model.raw_parts(ids, mask, tokens)                      # [b], [M]
            rewards = torch.stack([head, torch.zeros_like(head).index_add(0, tokens[2], terms)], dim=-1)
        else:
            rewards = model.raw_rewards(ids, mask, tokens) if raw else model(ids, mask, tokens)  # [b]
        out[rows] = rewards.double().cpu()
    model.train(was_training)
    return all_reduce_sum(ctx, out)


@torch.no_grad()
def score_pairs(model: RewardModel, pairs: list[PreferencePair], pad_id: int, batch_size: int,
                device) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw rewards (float64) of each pair's chosen [N] and rejected [N] response, in eval
    mode, batch_size pairs at a time (longest first) packed one row per prompt
    (`collate_shared_prompts`): a prompt read once for both of its responses, where
    `score(pair_rows(pairs))` reads it twice. One process scores every pair."""
    n = len(pairs)
    order = sorted(range(n), key=lambda i: -(len(pairs[i].prompt) + len(pairs[i].chosen) + len(pairs[i].rejected)))
    chosen, rejected = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    was_training = model.training
    model.eval()
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        batch = collate_shared_prompts([pairs[i] for i in rows], pad_id)
        rewards = model.raw_rewards(batch["input_ids"].to(device), None, batch_response_tokens(batch, device),
                                    segment_ids=batch["segment_ids"].to(device),
                                    read_at=batch["read_at"].to(device)).double().cpu()  # [distinct responses]
        chosen[rows], rejected[rows] = rewards[batch["chosen"]], rewards[batch["rejected"]]
    model.train(was_training)
    return chosen, rejected


def pair_rows(pairs: list[PreferencePair]) -> list[SFTExample]:
    """The 2N sequences of N pairs: every chosen one, then every rejected one."""
    return [SFTExample(p.prompt, p.chosen) for p in pairs] + [SFTExample(p.prompt, p.rejected) for p in pairs]


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor, pairs: list[PreferencePair]) -> dict:
    """Evaluation of rewards chosen [N] / rejected [N] on their pairs.

    * loss: the Bradley-Terry loss (with the pairs' margins);
    * label_accuracy: how often the labeled choice gets the higher reward (ties half);
    * gold_agreement: the same against the noiseless gold preference, where the pairs
      know it (the built-in world: labels are noisy, gold is what we really want);
    * chosen_reward, rejected_reward, margin: mean rewards and mean r_c - r_r;
    * calibration: the Bradley-Terry model predicts P(chosen wins) = sigmoid(r_c - r_r).
      Folded so that every pair counts once, each row bins the model's confidence in
      the response it favors, max(p, 1 - p), and compares the mean confidence with how
      often that response is the labeled (and the gold) choice. A calibrated model has
      label_frequency = mean_predicted in every bin; ece is the count-weighted mean gap.
    """
    chosen, rejected = chosen.double(), rejected.double()
    margins = torch.tensor([p.margin for p in pairs], dtype=torch.float64)
    # 1 where the model favors the labeled choice, 0 where it favors the other, 0.5 on a tie.
    label_hit = (chosen > rejected).double() + 0.5 * (chosen == rejected).double()       # [N]
    p_chosen = torch.sigmoid(chosen - rejected)
    confidence = torch.maximum(p_chosen, 1 - p_chosen)                                    # [N] in [0.5, 1]
    known = [i for i, p in enumerate(pairs) if p.gold is not None]
    if known:
        # gold = 1: chosen is really better, 0: worse, 0.5: a tie (either answer is half right).
        gold = torch.tensor([pairs[i].gold for i in known], dtype=torch.float64)
        gold_hit = torch.full_like(label_hit, float("nan"))
        gold_hit[known] = gold * label_hit[known] + (1 - gold) * (1 - label_hit[known])
    out = {
        "n_pairs": len(pairs),
        "loss": float(bradley_terry_loss(chosen, rejected, margins)),
        "label_accuracy": preference_accuracy(chosen, rejected),
        "chosen_reward": float(chosen.mean()),
        "rejected_reward": float(rejected.mean()),
        "margin": float((chosen - rejected).mean()),
    }
    if known:
        out["gold_agreement"] = float(gold_hit[known].mean())
        out["n_gold"] = len(known)
    edges = torch.linspace(0.5, 1.0, CALIBRATION_BINS + 1).double()
    bins = torch.bucketize(confidence, edges[1:-1], right=True)                           # [N] in 0..BINS-1
    table, ece = [], 0.0
    for b in range(CALIBRATION_BINS):
        sel = bins == b
        if not sel.any():
            continue
        row = {"bin": [round(float(edges[b]), 3), round(float(edges[b + 1]), 3)], "n": int(sel.sum()),
               "mean_predicted": float(confidence[sel].mean()), "label_frequency": float(label_hit[sel].mean())}
        if known and not gold_hit[sel].isnan().all():
            row["gold_frequency"] = float(gold_hit[sel].nanmean())
        ece += row["n"] / len(pairs) * abs(row["mean_predicted"] - row["label_frequency"])
        table.append(row)
    out["calibration"], out["ece"] = table, ece
    return out


def evaluate(model: RewardModel, eval_sets: dict[str, list[PreferencePair]], pad_id: int, batch_size: int, device,
             ctx: Dist = Dist()) -> dict[str, dict]:
    """pair_metrics for each named set of pairs (each process scores a share)."""
    results = {}
    for name, pairs in eval_sets.items():
        rewards = score(model, pair_rows(pairs), pad_id, batch_size, device, ctx)
        results[name] = pair_metrics(rewards[:len(pairs)], rewards[len(pairs):], pairs)
    return results


# Normalization needs the references' mean, not every reference: the standard error of a
# mean over 2000 is 2% of their spread, and scoring them all can take longer than training.
MAX_NORMALIZATION_REFERENCES = 2000


def reference_examples(dataset: str, pairs: list[PreferencePair], tokenizer, split: str, n_posts: int | None,
                       prompt_max_len: int, generate_max_len: int, seed: int = 0,
                       limit: int = MAX_NORMALIZATION_REFERENCES) -> list[SFTExample]:
    """The sequences whose mean reward is set to 0: the reference TL;DRs of posts
    0 .. n_posts-1 of the world's `split` (the posts its comparisons are about), or, for a
    file, each distinct (prompt, chosen response) of `pairs` (see the module docstring);
    the first `limit` of them."""
    if dataset == "synthetic":
        from plus.world import World

        return [SFTExample(truncate_query(tokenizer, p.subreddit, p.title, p.post, prompt_max_len),
                           response_ids(tokenizer, p.summary, generate_max_len))
                for p in World(seed).posts(split, min(n_posts, limit))]
    distinct = dict.fromkeys((tuple(p.prompt), tuple(p.chosen)) for p in pairs)
    return [SFTExample(list(prompt), list(chosen)) for prompt, chosen in list(distinct)[:limit]]


def flat_eval_metrics(results: dict[str, dict]) -> dict[str, float]:
    """The scalar metrics of `evaluate` as metrics.jsonl keys: eval_<metric> for a single
    set, eval_<metric>/<set name> for several."""
    single = len(results) == 1
    return {(f"eval_{k}" if single else f"eval_{k}/{name}"): v
            for name, row in results.items() for k, v in row.items()
            if k in ("loss", "label_accuracy", "gold_agreement", "margin")}


# ----------------------------------------------------------------------------------------
# The loop

def train(
    *,
    model: RewardModel,
    tokenizer,
    pairs: list[PreferencePair],
    eval_sets: dict[str, list[PreferencePair]],  # name -> held-out pairs, for the periodic eval
    references: list[SFTExample],                 # scored 0 on average after training
    out_dir: Path,
    config: dict,                                 # provenance for config.json
    args,
    ctx: Dist,
) -> dict:
    """Train `model` on `pairs`, normalize it on `references`, save to `out_dir`.
    Returns the last logged metrics and the normalization statistics."""
    device = torch.device(args.device)

    # ---- derived sizes: global batch = micro batch x accumulation x processes ------------
    plan = plan_steps("rm", len(pairs), "pairs", args, ctx)
    steps_per_epoch, max_steps = plan.steps_per_epoch, plan.max_steps
    config = {**config, **ran(args, ctx, plan)}  # config.json: what runs
    with_lm = args.lm_loss_coeff > 0

    # ---- data order: a permutation per epoch, a function of (seed, epoch), so a resumed
    # run sees exactly the batches the uninterrupted one would have. What is permuted is
    # the groups of pairs that share a prompt, kept together, so that the comparisons of
    # one post usually fall into one micro-batch and pay for their prompt once.
    groups = group_by_prompt(pairs)

    def global_batch(step: int) -> list[int]:
        epoch, offset = divmod(step, steps_per_epoch)
        flat = [i for g in epoch_order(len(groups), args.seed, epoch) for i in groups[g]]
        return flat[offset * args.train_batch_size:(offset + 1) * args.train_batch_size]

    # ---- model, optimizer, (resume) ---------------------------------------------------
    # Training works on raw scores: a start from an already normalized reward model (the
    # general RM of Cheng et al.'s general -> customized chain) drops its gain and bias
    # here, and the new ones are set from the references at the end.
    with torch.no_grad():
        model.head.gain.fill_(1.0)
        model.head.bias.fill_(0.0)
    model.head.normalization = None
    # An untied LM head (Llama-style) takes no part in the reward of Stiennon et al., so
    # without the LM loss it would get no gradient, and DDP waits for every parameter's
    # gradient. Freezing it leaves it out of DDP and of the optimizer; nothing else
    # changes, because AdamW skips a parameter without a gradient anyway. (A tied head is
    # the token embedding: used; so is a head that plus/surprise.py's term reads.)
    if not with_lm and not isinstance(model, SurpriseRewardModel) and not model.config.tie_embeddings:
        model.backbone.lm_head.weight.requires_grad_(False)
    model.to(device).train()
    n_params = model.backbone.num_params()
    bf16 = args.dtype == "bf16"
    # DDP or FSDP (--strategy); FSDP swaps the parameters for shards: optimizer after wrapping.
    ddp_model = wrap_model(model, ctx, args.strategy, param_dtype=torch.bfloat16 if bf16 else None)
    optimizer = make_optimizer(model, args.learning_rate, args.weight_decay)
    metrics_path = out_dir / checkpoint.METRICS
    start_step = 0
    if args.resume:  # the weights were loaded from out_dir by the caller
        state, opt_state, rng = load_resume_state(out_dir, "rm")
        load_optimizer_state(ddp_model, optimizer, opt_state)
        checkpoint.set_rng_state(rng)
        start_step = state["step"]
        print0(ctx, f"[rm] resuming {out_dir} from step {start_step} of {max_steps}")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(metrics_path, start_step)
    eval_batch = 4 * args.micro_train_batch_size
    saved = {"last": out_dir if args.resume else None}  # the newest checkpoint, named by the NaN guard

    def save(step: int):
        weights, opt = gather_for_save(ddp_model, optimizer)  # FSDP: every process takes part
        if ctx.is_main:
            model.save(out_dir, tokenizer, extra_config=config, optimizer=opt, metrics_file=metrics_path,
                       state_dict=weights,
                       trainer_state={"stage": "rm", "step": step, "max_steps": max_steps, "seed": args.seed})
        saved["last"] = out_dir
        barrier(ctx)

    print0(ctx, f"[rm] {len(pairs)} pairs, {max_steps} steps of {args.train_batch_size} "
                f"({args.micro_train_batch_size} x {plan.accumulation} accumulation x {ctx.world_size} processes"
                f"{'' if ctx.world_size == 1 else ', ' + args.strategy}), {n_params / 1e6:.2f}M parameters"
                + (f", lm_loss_coeff {args.lm_loss_coeff}" if with_lm else ""))
    last = {}
    with TrainingSteps("rm", optimizer, start_step, plan, args, ctx, save, out_dir) as steps:
        for step, lr in steps:  # sets lr; saves every --save_steps; SIGTERM: saves, raises Preempted
            t0 = time.perf_counter()

            # Each rank takes its slice of the global batch and splits it into micro-batches.
            mine = global_batch(step)[rank_slice(ctx, args.train_batch_size)]
            micro_batches = [collate_shared_prompts([pairs[i] for i in mine[j:j + args.micro_train_batch_size]],
                                                    tokenizer.pad_id)
                             for j in range(0, len(mine), args.micro_train_batch_size)]
            n_pairs = args.train_batch_size  # the global batch, over all ranks
            n_lm_tokens = 1
            if with_lm:  # the LM term is a mean over the chosen-response tokens of the global batch
                # tokens x times chosen
                mine_lm = sum(float(b["times_chosen"][b["response_owner"]].sum()) for b in micro_batches)
                n_lm_tokens = int(all_reduce_sum(ctx, torch.tensor(mine_lm)))
            # Per-rank sums of: BT loss, LM loss, label hits, chosen and rejected rewards, real tokens.
            sums = torch.zeros(6, dtype=torch.float64)
            for i, batch in enumerate(micro_batches):
                # Gradients are all-reduced only on the last micro-step; DDP averages them over
                # ranks, hence the world-size factor next to the global counts.
                sync = i == len(micro_batches) - 1
                with nullcontext() if sync or not ctx.enabled else ddp_model.no_sync():
                    with autocast(device, args.dtype):  # the forward and the loss; backward outside
                        chosen, rejected, nll_sum = pair_forward(ddp_model, batch, device, with_lm)
                        bt_sum = bradley_terry_loss(chosen, rejected, batch["margin"].to(device)) * chosen.numel()
                        loss = bt_sum / n_pairs
                        if with_lm:
                            loss = loss + args.lm_loss_coeff * nll_sum / n_lm_tokens
                    (loss * ctx.world_size).backward()
                chosen, rejected = chosen.detach().double(), rejected.detach().double()
                sums += torch.tensor([float(bt_sum.detach()), float(nll_sum.detach()) if with_lm else 0.0,
                                      preference_accuracy(chosen, rejected) * chosen.numel(),
                                      float(chosen.sum()), float(rejected.sum()),
                                      float((batch["segment_ids"] >= 0).sum())], dtype=torch.float64)
            grad_norm = clip_grad_norm(ddp_model, args.max_grad_norm)
            bt, nll, hits, chosen_sum, rejected_sum, tokens = all_reduce_sum(ctx, sums).tolist()
            loss = bt / n_pairs + (args.lm_loss_coeff * nll / n_lm_tokens if with_lm else 0.0)
            check_finite(ctx, "rm", step + 1, saved["last"], loss=loss, grad_norm=grad_norm)  # before the step
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            last = {"step": step + 1, "loss": loss, "bt_loss": bt / n_pairs, "accuracy": hits / n_pairs,
                    "chosen_reward": chosen_sum / n_pairs, "rejected_reward": rejected_sum / n_pairs,
                    "lr": lr, "grad_norm": grad_norm, "pairs_per_s": n_pairs / dt, "tokens_per_s": tokens / dt}
            if with_lm:
                last["lm_loss"] = nll / n_lm_tokens
            if args.eval_steps and ((step + 1) % args.eval_steps == 0 or step + 1 == max_steps) and eval_sets:
                with full_params(ddp_model):  # FSDP: the ranks' shares of the eval pairs may differ in size
                    results = evaluate(model, eval_sets, tokenizer.pad_id, eval_batch, device, ctx)
                    last.update(flat_eval_metrics(results))
            if ctx.is_main:
                append_metrics(metrics_path, last)
            steps.show(pairs_s=f"{last['pairs_per_s']:.1f}",
                       **{k: f"{v:.3f}" for k, v in last.items() if k in ("loss", "accuracy", "eval_gold_agreement")})

        # ---- normalization: references score 0 on average (Stiennon et al. 2020) -------
        t0 = time.perf_counter()
        if isinstance(model, SurpriseRewardModel):  # its term's mean is kept too, for the critic (plus/surprise.py)
            with full_params(ddp_model):
                parts = score(model, references, tokenizer.pad_id, eval_batch, device, ctx, parts=True)  # [n, 2]
            stats = model.set_normalization(parts[:, 0], parts[:, 1], args.normalize_reward)
        else:
            with full_params(ddp_model):
                rewards = score(model, references, tokenizer.pad_id, eval_batch, device, ctx, raw=True)  # [n]
            stats = model.head.set_normalization(rewards, args.normalize_reward)
        print0(ctx, f"[rm] normalized on {len(references)} references in {time.perf_counter() - t0:.0f}s: raw mean "
                    f"{stats['reference_mean_raw']:.4f}, std {stats['reference_std_raw']:.4f} -> gain "
                    f"{float(model.head.gain):.4f}, bias {float(model.head.bias):.4f}")
        save(max_steps)
    return {**last, "reference_mean_raw": stats["reference_mean_raw"], "reference_std_raw": stats["reference_std_raw"]}
