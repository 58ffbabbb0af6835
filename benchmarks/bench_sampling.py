"""Sampling speed: the KV-cache sampler (plus/generate.py) against recomputing the whole
sequence at every step.

    python -m benchmarks.bench_sampling                         # the demo model size, random weights, 2 threads
    python -m benchmarks.bench_sampling --checkpoint runs/demo/sft --batch_size 64 --new_tokens 48

Without a cache, step t runs the decoder over all P + t tokens again, so sampling N
tokens costs about N * (P + N/2) token-forwards; with the cache each step runs one
token per row against cached keys and values: P + N token-forwards in all. Both samplers
draw from the same seeded generator, so they should return the same tokens (printed as a
check; a rare mismatch would come from float round-off tipping a draw). No response is
cut at EOS here: every row samples exactly --new_tokens tokens in both.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from plus.generate import generate, left_pad


@torch.no_grad()
def sample_recompute(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, new_tokens: int,
                     temperature: float, generator: torch.Generator) -> torch.Tensor:
    """The baseline: a full forward over the sequence so far for every new token. [B, new_tokens]."""
    ids, mask = prompt_ids, prompt_mask
    for _ in range(new_tokens):
        logits = model.logits(model(ids, attention_mask=mask)[:, -1]).float() / temperature  # [B, V]
        next_token = torch.multinomial(logits.softmax(-1), 1, generator=generator)         # [B, 1]
        ids = torch.cat([ids, next_token], dim=1)
        mask = torch.cat([mask, torch.ones_like(next_token)], dim=1)
    return ids[:, prompt_ids.shape[1]:]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="a policy checkpoint (default: random weights, demo size)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--prompt_len", type=int, default=125, help="mean prompt length (the world's posts: ~125 tokens)")
    p.add_argument("--new_tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.checkpoint:
        from plus import checkpoint
        model = checkpoint.load_gpt(args.checkpoint)[0]
    else:
        from plus.gpt import GPT, GPTConfig
        torch.manual_seed(0)
        model = GPT(GPTConfig.llama_style(vocab_size=2048, block_size=256, n_layer=4, n_head=4, n_embd=128,
                                          intermediate_size=352))  # the demo model (train.py)
    model.eval()
    vocab = model.config.vocab_size
    # Prompts of uneven length (+-20%), left-padded as in PPO; pad id 0, no EOS ever (id -1).
    lengths = torch.randint(int(0.8 * args.prompt_len), int(1.2 * args.prompt_len) + 1, (args.batch_size,),
                            generator=torch.Generator().manual_seed(1)).tolist()
    prompts = [torch.randint(1, vocab, (n,), generator=torch.Generator().manual_seed(i)).tolist()
               for i, n in enumerate(lengths)]
    prompt_ids, prompt_mask = left_pad(prompts, pad_id=0)

    def timed(fn):
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    cached_s, cached = timed(lambda: generate(model, prompt_ids, prompt_mask, args.new_tokens, eos_id=-1, pad_id=0,
                                              temperature=args.temperature,
                                              generator=torch.Generator().manual_seed(0)).tokens)
    full_s, full = timed(lambda: sample_recompute(model, prompt_ids, prompt_mask, args.new_tokens, args.temperature,
                                                  torch.Generator().manual_seed(0)))
    tokens = args.batch_size * args.new_tokens
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}; "
          f"{model.num_params() / 1e6:.2f}M-parameter model, batch {args.batch_size}, prompts ~{args.prompt_len} "
          f"tokens (max {prompt_ids.shape[1]}), {args.new_tokens} new tokens")
    print(f"KV cache:  {cached_s:7.2f} s  {tokens / cached_s:8.0f} tokens/s")
    print(f"recompute: {full_s:7.2f} s  {tokens / full_s:8.0f} tokens/s")
    print(f"speedup:   {full_s / cached_s:.1f}x; identical samples: {bool(torch.equal(cached, full))}")


if __name__ == "__main__":
    main()
