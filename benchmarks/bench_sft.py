"""SFT speed: a post packed once with several of its reference summaries
(`plus.data.collate_sft_packed`) against a right-padded row per (post, summary).

    python -m benchmarks.bench_sft                                     # the demo pretrained model, 2 threads
    python -m benchmarks.bench_sft --checkpoint runs/demo/pretrain --summaries 16 --repeats 15

A world post is about 80% of an SFT row's tokens, and the loss is on the summary alone.
With one summary per post, packing changes nothing but the attention mask; with k
summaries of each post in one row, the post is computed once for k summaries. Every
layout runs forward and backward of the summed token loss on the same summaries; the
losses are printed as a check (they agree to float round-off).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from plus import checkpoint
from plus.data import collate_sft, collate_sft_packed, load_sft_examples
from plus.sft import sequence_loss_sum


def timed(model, batch, repeats: int) -> tuple[float, float, int]:
    """(median seconds of forward + backward, loss, summary tokens)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss, n = sequence_loss_sum(model, batch, "cpu")
        loss.backward()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return statistics.median(times), float(loss.detach()), n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/demo/pretrain", help="a policy checkpoint")
    p.add_argument("--summaries", type=int, default=16, help="summaries per micro-batch")
    p.add_argument("--references_per_post", type=int, default=4)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.summaries % args.references_per_post:
        p.error("--summaries must be a multiple of --references_per_post")
    torch.set_num_threads(args.threads)
    model, tokenizer, _ = checkpoint.load_gpt(args.checkpoint)
    model.train()
    k, n = args.references_per_post, args.summaries
    one, _ = load_sft_examples("synthetic", tokenizer, n=n, prompt_max_len=200)
    several, _ = load_sft_examples("synthetic", tokenizer, n=n // k, prompt_max_len=200, references_per_post=k)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"{model.num_params() / 1e6:.2f}M parameters, {n} summaries, median of {args.repeats}")
    print(f"| {n} summaries | rows x columns | forward + backward | summary tokens/s | loss |")
    print("|---|---|---|---|---|")
    for name, batch in [(f"of {n} posts, a padded row each", collate_sft(one, tokenizer.pad_id)),
                        (f"of {n} posts, packed (one per row)", collate_sft_packed(one, tokenizer.pad_id)),
                        (f"{k} of each of {n // k} posts, a padded row each", collate_sft(several, tokenizer.pad_id)),
                        (f"{k} of each of {n // k} posts, packed", collate_sft_packed(several, tokenizer.pad_id))]:
        seconds, loss, tokens = timed(model, batch, args.repeats)
        rows, cols = batch["input_ids"].shape
        print(f"| {name} | {rows} x {cols} | {seconds * 1000:.0f} ms | {tokens / seconds:,.0f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
