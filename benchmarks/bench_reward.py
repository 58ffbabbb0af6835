"""Reward-model training speed: each prompt computed once for all of its comparisons
(`plus.data.collate_shared_prompts`) against one row per (prompt, response) sequence.

    python -m benchmarks.bench_reward                                   # the demo SFT checkpoint, 2 threads
    python -m benchmarks.bench_reward --checkpoint runs/demo/sft --pairs 512 --micro_batch 32

A comparison of two summaries of a post needs r(post, a) and r(post, b). Scored as two
rows, the post (about 125 tokens) is computed twice next to two summaries of about 28;
in one shared-prompt row it is computed once. With all pairs among k summaries of a
post (the world's training comparisons: k = 4 gives 6 pairs), the post is computed once
for k(k-1)/2 pairs. Both layouts run the same pairs in the same micro-batches, forward
and backward of the Bradley-Terry loss; the losses they compute are printed as a check
(they agree to float round-off). A policy checkpoint gets a new reward head without the
surprise term unless `--token_surprise` asks for one (plus/surprise.py, as train.py's rm
stage does with the same flag): the term's cost is the difference between the two.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from plus.bradley_terry import bradley_terry_loss
from plus.data import collate_sft, collate_shared_prompts, response_tokens
from plus.preferences import load_preference_pairs
from plus.reward_head import load_reward_model
from plus.reward_trainer import pair_forward, pair_rows
from plus.surprise import SurpriseRewardModel, apply_token_surprise


def per_sequence_loss(model, pairs, pad_id: int) -> tuple[torch.Tensor, int]:
    """The baseline: every chosen and every rejected sequence in its own right-padded row."""
    batch = collate_sft(pair_rows(pairs), pad_id)
    rewards = model(batch["input_ids"], batch["attention_mask"], response_tokens(batch["labels"]))
    B = len(pairs)
    return bradley_terry_loss(rewards[:B], rewards[B:]), int(batch["input_ids"].numel())


def shared_prompt_loss(model, pairs, pad_id: int) -> tuple[torch.Tensor, int]:
    batch = collate_shared_prompts(pairs, pad_id)
    chosen, rejected, _ = pair_forward(model, batch, "cpu", with_lm=False)
    return bradley_terry_loss(chosen, rejected), int(batch["input_ids"].numel())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/demo/sft", help="a policy or reward checkpoint")
    p.add_argument("--pairs", type=int, default=512, help="world comparisons per layout and k")
    p.add_argument("--micro_batch", type=int, default=32, help="pairs per forward/backward")
    p.add_argument("--summaries_per_post", type=int, nargs="+", default=[2, 4])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--token_surprise", action=argparse.BooleanOptionalAction, default=None,
                   help="give the reward model the surprise term (default: as the checkpoint has it; a policy: none)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the new reward head of a policy checkpoint
    model, tokenizer, _ = load_reward_model(args.checkpoint)
    model = apply_token_surprise(model, args.token_surprise, args.checkpoint)
    model.train()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"{model.backbone.num_params() / 1e6:.2f}M parameters, micro-batches of {args.micro_batch} pairs, "
          f"{'with' if isinstance(model, SurpriseRewardModel) else 'without'} the surprise term")
    print("| summaries per post | layout | pairs/s (median micro-batch) | tokens computed per pair (with padding) "
          "| loss |")
    print("|---|---|---|---|---|")
    for k in args.summaries_per_post:
        pairs, _ = load_preference_pairs("synthetic", tokenizer, n=args.pairs, summaries_per_post=k,
                                         on_bad_record="skip")
        batches = [pairs[i:i + args.micro_batch] for i in range(0, len(pairs), args.micro_batch)]
        for name, fn in (("a row per sequence", per_sequence_loss), ("shared prompt", shared_prompt_loss)):
            fn(model, batches[0], tokenizer.pad_id)[0].backward()  # warm-up
            model.zero_grad(set_to_none=True)
            rates, tokens, losses = [], 0, []
            for b in batches:
                t0 = time.perf_counter()
                loss, n_tokens = fn(model, b, tokenizer.pad_id)
                loss.backward()
                rates.append(len(b) / (time.perf_counter() - t0))
                model.zero_grad(set_to_none=True)
                tokens += n_tokens
                losses.append(float(loss.detach()) * len(b))
            print(f"| {k} | {name} | {statistics.median(rates):.0f} | {tokens / len(pairs):.0f} "
                  f"| {sum(losses) / len(pairs):.6f} |")


if __name__ == "__main__":
    main()
