"""The output head + log-softmax of a training step: fused (kernels/fused_linear.py, the
logits never whole) against plain (the [tokens, vocab] logits, then the log-softmax).

    python -m benchmarks.bench_head                                  # CPU, a few vocabulary sizes
    python -m benchmarks.bench_head --device cuda --tokens 16384 --width 768 --dtype bf16

Each variant runs forward and backward of the summed log-probabilities of random targets;
the two are timed side by side in one run, alternating, so their ratio is what to read.
On CUDA the peak memory of each is reported too. `plus.sft.target_logprobs` picks the
fused op above `plus.sft.FUSED_HEAD_MIN_LOGITS` logit entries.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from kernels import fused_linear_token_logprobs, token_logprobs
from plus.training import autocast


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--tokens", type=int, default=2048, help="target tokens per step")
    p.add_argument("--width", type=int, default=128, help="hidden size")
    p.add_argument("--vocab", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.device}, {args.dtype}, "
          f"{args.tokens} tokens x width {args.width}, threads {torch.get_num_threads()}")
    print("| vocab | fused (ms) | plain (ms) | plain / fused | fused peak (MB) | plain peak (MB) |")
    print("|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for vocab in args.vocab:
        hidden = torch.randn(args.tokens, args.width, generator=gen).to(device).requires_grad_()
        weight = (torch.randn(vocab, args.width, generator=gen) * 0.05).to(device).requires_grad_()
        labels = torch.randint(0, vocab, (args.tokens,), generator=gen).to(device)

        def fused():
            with autocast(device, args.dtype):
                out = fused_linear_token_logprobs(hidden, weight, labels)
            out.sum().backward()

        def plain():
            with autocast(device, args.dtype):
                out = token_logprobs(torch.nn.functional.linear(hidden, weight), labels)
            out.sum().backward()

        times = {"fused": [], "plain": []}
        peaks = {"fused": 0.0, "plain": 0.0}
        for i in range(args.repeats + 1):  # the first round warms up
            for name, step in (("fused", fused), ("plain", plain)):
                hidden.grad = weight.grad = None
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                step()
                if cuda:
                    torch.cuda.synchronize()
                    peaks[name] = torch.cuda.max_memory_allocated() / 2**20
                if i:
                    times[name].append(time.perf_counter() - t0)
        f, q = statistics.median(times["fused"]), statistics.median(times["plain"])
        mem = (f"{peaks['fused']:.0f} | {peaks['plain']:.0f}") if cuda else "- | -"
        print(f"| {vocab:,} | {f * 1e3:.1f} | {q * 1e3:.1f} | {q / f:.2f} | {mem} |")


if __name__ == "__main__":
    main()
