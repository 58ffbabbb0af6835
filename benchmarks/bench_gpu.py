"""Training and sampling speed on one GPU, side by side with transformers on the same shapes.

    python -m benchmarks.bench_gpu --out gpu.json                       # the GPT-2 shape, bf16
    python -m benchmarks.bench_gpu --device cpu --layers 2 --width 64 --vocab 256 --seq 64 --batch 2 --steps 2

Training: tokens per second and MFU of one optimizer step (forward, loss, backward, fused
AdamW) of plus's decoder (`plus.gpt.GPT`, the loss through `plus.sft.target_logprobs`,
which picks the fused head or plain logits by size) and, when `transformers` is
installed, of `GPT2LMHeadModel` and `Qwen2ForCausalLM` built with the same width, depth,
heads and vocabulary (random weights, random tokens). Sampling: new tokens per second of
`plus.generate` (the plain loop, the static cache, and on CUDA the CUDA graph) and of
`transformers`' `generate`, greedy, from left-padded prompts. Each variant runs
`--warmup` untimed steps first; every figure comes from the same run, so their ratios
are what to compare. The results go to stdout as a table and to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from plus.generate import generate
from plus.gpt import GPT, GPTConfig
from plus.sft import target_logprobs
from plus.training import autocast, make_optimizer, peak_flops


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, n: int, warmup: int, device: torch.device) -> float:
    """Median seconds of `step()` over n runs after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plus_model(args, family: str) -> GPT:
    make = GPTConfig.gpt2_style if family == "gpt2" else GPTConfig.llama_style
    return GPT(make(vocab_size=args.vocab, block_size=args.seq + args.new_tokens, n_layer=args.layers,
                    n_head=args.heads, n_embd=args.width))


def hf_model(args, family: str):
    """transformers' model of the same shape, or None when transformers is missing."""
    try:
        import transformers
    except ImportError:
        return None
    if family == "gpt2":
        config = transformers.GPT2Config(vocab_size=args.vocab, n_positions=args.seq + args.new_tokens,
                                         bos_token_id=0, eos_token_id=args.vocab - 1,
                                         n_embd=args.width, n_layer=args.layers, n_head=args.heads)
        return transformers.GPT2LMHeadModel(config)
    config = transformers.Qwen2Config(vocab_size=args.vocab, hidden_size=args.width, num_hidden_layers=args.layers,
                                      num_attention_heads=args.heads, num_key_value_heads=args.heads,
                                      intermediate_size=-(-8 * args.width // 3 // 32) * 32,
                                      max_position_embeddings=args.seq + args.new_tokens, tie_word_embeddings=True)
    return transformers.Qwen2ForCausalLM(config)


def train_step(model, optimizer, ids, device, dtype: str, hf: bool):
    def step():
        with autocast(device, dtype):
            if hf:
                loss = model(input_ids=ids, labels=ids).loss
            else:
                hidden = model(ids)[:, :-1]
                loss = -target_logprobs(hidden, model.lm_head.weight, ids[:, 1:]).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def bench_training(args, device, peak) -> list[dict]:
    rows = []
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    tokens = args.batch * args.seq
    for family in ("gpt2", "llama"):
        plus = plus_model(args, family).to(device)
        variants = [("plus", plus, False)]
        hf = hf_model(args, family)
        if hf is not None:
            variants.append(("transformers", hf.to(device).train(), True))
        for name, model, is_hf in variants:
            if args.compile:
                model = torch.compile(model)
            optimizer = make_optimizer(model, 1e-4, 0.1)
            seconds = timed(train_step(model, optimizer, ids, device, args.dtype, is_hf), args.steps, args.warmup, device)
            row = {"what": "train", "family": family, "impl": name, "tokens_per_s": tokens / seconds,
                   "step_s": seconds, "params": sum(p.numel() for p in model.parameters())}
            if peak:
                row["mfu"] = plus.estimate_mfu(tokens / seconds, args.seq, peak)
            rows.append(row)
            del model, optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def bench_sampling(args, device) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.seq // 2, args.seq + 1, (args.batch,), generator=gen).tolist()
    ids = torch.zeros(args.batch, args.seq, dtype=torch.long)
    mask = torch.zeros(args.batch, args.seq, dtype=torch.long)
    for i, n in enumerate(lengths):  # left padding
        ids[i, args.seq - n:] = torch.randint(1, args.vocab, (n,), generator=gen)
        mask[i, args.seq - n:] = 1
    ids, mask = ids.to(device), mask.to(device)
    new = args.batch * args.new_tokens
    eos = args.vocab + 1  # never sampled: every row runs the full length
    for family in ("gpt2", "llama"):
        model = plus_model(args, family).to(device).eval()
        modes = [("plus", {}), ("plus static cache", {"static_cache": True})]
        if device.type == "cuda":
            modes.append(("plus CUDA graph", {"cuda_graph": True}))
        for name, flags in modes:
            def step():
                with autocast(device, args.dtype):
                    generate(model, ids, mask, args.new_tokens, eos, 0, temperature=0.0, **flags)
            seconds = timed(step, args.steps, args.warmup, device)
            rows.append({"what": "sample", "family": family, "impl": name, "tokens_per_s": new / seconds})
        hf = hf_model(args, family)
        if hf is not None:
            hf = hf.to(device).eval()

            def hf_step():
                with torch.no_grad(), autocast(device, args.dtype):
                    hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
            seconds = timed(hf_step, args.steps, args.warmup, device)
            rows.append({"what": "sample", "family": family, "impl": "transformers", "tokens_per_s": new / seconds})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seq", type=int, default=1024, help="training sequence length; sampling prompt length")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--new_tokens", type=int, default=48, help="sampled tokens per prompt")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile each model first")
    p.add_argument("--skip", nargs="*", default=[], choices=("train", "sample"))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    peak = peak_flops(device, args.dtype)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {machine}, torch {torch.__version__}, {args.dtype}, {args.layers} layers x {args.width}, "
          f"vocabulary {args.vocab}, batch {args.batch} x {args.seq}")
    rows = []
    if "train" not in args.skip:
        rows += bench_training(args, device, peak)
    if "sample" not in args.skip:
        rows += bench_sampling(args, device)
    print("| what | family | implementation | tokens/s | MFU |")
    print("|---|---|---|---|---|")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(f"| {r['what']} | {r['family']} | {r['impl']} | {r['tokens_per_s']:,.0f} | {mfu} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine, "torch": torch.__version__, "args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
